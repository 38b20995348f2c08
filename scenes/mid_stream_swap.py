"""Scene 3, Mid-Stream Swap: change engines while speaking. The join is a crossfade of at
most one frame, the same words continue (nothing repeated or skipped), the voice schema
is the same request on both engines, loudness matches across the join."""

from __future__ import annotations

import json
import time

from actors.adapters import make_adapter
from persona.voice import load_voice

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
    # One schema for the whole utterance, on both engines: every synth event names "joe", the TTS holds
    # "joe", and each engine's live projection is what its adapter makes of joe.json -- not of another
    # schema (brisk projects to other knobs on both engines, so a wrong schema shows here).
    voices = {e["data"].get("voice") for e in synth}
    engines_on = {e["data"].get("adapter") for e in synth}
    reply = adapters or {}
    projections = {name: _plain(d.get("projection")) for name, d in reply.get("adapters", {}).items()}
    expected = {name: _plain(make_adapter(name, session.config).project(load_voice("joe"))) for name in projections}
    other = {name: _plain(make_adapter(name, session.config).project(load_voice("brisk"))) for name in projections}
    scene.check("voice schema preserved",
                voices == {"joe"} and (reply.get("voice") or {}).get("name") == "joe"
                and {first, second} <= engines_on <= set(projections)
                and projections == expected and all(expected[n] != other[n] for n in expected),
                {"voices": sorted(voices), "tts_voice": (reply.get("voice") or {}).get("name"),
                 "engines": sorted(engines_on), "projections": projections},
                "every chunk in joe; each engine's projection == its adapter's projection of joe.json")
    scene.check("no underflow", not scene.of("player", "present", "underflow"), len(scene.of("player", "present", "underflow")), "0")


def _plain(value):
    """JSON-shaped (tuples from msgpack and lists from the adapter compare equal)."""
    return json.loads(json.dumps(value))
