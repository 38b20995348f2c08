"""Acceptance for real-time control: mid-utterance engine swaps, graceful degradation under
an injected stall, credit discipline audited from the timeline."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from clients.analysis import credit_audit
from clients.session import Session
from clients.ports import write_private_config
from tests.media import read_mp4, transcribe, word_error_rate

pytestmark = pytest.mark.e2e
VOICE_DIR = str(Path(__file__).resolve().parents[1] / "data")
VOICE = {"persona": "voice_clear", "dirs": [VOICE_DIR]}  # a voice of the tests' own, from a directory they name
STORY = ("The morning was cold and bright. We walked down to the river before breakfast. "
         "A small boat was waiting at the end of the old wooden pier. My sister carried the basket "
         "with bread and cheese. The water was calm and very clear. We could see fish swimming near the stones. "
         "After an hour we rowed back home. Everyone was hungry and happy.")


def events_of(session, actor, stage, result="ok", after=0):
    return [e for e in session.timeline.events[after:] if e["actor"] == actor and e["stage"] == stage
            and (result is None or e["result"] == result)]


def set_config(session, **changes):
    reply = session.control.call("config_set", changes={k.replace("__", "."): v for k, v in changes.items()})
    assert reply and reply["ok"], reply
    return reply["version"]


def assert_credit_respected(events):
    ledgers = credit_audit(events)
    links = {link for link, _ in ledgers}
    assert {"parser->tts", "tts->stitcher", "stitcher->driver", "driver->player"} <= links
    overdrafts = {key: l["overdrafts"][:3] for key, l in ledgers.items() if l["overdrafts"]}
    assert not overdrafts, overdrafts


def spoken_chunks(session, utterance_id, epoch):
    """Texts of the chunks actually synthesised for the utterance, in order, with their engine."""
    parsed = {e["chunk_id"]: e["data"]["text"] for e in events_of(session, "parser", "parse")
              if e["utterance_id"] == utterance_id and e["epoch"] == epoch}
    synth = [e for e in events_of(session, "tts", "synth") if e["utterance_id"] == utterance_id and e["epoch"] == epoch]
    return [(parsed[e["chunk_id"]], e["data"]["adapter"]) for e in sorted(synth, key=lambda e: e["chunk_id"])]


def check_control_cli(config):
    """`personas-supervisor adapters`, `config get` and `config set` (including refusals)."""
    import json
    import subprocess
    import sys

    cli = [sys.executable, "-m", "supervisor"]
    out = subprocess.run(cli + ["adapters", "--config", str(config)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    descriptors = json.loads(out.stdout.split("\n", 1)[1])
    assert set(descriptors) == {"piper", "espeak"}
    for d in descriptors.values():
        assert {"name", "streaming", "unit", "granularity", "voices", "supports_barge_in", "supports_seed",
                "stateful_context", "limits", "projection"} <= set(d)
    out = subprocess.run(cli + ["config", "get", "tts.adapter", "--config", str(config)], capture_output=True, text=True)
    assert out.stdout.strip() == "piper"
    refused = subprocess.run(cli + ["config", "set", "media.fps=30", "--config", str(config)], capture_output=True, text=True)
    assert refused.returncode != 0 and "cannot change while running" in refused.stderr
    bad = subprocess.run(cli + ["config", "set", "tts.adapter=nope", "--config", str(config)], capture_output=True, text=True)
    assert bad.returncode != 0 and "loaded adapters" in bad.stderr


def test_swap_piper_espeak_piper_mid_utterance(tmp_path, artifacts):
    config = write_private_config(tmp_path / "c.toml", {"voice": VOICE})
    recording = artifacts / "swap.mp4"
    with Session(str(config), record=str(recording), log=tmp_path / "s.log",
                 timeline_jsonl=artifacts / "swap.timeline.jsonl") as session:
        start = len(session.timeline.events)
        feeding = session.say_in_background(STORY, rate=14)
        turn_started = session.timeline.wait_for(lambda e: e["stage"] == "first_frame", 30, start)
        assert turn_started
        time.sleep(2.0)
        set_config(session, tts__adapter="espeak")
        assert session.timeline.wait_for(lambda e: e["stage"] == "synth" and e["data"].get("adapter") == "espeak", 30, start)
        time.sleep(2.5)
        set_config(session, tts__adapter="piper")
        check_control_cli(config)
        feeding.join(60)
        turn = session.wait_turn_end(after=start, timeout=60)
        session.wait_presented(turn["utterance_id"], 90, epoch=turn["epoch"])
        events = session.timeline.events

    swaps = [(e["data"]["from"], e["data"]["to"], e["data"]["reason"]) for e in events if e["stage"] == "swap"]
    assert swaps == [("piper", "espeak", "config"), ("espeak", "piper", "config")]
    chunks = spoken_chunks(session, turn["utterance_id"], turn["epoch"])
    engines = [adapter for _, adapter in chunks]
    assert engines[0] == "piper" and "espeak" in engines and engines[-1] == "piper"
    # Same words continue: every chunk synthesised exactly once, in order, and together they are the story.
    assert "".join(text for text, _ in chunks).split() == STORY.split()
    # Each swap join is an overlap-add of at most one frame, with loudness matched to the chunk before.
    stitches = {e["chunk_id"]: e["data"] for e in events if e["stage"] == "stitch" and e["data"].get("piece") == 0
                and e["utterance_id"] == turn["utterance_id"]}
    ids = sorted(stitches)
    for before, after in zip(ids, ids[1:]):
        if stitches[before]["adapter"] != stitches[after]["adapter"]:
            assert 0 < stitches[after]["overlap"] <= 22050 // 25
            ratio = stitches[after]["loudness"] / stitches[before]["loudness"]
            assert 0.7 < ratio < 1.4, (stitches[before], stitches[after])
    assert not [e for e in events if e["stage"] == "present" and e["result"] == "underflow"]
    assert_credit_respected(events)
    frames, audio, sr, fps, _ = read_mp4(recording)
    heard = transcribe(audio, sr)
    wer = word_error_rate(STORY, heard)
    print(f"\nengines: {engines}\nheard: {heard}\nWER {wer:.3f}")
    assert wer <= 0.35


def test_a_stalled_engine_falls_back_without_underflow_and_comes_back(tmp_path, artifacts):
    config = write_private_config(tmp_path / "c.toml", {"voice": VOICE})
    with Session(str(config), log=tmp_path / "s.log", timeline_jsonl=artifacts / "stall.timeline.jsonl") as session:
        start = len(session.timeline.events)
        feeding = session.say_in_background(STORY, rate=20)
        assert session.timeline.wait_for(lambda e: e["stage"] == "first_frame", 30, start)
        time.sleep(3.0)  # let the playback buffer fill, as it does in a live conversation
        injected_at = len(session.timeline.events)
        set_config(session, fault__adapter="piper", fault__kind="stall", fault__ms=2000)
        feeding.join(60)
        turn = session.wait_turn_end(after=start, timeout=60)
        session.wait_presented(turn["utterance_id"], 120, epoch=turn["epoch"])
        after = session.timeline.events[injected_at:]

    stalls = [e for e in after if e["stage"] == "stall"]
    assert stalls and stalls[0]["data"]["adapter"] == "piper" and stalls[0]["data"]["fallback"] == "espeak"
    swaps = [(e["data"]["from"], e["data"]["to"], e["data"]["reason"]) for e in after if e["stage"] == "swap"]
    assert swaps[0] == ("piper", "espeak", "stall")
    assert ("espeak", "piper", "recovered") in swaps
    recovered = next(e for e in after if e["stage"] == "synth" and e["result"] == "drop" and e["data"].get("recovered"))
    assert recovered["data"]["adapter"] == "piper"  # the stalled call came back, late, and was discarded
    assert not [e for e in after if e["stage"] == "present" and e["result"] == "underflow"]
    assert not [e for e in after if e["stage"] == "stitch" and e["result"] == "gap"]
    chunks = spoken_chunks(session, turn["utterance_id"], turn["epoch"])
    assert "".join(text for text, _ in chunks).split() == STORY.split()
    assert_credit_respected(session.timeline.events)
