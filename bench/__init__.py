"""Benchmarks (`personas bench ...`): every figure next to a baseline measured in the same run.

``suite`` holds the benchmarks and the README table; ``media_check`` reads a recording's
A/V timing and times one frame's hop between processes.
"""
