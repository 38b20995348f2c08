"""Scenes: behavioural probes that assert the shape of a whole session (seed 001).

The seven scenes (Breathing Room, Long Read, Mid-Stream Swap, Barge-In, Throttle & Recover,
Persona Script, Cold Start) and `personas scenes run` are tracked by the "truthful surface"
issue; until they land, the end-to-end tests under tests/e2e/ are the behavioural gates.
"""
