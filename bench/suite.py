"""Benchmarks. Every figure is printed next to a baseline measured in the same run, on the
same machine, at the same time: this machine is shared and noisy, so ratios are what
we compare, not absolute times."""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np

from actors.dsp import BARGE_FADE_MS
from clients.analysis import summarize, utterance_ttff
from clients.interrupts import interrupt_at_random_points
from clients.session import Session

from .fault_bench import faults, table_rows as fault_rows  # noqa: F401 -- `personas bench faults` runs it from here
from .fuzz_bench import fuzz, table_rows as fuzz_rows  # noqa: F401 -- `personas bench fuzz` runs it from here
from .sessions_bench import sessions, table_rows as sessions_rows  # noqa: F401 -- `personas bench sessions`
from .persona_bench import persona, table_rows as persona_rows  # noqa: F401 -- `personas bench persona` runs it from here
from .peer_bench import peer, table_rows as peer_rows  # noqa: F401 -- `personas bench peer` runs it from here
from .lips_bench import drift, lips, table_rows as lips_rows  # noqa: F401 -- `personas bench lips` / `drift`

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
        from persona.voice import load_voice
        from actors.render import FaceDriver

        self.voice = load_voice(config["voice"]["persona"])
        self.adapter = make_adapter(config["tts"]["adapter"], config)
        self.adapter.load()
        self.adapter.warmup(self.voice)
        self.face = FaceDriver(config)
        self.face.warmup((1,))

    def measure(self, sentence: str) -> float:
        started = time.perf_counter()
        synthesis = self.adapter.synthesize(sentence, self.voice)
        assert len(synthesis.pcm) > 0
        self.face.animator.add_phonemes(synthesis.phonemes)
        self.face.render_frames(np.array([0]), np.array([1000.0]))
        return (time.perf_counter() - started) * 1000


def ttff(config_path: str | None, overrides, runs: int = 10, rate: float = 40.0,
         echo: Callable[[str], None] = print, modes: tuple[str, ...] = ("sentence", "clause")) -> dict:
    """Time to first frame, for each first-fragment rule, alternating in one run."""
    session = Session(config_path, overrides, log="out/bench-supervisor.log")
    echo("starting the system ...")
    session.start()
    samples = {m: {k: [] for k in ("generated", "presented", "generated_from_first_token", "presented_from_first_token",
                                   "generated_from_first_chunk", "floor")} for m in modes}
    first_chunks = {}
    try:
        floor = Floor(session.config)
        for i in range(runs):
            for mode in (modes if i % 2 == 0 else modes[::-1]):  # alternate the order: no mode always goes first
                set_first_fragment(session, mode)
                start = len(session.timeline.events)
                done = session.say_and_wait(TTFF_SCRIPT, rate=rate, seed=i)
                u = utterance_ttff(session.timeline.events[start:], done["utterance_id"], done["epoch"])
                first_chunks[mode] = u["first_chunk"]
                s = samples[mode]
                s["floor"].append(floor.measure(u["first_chunk"]))  # interleaved: same machine state
                for key in ("generated", "presented", "generated_from_first_token", "presented_from_first_token",
                            "generated_from_first_chunk"):
                    s[key].append(u[f"{key}_ms"])
                echo(f"run {i + 1:>2} {mode:<8}: first frame {u['generated_ms']:7.1f} ms after the sentence end "
                     f"({u['generated_from_first_token_ms']:7.1f} after the first token), presented "
                     f"{u['presented_ms']:7.1f} ms; floor {s['floor'][-1]:6.1f} ms for {u['first_chunk']!r}")
    finally:
        session.stop()
    result = {
        "method": ("Feed the script as LLM-like tokens at %g tokens/s, alternating the first-fragment rule "
                   "(controller.first_fragment) between runs of one session. Origins: the arrival "
                   "(CLOCK_MONOTONIC, parser) of the token that ends the first sentence (the specification's TTFF) and of "
                   "the first token. 'generated' = the driver emitting the utterance's first speech frame; "
                   "'presented' = the player presenting it. Floor, measured between pipeline runs: in-process "
                   "synthesis of the same first fragment with the same engine and voice plus one render." % rate),
        "script": TTFF_SCRIPT, "runs": runs, "machine": machine(),
        "target": {"seed_generated_ms": 500, "ours_ratio_generated_to_floor": 1.3},
        "modes": {},
    }
    for mode, s in samples.items():
        med = lambda key: statistics.median(s[key])
        result["modes"][mode] = {
            "first_fragment": first_chunks.get(mode),
            "generated_ms": summarize(s["generated"]), "presented_ms": summarize(s["presented"]),
            "generated_from_first_token_ms": summarize(s["generated_from_first_token"]),
            "presented_from_first_token_ms": summarize(s["presented_from_first_token"]),
            "generated_from_first_chunk_ms": summarize(s["generated_from_first_chunk"]),
            "floor_ms": summarize(s["floor"]),
            "ratio_generated_to_floor": round(med("generated_from_first_chunk") / med("floor"), 3),
        }
    if set(modes) == {"sentence", "clause"}:
        a, b = result["modes"]["sentence"], result["modes"]["clause"]
        result["clause_gain_ms"] = {
            "from_sentence_end": round(a["generated_ms"]["median"] - b["generated_ms"]["median"], 1),
            "from_first_token": round(a["generated_from_first_token_ms"]["median"] - b["generated_from_first_token_ms"]["median"], 1),
        }
    for mode, r in result["modes"].items():
        echo(f"\n{mode:>8}: first frame generated {r['generated_ms']['median']} ms after the first sentence end "
             f"(p95 {r['generated_ms']['p95']}), {r['generated_from_first_token_ms']['median']} ms after the first "
             f"token; presented {r['presented_ms']['median']} ms; floor {r['floor_ms']['median']} ms; "
             f"ratio generated/floor {r['ratio_generated_to_floor']}")
    if "clause_gain_ms" in result:
        echo(f"clause-first gain: {result['clause_gain_ms']}")
    return result


def set_first_fragment(session: Session, mode: str) -> None:
    start = len(session.timeline.events)
    reply = session.control.call("config_set", changes={"controller.first_fragment": mode})
    if not reply or not reply.get("ok"):
        raise RuntimeError(f"config_set failed: {reply}")
    applied = session.timeline.wait_for(
        lambda e: e["actor"] == "parser" and e["stage"] == "config" and e["data"].get("version") == reply["version"],
        timeout=5, start=start)
    if applied is None:
        raise RuntimeError("the parser did not apply the first-fragment rule")


def bargein(config_path: str | None, overrides, points: int = 50, echo: Callable[[str], None] = print) -> dict:
    from actors.dsp import AUDIO_BLOCK_MS  # the player's audio block: the cut's granularity

    session = Session(config_path, overrides, log="out/bench-supervisor.log")
    session.start()
    try:
        records = interrupt_at_random_points(session, points, echo=echo)
    finally:
        session.stop()
    cut = [r["cut_ms"] for r in records]
    frame_aligned = [r["frame_boundary_cut_ms"] for r in records if r["frame_boundary_cut_ms"] is not None]
    boundary = [r["next_frame_boundary_ms"] for r in records if r["next_frame_boundary_ms"] is not None]
    result = {
        "method": ("Speak a long paragraph, wait a random 0.1-2.5 s after speech starts, send a barge-in "
                   "(alternately {type: barge_in} on the ingress and the control endpoint), repeat. 'cut' = from "
                   "sending to the last audible sample of the old epoch on the player's sample clock: the player's "
                   f"audio leaves in {AUDIO_BLOCK_MS} ms blocks and the first block that had not started when it "
                   f"handled the barge-in carries a {BARGE_FADE_MS} ms fade (the end of that fade; on a frame "
                   "boundary, in the next old frame under the held picture; or the end of the last whole old frame "
                   "with sound). Baseline, same barge-ins: the frame-aligned cut, i.e. the first presentation tick "
                   f"due after the player had the barge-in + the {BARGE_FADE_MS} ms fade (what the player did before "
                   "audio blocks); next_frame_boundary = from sending to the next tick."),
        "points": points,
        "block_ms": AUDIO_BLOCK_MS,
        "cut_ms": summarize(cut),
        "frame_boundary_cut_ms": summarize(frame_aligned),
        "next_frame_boundary_ms": summarize(boundary),
        "acknowledged_by_all_ms": summarize([r["acknowledged_ms"] for r in records if r["acknowledged_ms"] is not None]),
        "player_received_ms": summarize([r["player_received_ms"] for r in records if r["player_received_ms"] is not None]),
        "cuts_on_a_boundary": sum(1 for r in records if r["cut"] and r["cut"]["held"]),
        # After the player has the new epoch, only a cut on the frame boundary (held picture) may still be old.
        "old_frames_after_cut": sum(max(0, r["old_frames_after_player_received"] - 1) + (not r["cut_frame_faded"])
                                    for r in records),
        "target_ms": 20,
        "machine": machine(),
    }
    c, f = result["cut_ms"], result["frame_boundary_cut_ms"]
    echo(f"\nbarge-in -> last old audio: median {c['median']} / p95 {c['p95']} / max {c['max']} ms (target max <= 20); "
         f"frame-aligned cut, same barge-ins: {f.get('median')} / {f.get('p95')} / {f.get('max')} ms; "
         f"all actors acknowledged: median {result['acknowledged_by_all_ms']['median']} ms")
    return result


SYNC_SCRIPT = ("Audio is the clock. Every frame is presented when its sound starts playing, whether the machine "
               "is idle or both of its cores are busy with other work. Let us see how late it gets.")


def _burn(stop) -> None:  # pragma: no cover - runs in a child process
    x = 0
    while not stop.is_set():
        x = (x * 1103515245 + 12345) & 0xFFFFFFFF


def sync(config_path: str | None, overrides, echo: Callable[[str], None] = print) -> dict:
    """A/V skew in the recording, and the player's presentation lateness against the audio
    clock, idle and with both cores loaded by other processes; the baseline is the same
    script with the player at normal scheduling priority (same run)."""
    from .media_check import av_skew

    result = {"method": ("Speak the same script twice per session: once on an otherwise idle machine, once with "
                         "two busy-looping processes (one per core). Lateness = presentation time - due time on the "
                         "player's audio clock, per presented frame. Two sessions in one run: the configured player "
                         "(SCHED_FIFO where permitted) and a baseline player at normal priority "
                         "(player.realtime_priority=0, player.niceness=0). A/V skew read back from the first "
                         "session's MP4: audio and video stream start and duration."), "machine": machine()}
    out = Path("out/bench-sync.mp4")
    result.update(_lateness_idle_and_loaded(Session(config_path, overrides, record=str(out), log="out/bench-supervisor.log"),
                                            "configured", echo))
    normal = [*overrides, "player.realtime_priority=0", "player.niceness=0"]
    result["normal_priority"] = _lateness_idle_and_loaded(Session(config_path, normal, log="out/bench-supervisor.log"),
                                                          "normal priority", echo)
    result["recording"] = av_skew(out)
    echo(f"recording: audio/video start skew {result['recording']['start_skew_ms']} ms, "
         f"duration difference {result['recording']['duration_difference_ms']} ms")
    return result


def _lateness_idle_and_loaded(session: Session, name: str, echo: Callable[[str], None]) -> dict:
    import multiprocessing

    result: dict = {}
    session.start()
    try:
        ready = next((e for e in session.timeline.events if e["actor"] == "player" and e["stage"] == "ready"), None)
        result["scheduling"] = ready["data"].get("scheduling") if ready else None
        for label in ("idle", "loaded"):
            stop = multiprocessing.Event()
            hogs = [multiprocessing.Process(target=_burn, args=(stop,), daemon=True)
                    for _ in range(2 if label == "loaded" else 0)]
            for h in hogs:
                h.start()
            start = len(session.timeline.events)
            session.say_and_wait(SYNC_SCRIPT, rate=40)
            stop.set()
            for h in hogs:
                h.join(5)
            late = [e["data"]["lateness_ms"] for e in session.timeline.events[start:]
                    if e["actor"] == "player" and e["stage"] == "present"]
            underflows = sum(1 for e in session.timeline.events[start:] if e["stage"] == "present" and e["result"] == "underflow")
            result[label] = {"lateness_ms": _percentiles(late), "underflows": underflows, "frames": len(late)}
            echo(f"{name:>15} {label:>6}: presentation lateness p50 {result[label]['lateness_ms']['p50']} ms, p99 "
                 f"{result[label]['lateness_ms']['p99']} ms, max {result[label]['lateness_ms']['max']} ms, "
                 f"underflows {underflows}")
    finally:
        session.stop()
    return result


def _percentiles(values: list[float]) -> dict:
    a = np.array(values or [0.0])
    return {"p50": round(float(np.percentile(a, 50)), 2), "p99": round(float(np.percentile(a, 99)), 2),
            "max": round(float(a.max()), 2), "n": len(values)}


#: Frame sizes `bench sustained` compares in one run: the default and the previous one.
SUSTAINED_SIDES = (256, 512)


def sustained(config_path: str | None, overrides, seconds: int = 300, idle_seconds: int = 20,
              echo: Callable[[str], None] = print, sides: tuple[int, ...] = SUSTAINED_SIDES) -> dict:
    """25 fps for minutes at each frame size of ``sides`` (one session each, one after the
    other, same machine, same run): CPU cores used per actor, underflows, render-size drops,
    RSS slope; the baseline is the same system idle (face alive, nothing said). The top-level
    figures are the last size's (512x512, the default); ``by_size`` holds each."""
    by_size = {}
    for side in sides:
        echo(f"sustained at {side}x{side}")
        by_size[f"{side}x{side}"] = _sustained_at(config_path, [*overrides, f"media.width={side}", f"media.height={side}"],
                                                  seconds, idle_seconds, echo)
    last = by_size[f"{sides[-1]}x{sides[-1]}"]
    return {**last, "by_size": by_size,
            "method": last["method"] + f" Run once per frame size ({', '.join(by_size)}), one session after the other."}


def _sustained_at(config_path: str | None, overrides, seconds: int, idle_seconds: int,
                  echo: Callable[[str], None]) -> dict:
    from clients.resources import ResourceSampler
    from scenes.texts import LONG_READ

    session = Session(config_path, overrides, log="out/bench-supervisor.log")
    session.start()
    try:
        sampler = ResourceSampler(session)
        time.sleep(idle_seconds)
        session.say_in_background(" ".join([LONG_READ] * (1 + seconds // 60)), rate=30)
        first = session.timeline.wait_for(lambda e: e["stage"] == "present" and e["data"].get("kind") == "speech", 30)
        t_speech = first["ts_ns"] / 1e9 - sampler.t0  # on the sampler's time axis
        time.sleep(seconds)
        sampler.stop()
        events = list(session.timeline.events)
        session.control.call("barge_in", reason="end of benchmark")
    finally:
        session.stop()
    names = list(sampler.procs)
    cores = lambda a, b: round(sum(sampler.mean_cpu(n, a, b) for n in names) / 100, 3)
    end_ns = first["ts_ns"] + seconds * 10**9
    presents = [e for e in events if e["actor"] == "player" and e["stage"] == "present" and first["ts_ns"] <= e["ts_ns"] <= end_ns]
    span_s = (presents[-1]["ts_ns"] - presents[0]["ts_ns"]) / 1e9 if len(presents) > 1 else 0
    renders = [e for e in events if e["actor"] == "driver" and e["stage"] == "render" and e["ts_ns"] >= first["ts_ns"]]
    degrades = [e for e in events if e["actor"] == "driver" and e["stage"] == "degrade"]
    ready = next((e for e in events if e["actor"] == "driver" and e["stage"] == "ready"), None)
    result = {
        "method": (f"{idle_seconds} s idle (the baseline: face alive, nothing said), then {seconds} s of narration fed at "
                   "30 tokens/s. CPU = sum over the supervisor and the five actors of psutil cpu_percent, sampled "
                   "every second, in cores; RSS slope = least-squares fit over the narration after its first minute."),
        "seconds": seconds, "size": overrides[-2:], "idle_cores": cores(1, idle_seconds),
        "speaking_cores": cores(t_speech + 5, t_speech + seconds),
        "per_actor_speaking_percent": {n: round(sampler.mean_cpu(n, t_speech + 5, t_speech + seconds), 1) for n in names},
        "per_actor_idle_percent": {n: round(sampler.mean_cpu(n, 1, idle_seconds), 1) for n in names},
        "fps": round((len(presents) - 1) / span_s, 3) if span_s else None,
        "underflows": sum(1 for e in presents if e["result"] == "underflow"),
        "gaps": sum(1 for e in events if e["stage"] == "stitch" and e["result"] == "gap" and e["ts_ns"] >= first["ts_ns"] + 10e9),
        "render_ms_per_frame": _percentiles([e["duration_ms"] / max(e["data"]["frames"], 1) for e in renders
                                             if e.get("duration_ms") is not None]),
        "render_size": ((ready or {}).get("data", {}).get("renderer") or {}).get("render_size"),
        "degrades": [{"frame": e["frame"], "level": e["data"]["level"], "to": e["data"]["to"], "why": e["data"]["why"]}
                     for e in degrades],
        "rss_slope_mb_per_min": {n: round(sampler.rss_slope_mb_per_min(n, after_s=t_speech + min(60, seconds / 3)), 2)
                                 for n in names},
        "rss_mb_end": {n: round(sampler.samples[-1][n][0], 1) for n in names if n in sampler.samples[-1]},
        "machine": machine(),
    }
    echo(f"sustained {seconds} s: {result['fps']} fps presented, {result['speaking_cores']} cores speaking vs "
         f"{result['idle_cores']} idle, per actor {result['per_actor_speaking_percent']} %, underflows "
         f"{result['underflows']}, gaps {result['gaps']}, render {result['render_ms_per_frame']} ms/frame at "
         f"{result['render_size']}, degrades {len(result['degrades'])}, RSS slope {result['rss_slope_mb_per_min']}")
    return result


def hop(frames: int = 400, echo: Callable[[str], None] = print) -> dict:
    """The cost of moving one 256x256 RGB frame (in an AVPacket) from one process to another
    over ZeroMQ, against a plain memory copy of the same bytes in the same run."""
    import multiprocessing

    from .media_check import free_endpoints, hop_receiver, hop_round_trips

    result = {"method": ("A child process echoes AVPackets (256x256x3 pixels + 882 samples) back over a PUSH/PULL pair; "
                         "one hop = half the round trip, including msgpack header encode/decode and our validation. "
                         "Baseline: numpy copy of the same 196,608 bytes, median of the same number of repetitions."),
              "machine": machine()}
    for transport in ("tcp", "ipc"):
        ctx = multiprocessing.get_context("spawn")
        ready = ctx.Event()
        port = free_endpoints(transport)
        child = ctx.Process(target=hop_receiver, args=(port, ready), daemon=True)
        child.start()
        ready.wait(20)
        times = hop_round_trips(port, frames)
        child.terminate()
        child.join(5)
        result[transport] = {"hop_us": round(float(np.median(times)) / 2, 1), "hop_p99_us": round(float(np.percentile(times, 99)) / 2, 1)}
    pixels = np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    target = np.empty_like(pixels)
    copies = []
    for _ in range(frames):
        t = time.perf_counter_ns()
        np.copyto(target, pixels)
        copies.append((time.perf_counter_ns() - t) / 1000)
    result["memcpy_us"] = round(float(np.median(copies)), 1)
    result["ratio_tcp_to_memcpy"] = round(result["tcp"]["hop_us"] / max(result["memcpy_us"], 0.01), 1)
    result["share_of_frame_budget"] = round(result["tcp"]["hop_us"] / 40_000, 4)
    echo(f"hop: tcp {result['tcp']['hop_us']} us, ipc {result['ipc']['hop_us']} us per frame; memcpy {result['memcpy_us']} us "
         f"({result['ratio_tcp_to_memcpy']}x); {result['share_of_frame_budget'] * 100:.2f} % of a 40 ms frame")
    return result


def baseline(config_path: str | None, overrides, rate: float = 40.0, echo: Callable[[str], None] = print) -> dict:
    """The naive pipeline (wait for the whole LLM text, synthesise it all, render every frame)
    against Personas streaming the same script at the same token rate, in the same run."""
    from actors.adapters import make_adapter
    from persona.voice import load_voice
    from actors.render import FaceDriver, frame_rms

    from protocol import tokenize_like_llm
    from scenes.texts import STORY

    config = Session(config_path, overrides).config
    tokens = tokenize_like_llm(STORY, 1)
    arrival_s = len(tokens) / rate
    adapter = make_adapter(config["tts"]["adapter"], config)
    adapter.load()
    voice = load_voice(config["voice"]["persona"])
    adapter.warmup(voice)
    face = FaceDriver(config)
    face.warmup((1, 8))
    started = time.perf_counter()
    synthesis = adapter.synthesize(STORY, voice)
    synth_s = time.perf_counter() - started
    face.animator.add_phonemes(synthesis.phonemes)
    sr, fps = face.sample_rate, face.fps
    n = len(synthesis.pcm) * fps // sr
    started = time.perf_counter()
    for first in range(0, n, 8):
        frames = np.arange(first, min(first + 8, n))
        rms = np.array([frame_rms(synthesis.pcm, f * sr // fps, (f + 1) * sr // fps) for f in frames])
        face.render_frames(frames, rms)
    render_s = time.perf_counter() - started
    naive_first_frame_ms = (arrival_s + synth_s + render_s) * 1000

    session = Session(config_path, overrides, log="out/bench-supervisor.log")
    session.start()
    try:
        start = len(session.timeline.events)
        done = session.say_and_wait(STORY, rate=rate, seed=1)
        u = utterance_ttff(session.timeline.events[start:], done["utterance_id"], done["epoch"])
    finally:
        session.stop()
    result = {
        "method": (f"The same script ({len(tokens)} tokens at {rate:g} tokens/s, {len(synthesis.pcm) / sr:.1f} s of speech). "
                   "Naive: wait for the last token, synthesise everything in one call, render every frame, then show the "
                   "first. Personas: the live system, first token -> first frame presented."),
        "naive_first_frame_ms": round(naive_first_frame_ms, 1),
        "naive_parts_ms": {"text_arrival": round(arrival_s * 1000, 1), "synthesis": round(synth_s * 1000, 1),
                           "render_all": round(render_s * 1000, 1)},
        "personas_first_frame_ms": u["presented_from_first_token_ms"],
        "speedup": round(naive_first_frame_ms / u["presented_from_first_token_ms"], 1),
        "machine": machine(),
    }
    echo(f"first frame: naive {result['naive_first_frame_ms']} ms ({result['naive_parts_ms']}), Personas "
         f"{result['personas_first_frame_ms']} ms: {result['speedup']}x sooner")
    return result


def markdown_table(results: dict) -> str:
    """The README's performance table, generated from out/bench.json."""
    rows = ["| figure | result | same-run baseline | ratio / verdict |", "|---|---|---|---|"]
    if "ttff" in results:
        t = results["ttff"]["modes"]
        s, c = t.get("sentence", {}), t.get("clause", {})
        if s:
            rows.append(f"| TTFF, sentence rule: first frame generated after the first sentence-ending token "
                        f"(the specification's definition), median / p95 | {s['generated_ms']['median']} / {s['generated_ms']['p95']} ms "
                        f"| floor {s['floor_ms']['median']} ms (Piper on the same sentence + one render) "
                        f"| {s['ratio_generated_to_floor']} x floor (target <= 1.3; spec <= 500 ms) |")
            rows.append(f"| TTFF, sentence rule: first frame presented | {s['presented_ms']['median']} / "
                        f"{s['presented_ms']['p95']} ms | floor {s['floor_ms']['median']} ms | - |")
        if c and s:
            rows.append(f"| TTFF, clause-first (default): from the first sentence-ending token | "
                        f"{c['generated_ms']['median']} / {c['generated_ms']['p95']} ms (before the sentence has arrived) "
                        f"| sentence rule {s['generated_ms']['median']} ms | {results['ttff']['clause_gain_ms']['from_sentence_end']} ms sooner |")
            rows.append(f"| TTFF, clause-first: from the first token of the turn (presented) | "
                        f"{c['presented_from_first_token_ms']['median']} / {c['presented_from_first_token_ms']['p95']} ms "
                        f"| sentence rule {s['presented_from_first_token_ms']['median']} ms "
                        f"| {results['ttff']['clause_gain_ms']['from_first_token']} ms sooner |")
            rows.append(f"| TTFF, clause-first: from the fragment's closing comma | {c['generated_from_first_chunk_ms']['median']} ms "
                        f"| floor {c['floor_ms']['median']} ms (Piper on the fragment + one render) | {c['ratio_generated_to_floor']} x floor |")
    if "bargein" in results:
        b = results["bargein"]
        f = b.get("frame_boundary_cut_ms") or {}
        rows.append(f"| Barge-in -> last audible old sample ({b.get('block_ms', '-')} ms audio blocks + fade), median / p95 / max "
                    f"({b['points']} points) | {b['cut_ms']['median']} / {b['cut_ms']['p95']} / {b['cut_ms']['max']} ms "
                    f"| frame-aligned cut {f.get('median')} / {f.get('p95')} / {f.get('max')} ms "
                    f"| target max <= {b.get('target_ms', 20)} ms: {'met' if b['cut_ms']['max'] <= b.get('target_ms', 20) else 'missed'} |")
        rows.append(f"| Barge-in -> the player has it / every actor acknowledged, median / p95 | "
                    f"{b['player_received_ms']['median']} / {b['player_received_ms']['p95']} ms; "
                    f"{b['acknowledged_by_all_ms']['median']} / {b['acknowledged_by_all_ms']['p95']} ms | - | - |")
    if "sync" in results:
        y = results["sync"]
        lat = lambda r: f"{r['lateness_ms']['p50']} / {r['lateness_ms']['p99']} / {r['lateness_ms']['max']} ms"
        base = y.get("normal_priority")
        policy = (y.get("scheduling") or {}).get("policy", "other")
        rows.append(f"| Presentation lateness vs the audio clock (player {policy}), p50 / p99 / max | idle {lat(y['idle'])}; "
                    f"both cores loaded {lat(y['loaded'])} | "
                    + (f"player at normal priority: idle {lat(base['idle'])}; loaded {lat(base['loaded'])} | "
                       f"loaded p99 {round(base['loaded']['lateness_ms']['p99'] / max(y['loaded']['lateness_ms']['p99'], 0.01), 1)} x lower; "
                       if base else "idle run | ")
                    + f"underflows idle {y['idle']['underflows']}, loaded {y['loaded']['underflows']} |")
        rows.append(f"| A/V skew in the recording | start {y['recording']['start_skew_ms']} ms, duration "
                    f"{y['recording']['duration_difference_ms']} ms | one frame = 40 ms | by construction (one packet per tick) |")
    if "sustained" in results:
        u = results["sustained"]
        for size, r in (u.get("by_size") or {"": u}).items():
            drops = len(r.get("degrades", []))
            rows.append(f"| Sustained narration, {r['seconds']} s at 25 fps{', ' + size if size else ''} | {r['fps']} fps, "
                        f"{r['speaking_cores']} cores (driver {r['per_actor_speaking_percent'].get('driver')} %, player "
                        f"{r['per_actor_speaking_percent'].get('player')} %), {r['underflows']} underflows, {r['gaps']} gaps"
                        f"{f', {drops} render-size drops' if drops else ''} | idle {r['idle_cores']} cores | RSS slope "
                        f"max {max(r['rss_slope_mb_per_min'].values())} MB/min |")
    if "hop" in results:
        h = results["hop"]
        rows.append(f"| One frame between two processes (256x256 RGB + audio) | tcp {h['tcp']['hop_us']} us, ipc "
                    f"{h['ipc']['hop_us']} us | memcpy {h['memcpy_us']} us | {h['ratio_tcp_to_memcpy']}x memcpy = "
                    f"{h['share_of_frame_budget'] * 100:.2f} % of a frame |")
    if "baseline" in results:
        n = results["baseline"]
        rows.append(f"| First frame, naive (wait for all text, synthesise all, render all) vs Personas | Personas "
                    f"{n['personas_first_frame_ms']} ms | naive {n['naive_first_frame_ms']} ms | {n['speedup']}x sooner |")
    if "persona" in results:
        rows += persona_rows(results["persona"])
    if "faults" in results:
        rows += fault_rows(results["faults"])
    if "fuzz" in results:
        rows += fuzz_rows(results["fuzz"])
    if "sessions" in results:
        rows += sessions_rows(results["sessions"])
    if "peer" in results:
        rows += peer_rows(results["peer"])
    rows += lips_rows(results.get("lips"), results.get("drift"))
    return "\n".join(rows)
