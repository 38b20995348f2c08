"""Scene 3, Mid-Stream Swap: change engines while speaking. The join is a crossfade of at
most one frame, the same words continue (nothing repeated or skipped), the voice schema
is the same request on both engines, loudness matches across the join."""

from __future__ import annotations

import time

from .harness import Scene
from .texts import STORY


def run(scene: Scene) -> None:
    first, second = (scene.adapters + ["espeak"])[:2] if len(scene.adapters) >= 2 else ("piper", "espeak")
    session = scene.start({"tts": {"adapter": first, "adapters": sorted({first, second, "piper"}), "fallback": ""},
                           "voice": {"persona": "joe"}})
    start = len(scene.events)
    feeding = session.say_in_background(STORY, rate=14)
    session.timeline.wait_for(lambda e: e["stage"] == "first_frame", 30, start)
    time.sleep(2.0)
    session.control.call("config_set", changes={"tts.adapter": second})
    session.timeline.wait_for(lambda e: e["stage"] == "synth" and e["data"].get("adapter") == second, 30, start)
    time.sleep(2.5)
    session.control.call("config_set", changes={"tts.adapter": first})
    adapters = session.control.call("adapters")
    feeding.join(60)
    turn = session.wait_turn_end(after=start, timeout=60)
    session.wait_presented(turn["utterance_id"], 90, epoch=turn["epoch"])

    swaps = [(e["data"]["from"], e["data"]["to"]) for e in scene.of("tts", "swap")]
    scene.check("swapped there and back", swaps == [(first, second), (second, first)], swaps, f"{first}->{second}->{first}")
    parsed = {e["chunk_id"]: e["data"]["text"] for e in scene.of("parser", "parse") if e["utterance_id"] == turn["utterance_id"]}
    synth = sorted((e for e in scene.of("tts", "synth") if e["utterance_id"] == turn["utterance_id"]), key=lambda e: e["chunk_id"])
    words = "".join(parsed[e["chunk_id"]] for e in synth).split()
    scene.check("same words continue", words == STORY.split(), f"{len(words)} words in {len(synth)} chunks",
                "every word once, in order")
    stitches = sorted((e for e in scene.of("stitcher", "stitch") if e["data"].get("piece") == 0
                       and e["utterance_id"] == turn["utterance_id"]), key=lambda e: e["chunk_id"])
    joins = [(a["data"], b["data"]) for a, b in zip(stitches, stitches[1:]) if a["data"]["adapter"] != b["data"]["adapter"]]
    frame = 22050 // 25
    scene.check("crossfade at most one frame", bool(joins) and all(0 < b["overlap"] <= frame for _, b in joins),
                [b["overlap"] for _, b in joins], f"0 < overlap <= {frame} samples")
    ratios = [round(b["loudness"] / a["loudness"], 2) for a, b in joins if a["loudness"]]
    scene.check("loudness matched across the join", bool(ratios) and all(0.7 < r < 1.4 for r in ratios), ratios, "0.7..1.4")
    voices = {e["data"].get("voice") for e in synth}
    projections = {name: d.get("projection") for name, d in (adapters or {}).get("adapters", {}).items()}
    scene.check("voice schema preserved", voices == {"joe"} and all(projections.values()),
                {"voices": sorted(voices), "projections": projections}, "one schema, projected by every engine")
    scene.check("no underflow", not scene.of("player", "present", "underflow"), len(scene.of("player", "present", "underflow")), "0")
