"""Scene 5, Throttle & Recover: the engine slows down in proportion to its work (as a
busy GPU would). The controller shrinks chunks while the buffer drains, expands them when
the pressure is released, and the listener hears no hiccup (no underflow)."""

from __future__ import annotations

import time

from .harness import Scene
from .texts import LONG_READ


def run(scene: Scene) -> None:
    calm, after = (10, 14) if scene.quick else (20, 30)
    # No fallback: the controller alone has to absorb the slowdown. The largest sustainable chunk
    # is one whose synthesis fits in half the band's low edge; at the default edge a loaded 2-core
    # machine's Piper already sits on the smallest step, with nothing left to shrink or regrow.
    session = scene.start({"tts": {"fallback": ""}, "controller": {"comfort_low_ms": 2500}})
    session.say_in_background(" ".join([LONG_READ] * 3), rate=30)
    first = session.timeline.wait_for(lambda e: e["stage"] == "present" and e["data"].get("kind") == "speech", 30)
    t0 = first["ts_ns"]
    time.sleep(calm)
    slow_at = time.monotonic_ns()
    start = len(scene.events)
    # 1.2 s of extra work per second of audio: the engine falls a little behind real time and
    # the buffer drains slowly, as under a real load. Held until the controller halves a request
    # (it sees the slower synthesis and halves while the buffer still covers the chunk under way).
    session.control.call("config_set", changes={"fault.adapter": "piper", "fault.kind": "slowdown", "fault.ms": 1200})
    pressed = session.timeline.wait_for(lambda e: e["actor"] == "tts" and e["stage"] == "credit"
                                        and "halve" in e["data"].get("reason", ""), 60, start)
    released_at = time.monotonic_ns()
    session.control.call("config_set", changes={"fault.kind": "none"})
    time.sleep(after)
    end = time.monotonic_ns()
    session.barge_in("end of the scene")
    scene.notes["pressure_s"] = round((released_at - slow_at) / 1e9, 1)
    scene.notes["buffer_low_after_s"] = round((pressed["ts_ns"] - slow_at) / 1e9, 1) if pressed else None

    wishes = [(e["ts_ns"], e["data"]["target_tokens"], e["data"].get("low_latency"))  # requests, not hint refreshes
              for e in scene.of("tts", "credit") if "target_tokens" in e["data"] and e["ts_ns"] >= t0
              and e["data"].get("reason") != "refresh"]
    before = [w for ts, w, _ in wishes if ts < slow_at]
    during = [w for ts, w, _ in wishes if slow_at <= ts < released_at]
    recovered = [w for ts, w, _ in wishes if ts >= released_at + 3e9]
    rtf = [e["data"]["rtf"] for e in scene.of("tts", "synth") if slow_at <= e["ts_ns"] < released_at and e["data"]["rtf"]]
    scene.notes.update({"target_before": before[-5:], "target_during": during, "target_after": recovered[-5:],
                        "rtf_during": rtf})
    # Smaller chunks come from the slower cost per token (the sustainable size) or from a halving,
    # whichever the controller reaches first: either way requests during the slowdown shrink.
    shrank = bool(before and during) and min(during) < before[-1]
    scene.check("the controller shrinks chunks under pressure", shrank,
                f"{before[-1]} -> {min(during)} tokens" if shrank else f"before: {before[-3:]}, during: {during}",
                "a smaller request while slowed")
    scene.check("low latency requested while the buffer drains",
                any(low for ts, _, low in wishes if slow_at <= ts <= released_at),
                f"after {scene.notes['buffer_low_after_s']} s of slowdown", "a low-latency request during the slowdown")
    scene.check("the controller expands again after release", bool(during and recovered) and max(recovered) > min(during),
                f"{min(during) if during else None} -> {max(recovered) if recovered else None} tokens", "larger again")
    underflows = [e for e in scene.of("player", "present", "underflow") if t0 <= e["ts_ns"] <= end]
    scene.check("no audible hiccup", not underflows, len(underflows), "0 underflows")
    # A gap is the stitcher inserting silence mid-utterance because the next chunk was late
    # (keep_lead): an audible pause even when the player never underflows. The controller's job is
    # to react while the buffer still holds >= comfort_low_ms of audio, long before it runs dry, so
    # the whole slowdown and recovery must pass without one. (Counted, as before, from 5 s after the
    # first speech frame to the end of the recovery window.)
    gaps = [e for e in scene.of("stitcher", "stitch", "gap") if t0 + 5e9 <= e["ts_ns"] <= end]
    scene.notes["gaps"] = len(gaps)
    scene.check("no gap mid-utterance", not gaps,
                {"gaps": len(gaps), "first": [{"frame": e["frame"], "at_s": round((e["ts_ns"] - t0) / 1e9, 1)}
                                              for e in gaps[:5]]} if gaps else 0,
                "0 stitcher gaps from 5 s in to the end of the recovery")
