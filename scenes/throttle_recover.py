"""Scene 5, Throttle & Recover: the engine slows down in proportion to its work (as a
busy GPU would). The controller shrinks chunks while the buffer drains, expands them when
the pressure is released, and the listener hears no hiccup (no underflow)."""

from __future__ import annotations

import time

from .harness import Scene
from .texts import LONG_READ


def run(scene: Scene) -> None:
    calm, pressure, after = (10, 12, 14) if scene.quick else (20, 30, 30)
    # No fallback: the controller alone has to absorb the slowdown.
    session = scene.start({"tts": {"fallback": ""}})
    session.say_in_background(" ".join([LONG_READ] * 3), rate=30)
    first = session.timeline.wait_for(lambda e: e["stage"] == "present" and e["data"].get("kind") == "speech", 30)
    t0 = first["ts_ns"]
    time.sleep(calm)
    slow_at = time.monotonic_ns()
    session.control.call("config_set", changes={"fault.adapter": "piper", "fault.kind": "slowdown", "fault.ms": 850})
    time.sleep(pressure)
    released_at = time.monotonic_ns()
    session.control.call("config_set", changes={"fault.kind": "none"})
    time.sleep(after)
    end = time.monotonic_ns()
    session.control.call("barge_in", reason="end of the scene")
    time.sleep(0.3)

    wishes = [(e["ts_ns"], e["data"]["target_tokens"], e["data"].get("low_latency"))
              for e in scene.of("tts", "credit") if "target_tokens" in e["data"] and e["ts_ns"] >= t0]
    before = [w for ts, w, _ in wishes if ts < slow_at]
    during = [w for ts, w, _ in wishes if slow_at <= ts < released_at]
    recovered = [w for ts, w, _ in wishes if ts >= released_at + 3e9]
    rtf = [e["data"]["rtf"] for e in scene.of("tts", "synth") if slow_at <= e["ts_ns"] < released_at and e["data"]["rtf"]]
    scene.notes.update({"target_before": before[-5:], "target_during": during, "target_after": recovered[-5:],
                        "rtf_during": rtf})
    scene.check("the controller shrinks chunks under pressure", bool(before and during) and min(during) < max(before),
                f"{max(before) if before else None} -> {min(during) if during else None} tokens", "smaller while slowed")
    scene.check("low latency requested while the buffer drains",
                any(low for ts, _, low in wishes if slow_at <= ts < released_at), "", "a low-latency wish during the slowdown")
    scene.check("the controller expands again after release", bool(during and recovered) and max(recovered) > min(during),
                f"{min(during) if during else None} -> {max(recovered) if recovered else None} tokens", "larger again")
    underflows = [e for e in scene.of("player", "present", "underflow") if t0 <= e["ts_ns"] <= end]
    scene.check("no audible hiccup", not underflows, len(underflows), "0 underflows")
    gaps = [e for e in scene.of("stitcher", "stitch", "gap") if t0 + 5e9 <= e["ts_ns"] <= end]
    scene.notes["gaps"] = len(gaps)
