"""Scene 7, Cold Start: the first request after boot is as fast as a warm one, because
warm-up (model load, first inference, every render batch size) happens before READY."""

from __future__ import annotations

import statistics

from supervisor.client import utterance_ttff

from .harness import Scene

SENTENCES = ["Hello, and welcome to the first conversation of the day.",
             "Hello, and welcome to the next conversation of the day.",
             "Hello, and welcome to another conversation of the day.",
             "Hello, and welcome to one more conversation of the day.",
             "Hello, and welcome to the last conversation of the day."]


def run(scene: Scene) -> None:
    session = scene.start({"controller": {"first_fragment": "sentence"}})
    figures = []
    for sentence in SENTENCES[: 4 if scene.quick else len(SENTENCES)]:
        start = len(scene.events)
        done = session.say_and_wait(sentence, rate=0)
        u = utterance_ttff(scene.events[start:], done["utterance_id"], done["epoch"])
        figures.append(u["generated_from_first_chunk_ms"])
    cold, warm = figures[0], statistics.median(figures[1:])
    scene.notes.update({"first_request_ms": cold, "warm_ms": figures[1:]})
    scene.check("first request as fast as a warm one", cold <= 1.10 * warm + 5, f"{cold} ms vs warm median {warm} ms",
                "within 10 % (+5 ms of timer noise)")
    synth = [e["duration_ms"] for e in scene.of("tts", "synth") if e["data"].get("audio_ms", 0) > 0]
    scene.notes["synthesis_ms"] = synth
    scene.check("the engine skips warm-up on later requests", bool(synth) and synth[0] <= 1.25 * statistics.median(synth[1:]) + 5,
                f"first {synth[0] if synth else None} ms vs median {statistics.median(synth[1:]) if len(synth) > 1 else None} ms",
                "the first synthesis costs what the later ones do (warm-up happened before READY)")
