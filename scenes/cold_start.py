"""Scene 7, Cold Start: the first request after boot is as fast as a warm one, because
warm-up (model load, first inference, every render batch size) happens before READY."""

from __future__ import annotations

import statistics

from clients.analysis import utterance_ttff

from .harness import Scene

SENTENCES = ["Hello, and welcome to the first conversation of the day.",
             "Hello, and welcome to the next conversation of the day.",
             "Hello, and welcome to another conversation of the day.",
             "Hello, and welcome to one more conversation of the day.",
             "Hello, and welcome to the last conversation of the day."]


def run(scene: Scene) -> None:
    session = scene.start({"controller": {"first_fragment": "sentence"}})
    figures = []
    for sentence in SENTENCES:
        start = len(scene.events)
        done = session.say_and_wait(sentence, rate=0)
        u = utterance_ttff(scene.events[start:], done["utterance_id"], done["epoch"])
        figures.append(u["generated_from_first_chunk_ms"])
    # "Within 10 % of a warm one": warm requests on this shared 2-core machine spread by about
    # +-15 % among themselves, so the cold one is compared with the warm spread, not one number.
    # (Measured with one ONNX thread: the voice's first synthesis is within that noise even
    # without warm-up; warm-up matters for the render batch sizes and the arena's RSS growth.)
    cold, warm = figures[0], figures[1:]
    scene.notes.update({"first_request_ms": cold, "warm_ms": warm})
    scene.check("first request as fast as a warm one", cold <= 1.10 * max(warm) + 5,
                f"{cold} ms vs warm {min(warm)}..{max(warm)} ms (median {statistics.median(warm)})",
                "within 10 % of a warm request (+5 ms of timer noise)")
    synth = [e["duration_ms"] for e in scene.of("tts", "synth") if e["data"].get("audio_ms", 0) > 0]
    scene.notes["synthesis_ms"] = synth
    scene.check("the engine skips warm-up on later requests", bool(synth) and synth[0] <= 1.25 * statistics.median(synth[1:]) + 5,
                f"first {synth[0] if synth else None} ms vs median {statistics.median(synth[1:]) if len(synth) > 1 else None} ms",
                "the first synthesis costs what the later ones do (warm-up happened before READY)")
