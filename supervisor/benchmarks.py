"""Benchmarks. Every figure is printed next to a baseline measured in the same run, on the
same machine, at the same time: this machine is shared and noisy, so ratios are what
we compare, not absolute times."""

from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Callable

import numpy as np

from .client import summarize, ttff_by_chunk
from .session import Session

TTFF_SCRIPT = ("Hello there, it is good to see you again. I have a few things to tell you about today, "
               "and the first one is short.")


def machine() -> dict:
    import torch

    return {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "torch": torch.__version__, "processor": platform.processor() or platform.machine()}


class Floor:
    """The least any pipeline must spend before its first frame: synthesise the first
    sentence with the same engine and settings, then render one frame."""

    def __init__(self, config: dict):
        from actors.adapters import make_adapter
        from actors.render import FaceDriver

        self.adapter = make_adapter(config["voice"]["engine"], config)
        self.adapter.load()
        self.adapter.warmup()
        self.face = FaceDriver(config)
        self.face.warmup((1,))

    def measure(self, sentence: str) -> float:
        started = time.perf_counter()
        synthesis = self.adapter.synthesize(sentence)
        assert len(synthesis.pcm) > 0
        self.face.animator.add_phonemes(synthesis.phonemes)
        self.face.render_frames(np.array([0]), np.array([1000.0]))
        return (time.perf_counter() - started) * 1000


def ttff(config_path: str | None, overrides, runs: int = 10, rate: float = 40.0,
         echo: Callable[[str], None] = print) -> dict:
    """Time to first frame from the arrival of the first sentence-ending token."""
    session = Session(config_path, overrides, log="out/bench-supervisor.log")
    echo(f"starting the system ({len(session.config['endpoints'])} endpoints) ...")
    session.start()
    try:
        floor = Floor(session.config)
        generated, presented, floors = [], [], []
        sentence = None
        for i in range(runs):
            start = len(session.timeline.events)
            done = session.say_and_wait(TTFF_SCRIPT, rate=rate, seed=i)
            rows = [r for r in ttff_by_chunk(session.timeline.events[start:]) if r["utterance_id"] == done["utterance_id"]
                    and r["epoch"] == done["epoch"]]
            first = rows[0]
            sentence = first["text"]
            floors.append(floor.measure(sentence))  # interleaved with the runs: same machine state
            generated.append(first["generated_ms"])
            presented.append(first["presented_ms"])
            echo(f"run {i + 1:>2}: generated {first['generated_ms']:7.1f} ms   presented {first['presented_ms']:7.1f} ms   "
                 f"floor {floors[-1]:7.1f} ms")
    finally:
        session.stop()
    result = {
        "method": ("Feed the script as LLM-like tokens at %g tokens/s; origin = arrival (CLOCK_MONOTONIC, parser) "
                   "of the token that closed the first sentence; 'generated' = the driver emitting that sentence's "
                   "first frame (seed 000's TTFF), 'presented' = the player presenting it. Floor, measured in the "
                   "same run between pipeline runs: in-process Piper synthesis of the same sentence with the same "
                   "settings plus one render of one frame." % rate),
        "first_sentence": sentence,
        "runs": runs,
        "generated_ms": summarize(generated),
        "presented_ms": summarize(presented),
        "floor_ms": summarize(floors),
        "ratio_generated_to_floor": round(statistics.median(generated) / statistics.median(floors), 3),
        "ratio_presented_to_floor": round(statistics.median(presented) / statistics.median(floors), 3),
        "target": {"seed_generated_ms": 500, "ours_ratio_generated_to_floor": 1.3},
        "machine": machine(),
    }
    echo(f"\nTTFF generated: median {result['generated_ms']['median']} ms, p95 {result['generated_ms']['p95']} ms | "
         f"presented: median {result['presented_ms']['median']} ms, p95 {result['presented_ms']['p95']} ms | "
         f"floor: median {result['floor_ms']['median']} ms")
    echo(f"ratio generated/floor {result['ratio_generated_to_floor']} (target <= 1.3), "
         f"presented/floor {result['ratio_presented_to_floor']}")
    return result
