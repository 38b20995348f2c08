"""Scene 2, Long Read: minutes of narration. No underflows, chunk sizes converge, the
cadence is steady after the first minute, memory and CPU stay flat."""

from __future__ import annotations

import time

import numpy as np

from actors.rate_controller import LADDER

from .harness import Scene
from .texts import LONG_READ

#: The size the controller should reach when the engine sustains it (an idle machine does).
CONVERGED_TOKENS = 24


def run(scene: Scene) -> None:
    seconds = 60 if scene.quick else 300
    settle = 20 if scene.quick else 60
    session = scene.start()
    text = " ".join([LONG_READ] * (1 + seconds // 60))
    session.say_in_background(text, rate=30)
    first = session.timeline.wait_for(lambda e: e["stage"] == "present" and e["data"].get("kind") == "speech", 30)
    if first is None:
        scene.check("started speaking", False, "no speech", "speech within 30 s")
        return
    t0 = first["ts_ns"]
    time.sleep(seconds)
    session.barge_in("end of the long read")
    end = t0 + seconds * 10**9
    within = lambda e, after=0: t0 + after * 10**9 <= e["ts_ns"] <= end
    presents = [e for e in scene.of("player", "present", None) if within(e)]
    underflows = [e for e in presents if e["result"] == "underflow"]
    gaps = [e for e in scene.of("stitcher", "stitch", "gap") if within(e, 10)]
    scene.check("no underflow", not underflows, len(underflows), "0")
    scene.check("no gap after the first 10 s", not gaps, len(gaps), "0")

    targets = [e["data"]["target_tokens"] for e in scene.of("tts", "credit") if within(e, settle) and "target_tokens" in e["data"]]
    steps = sorted(set(targets))
    # The controller never grows past what the engine sustains (its EWMA cost per token against
    # the comfort band); on a loaded machine that is less than on an idle one, so the level to
    # reach is the engine's own, as the TTS reports it in its heartbeats.
    sustainable = [e["data"]["controller"]["sustainable"] for e in scene.of("tts", "heartbeat") if within(e, settle)]
    level = min(CONVERGED_TOKENS, int(np.median(sustainable))) if sustainable else CONVERGED_TOKENS
    span = LADDER.index(steps[-1]) - LADDER.index(steps[0]) if steps else 0
    scene.check("chunk sizes converge", bool(targets) and span <= 2 and max(targets) >= level,
                f"controller targets after {settle}s: {steps}; the engine sustains {level}",
                f"<= 3 neighbouring ladder steps, reaching {level} tokens")

    steady = sorted((e for e in presents if within(e, settle)), key=lambda e: e["ts_ns"])
    lateness = np.array([e["data"].get("lateness_ms", 0) for e in steady])
    # Cadence = the instants frames left for the sinks on the player's clock.
    handoffs = np.array([e["data"]["due_ns"] / 1e6 + e["data"]["handoff_ms"] for e in steady])
    intervals = np.diff(handoffs) if len(handoffs) > 1 else np.array([0.0])
    jitter = np.abs(intervals - 1000 / 25)
    # Quick mode runs under CI on a shared 2-core VM whose idle vCPUs wake late (measured:
    # a bare sleep loop with nothing else running shows p99 8.8 ms), so it checks a sanity
    # bound; the full scene holds the tight one.
    jitter_bound = 20 if scene.quick else 10
    scene.check("cadence steady after the first minute" if not scene.quick else f"cadence steady after {settle} s",
                len(lateness) > 0 and np.percentile(lateness, 99) < 20 and np.percentile(jitter, 99) < jitter_bound
                and intervals.max() < 80,
                f"p99 lateness {np.percentile(lateness, 99):.1f} ms, p99 hand-off interval jitter {np.percentile(jitter, 99):.1f} ms, "
                f"longest interval {intervals.max():.1f} ms",
                f"p99 lateness < 20 ms, p99 jitter < {jitter_bound} ms, no interval > 80 ms")

    res = scene.resources
    growth = {name: round(res.rss_growth_mb(name, settle, seconds), 1) for name in res.procs}
    second_half = {name: round(res.rss_slope_mb_per_min(name, after_s=(settle + seconds) / 2), 2) for name in res.procs}
    flat = max(growth.values()) < 30 and (scene.quick or max(second_half.values()) < 3)
    scene.check("memory bounded and flat", flat, {"growth_mb": growth, "slope_second_half_mb_per_min": second_half},
                "< 30 MB after warm-up" + ("" if scene.quick else ", < 3 MB/min over the second half"))
    middle = {n: res.mean_cpu(n, settle, (settle + seconds) / 2) for n in res.procs}
    late = {n: res.mean_cpu(n, (settle + seconds) / 2, seconds) for n in res.procs}
    drift = {n: round(late[n] - middle[n], 1) for n in res.procs}
    scene.check("CPU flat", max(abs(d) for d in drift.values()) < 15, drift, "< 15 percentage points between halves")
    scene.notes.update({"cpu_percent_middle": {k: round(v, 1) for k, v in middle.items()},
                        "frames_presented": len(presents)})
