"""Scene 4, Barge-In: interrupt again and again at random points. Hard stop at a frame
boundary, the buffer flushed, a fast re-seed, and nothing stale ever reaches the sink."""

from __future__ import annotations

import numpy as np

from supervisor.benchmarks import interrupt_at_random_points
from supervisor.client import utterance_ttff

from .harness import Scene


def run(scene: Scene) -> None:
    session = scene.start()
    points = 5 if scene.quick else 20
    records = interrupt_at_random_points(session, points, seed=4, echo=lambda _m: None)
    start = len(scene.events)
    done = session.say_and_wait("Right, let me start again from the beginning.")
    cuts = [r["cut_ms"] for r in records]
    at_boundary = [r for r in records if r["cut_ms"] <= (r["next_frame_boundary_ms"] or 0) + 41]
    scene.notes.update({"cut_ms": cuts, "next_frame_boundary_ms": [r["next_frame_boundary_ms"] for r in records]})
    scene.check("hard stop at a frame boundary", len(at_boundary) == len(records) and max(cuts) < 60,
                f"max cut {max(cuts)} ms", "the next frame boundary (at most one more frame), < 60 ms")
    flushes = {e["epoch"] for e in scene.of("player", "flush")}
    scene.check("buffer flushed every time", all(r["new_epoch"] in flushes for r in records), len(flushes), f"{points}")
    epochs = [p.epoch for p in scene.capture.packets]
    stale = sum(1 for a, b in zip(epochs, epochs[1:]) if b < a)
    scene.check("no stale output", stale == 0, stale, "no packet of an older epoch after a newer one")
    reseed = utterance_ttff(scene.events[start:], done["utterance_id"], done["epoch"])
    scene.check("fast re-seed", reseed.get("presented_from_first_token_ms") is not None
                and reseed["presented_from_first_token_ms"] < 800, reseed.get("presented_from_first_token_ms"),
                "< 800 ms from the first new token to the first new frame")
    under = [e for e in scene.of("player", "present", "underflow") if e["epoch"] == done["epoch"]]
    scene.check("the next utterance plays normally", not under and bool(np.mean(cuts) >= 0), len(under), "0 underflows")
