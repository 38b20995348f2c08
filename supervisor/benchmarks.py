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

from .client import summarize, utterance_ttff
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
        from actors.adapters import load_voice, make_adapter
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
                   "(CLOCK_MONOTONIC, parser) of the token that ends the first sentence (seed 000's TTFF) and of "
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


BARGE_SCRIPT = ("Let me tell you a long story about the lighthouse keeper who lived on a small island, "
                "far away from the busy harbour town. Every evening he climbed the narrow stairs, lit the great "
                "lamp, and watched the ships pass safely through the dark water until morning came again.")


def interrupt_at_random_points(session: Session, points: int, seed: int = 0,
                               echo: Callable[[str], None] = print) -> list[dict]:
    """Start speaking, interrupt at a random moment (ingress or control, alternately), repeat.
    Per point: when it was sent, the next presentation tick after it (the floor for a
    frame-aligned cut) and the last presentation of old-epoch audio."""
    import random

    rng = random.Random(seed)
    records = []
    for i in range(points):
        start = len(session.timeline.events)
        session.say(BARGE_SCRIPT, rate=0, seed=i)
        speaking = session.timeline.wait_for(lambda e: e["stage"] == "present" and e["data"].get("kind") == "speech"
                                             and e["result"] == "ok", 30, start)
        if speaking is None:
            raise RuntimeError("the avatar never started speaking")
        time.sleep(rng.uniform(0.1, 2.5))
        old_epoch = speaking["epoch"]
        via = "ingress" if i % 2 == 0 else "control"
        sent_ns = time.monotonic_ns()
        if via == "ingress":
            session.feeder.control("barge_in")
        else:
            session.control.call("barge_in", reason="bench")
        acked = session.timeline.wait_for(lambda e: e["actor"] == "supervisor" and e["stage"] == "barge_in"
                                          and e["epoch"] > old_epoch and "all_acknowledged_ms" in e["data"], 10, start)
        time.sleep(0.15)  # let the last old frame (if any) be presented
        events = session.timeline.events[start:]
        presents = [e for e in events if e["actor"] == "player" and e["stage"] == "present"]
        old_audio = [e["ts_ns"] for e in presents if e["epoch"] <= old_epoch and e["data"].get("rms", 0) > 0]
        next_tick = min((e["ts_ns"] for e in presents if e["ts_ns"] >= sent_ns), default=None)
        last_old = max(old_audio) if old_audio else None
        late_old = [e for e in presents if e["epoch"] <= old_epoch and e["ts_ns"] > sent_ns]
        record = {
            "via": via, "sent_ns": sent_ns, "old_epoch": old_epoch,
            "new_epoch": acked["epoch"] if acked else None,
            "acknowledged_ms": acked["data"]["all_acknowledged_ms"] if acked else None,
            "cut_ms": round(max(0, (last_old or sent_ns) - sent_ns) / 1e6, 2),
            "next_frame_boundary_ms": round((next_tick - sent_ns) / 1e6, 2) if next_tick else None,
            "old_frames_after_barge_in": len(late_old),
            "old_frames_after_barge_in_audible": sum(1 for e in late_old if e["data"].get("rms", 0) > 0),
        }
        records.append(record)
        echo(f"point {i + 1:>2} via {via:<7}: last old audio {record['cut_ms']:6.1f} ms after the barge-in "
             f"(next frame boundary {record['next_frame_boundary_ms']} ms), acks in {record['acknowledged_ms']} ms, "
             f"old frames after it {record['old_frames_after_barge_in']}")
    return records


def bargein(config_path: str | None, overrides, points: int = 50, echo: Callable[[str], None] = print) -> dict:
    session = Session(config_path, overrides, log="out/bench-supervisor.log")
    session.start()
    try:
        records = interrupt_at_random_points(session, points, echo=echo)
    finally:
        session.stop()
    cut = [r["cut_ms"] for r in records]
    boundary = [r["next_frame_boundary_ms"] for r in records if r["next_frame_boundary_ms"] is not None]
    result = {
        "method": ("Speak a long paragraph, wait a random 0.1-2.5 s after speech starts, send a barge-in "
                   "(alternately {type: barge_in} on the ingress and the control endpoint), repeat. 'cut' = from "
                   "sending to the last presentation of audio of the old epoch (the one faded frame); baseline = "
                   "from sending to the next presentation tick, the earliest a frame-aligned cut can happen."),
        "points": points,
        "cut_ms": summarize(cut),
        "next_frame_boundary_ms": summarize(boundary),
        "acknowledged_by_all_ms": summarize([r["acknowledged_ms"] for r in records if r["acknowledged_ms"] is not None]),
        "old_frames_after_cut": sum(max(0, r["old_frames_after_barge_in"] - 1) for r in records),
        "target_ms": 40,
        "machine": machine(),
    }
    echo(f"\nbarge-in -> last old audio: median {result['cut_ms']['median']} ms, max {result['cut_ms']['max']} ms "
         f"(target <= 40); next frame boundary: median {result['next_frame_boundary_ms']['median']} ms; "
         f"all actors acknowledged: median {result['acknowledged_by_all_ms']['median']} ms")
    return result
