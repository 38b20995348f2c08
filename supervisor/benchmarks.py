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
