"""Scenes: behavioural probes that assert the shape of a whole session.

The eight scenes (Breathing Room, Long Read, Mid-Stream Swap, Barge-In, Throttle & Recover,
Persona Script, Cold Start, Fault) each drive a real system and record checks of shapes (no
underflow, converging sizes, flat memory), not single magic numbers. `personas scenes run`
runs them; `make test` runs each in quick mode (tests/e2e/test_scenes.py).
"""
