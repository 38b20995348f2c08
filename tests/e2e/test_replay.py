"""Acceptance: a recorded session replays from its timeline alone, byte-identical in audio
(seeded engines, natural-prosody noise included) and in frames (same device and dtype)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from actors.dsp import BARGE_FADE_MS
from clients.replay import replay
from clients.session import Session
from clients.ports import write_private_config
from clients.capture import AVCollector
from tests.media import read_mp4

pytestmark = pytest.mark.e2e


def test_replay_regenerates_the_session_exactly(tmp_path, artifacts):
    # brisk: natural prosody (seeded noise) -- the hard case for determinism.
    config = write_private_config(tmp_path / "c.toml", {"voice": {"persona": "brisk"}})
    timeline = artifacts / "replay_source.timeline.jsonl"
    timeline.unlink(missing_ok=True)
    original = artifacts / "replay_source.mp4"
    with Session(str(config), record=str(original), timeline_jsonl=timeline, log=tmp_path / "s.log") as session:
        collector = AVCollector(session.endpoints["av_out"])
        assert collector.wait_connected(10)
        session.say_and_wait("Hello there, <v:expression:smile>this is a session worth replaying. It has a marker.")
        session.control.call("config_set", changes={"voice.persona": "joe"})  # zero-noise mode too
        start = len(session.timeline.events)
        session.say("Now the calmer voice speaks for a while, and then I will be interrupted by you.", rate=0)
        session.timeline.wait_for(lambda e: e["stage"] == "present" and e["data"].get("kind") == "speech"
                                  and e["utterance_id"] == 1, 30, start)
        time.sleep(0.8)  # the scenario: interrupted 0.8 s into speaking
        session.control.call("barge_in", reason="test")
        done = session.say_and_wait("After the interruption, <v:pose_yaw:6>I finish the story.")
        assert collector.wait_for(lambda p: p.final and p.utterance_id == done["utterance_id"], 10)
        collector.close()

    result = replay(timeline, artifacts / "replay.mp4", keep_images=True)
    print(f"\nreplayed {result.ticks} ticks, {result.chunks} chunks, modes {result.modes}")
    assert result.modes.get("seeded_noise", 0) >= 2 and result.modes.get("zero_noise", 0) >= 2
    assert not result.approximate
    events = [e for e in session.timeline.events if e["actor"] == "player" and e["stage"] == "present"]
    packets = collector.packets
    tick_of = {(e["epoch"], e["frame"]): i for i, e in enumerate(events) if e["data"]["kind"] != "hold"}
    assert len(packets) > 100 and result.ticks == len(events)
    # Tick by tick, in order: the live present events are ticks 0, 1, 2, ... and the sink got exactly
    # their non-hold ticks, one packet each, in that order, with that tick's frame (epoch, index) and kind
    # (the collector joins late and leaves early: a contiguous run of them, nothing dropped or reordered).
    assert [e["data"]["tick"] for e in events] == list(range(len(events)))
    shown = [(e["epoch"], e["frame"], e["data"]["kind"]) for e in events if e["data"]["kind"] != "hold"]
    got = [(packet.epoch, packet.frame_index, packet.kind) for packet in packets]
    joined = shown.index(got[0])
    assert shown[joined:joined + len(got)] == got, "the sink's packets are not the present events' frames in order"
    # The replay's tick t is the live tick t: its audio has the loudness the player measured on what it
    # presented at t (every tick, also those no packet shows: holds, before the collector joined, after
    # it left), a hold is silence under the frozen last frame, and a faded tick is the cut frame: speech,
    # silent after BARGE_FADE_MS.
    sr = int(session.config["media"]["sample_rate"])
    fade = BARGE_FADE_MS * sr // 1000
    for tick, e in enumerate(events):
        pcm, kind = result.pcm[tick], e["data"]["kind"]
        rms = int(np.sqrt(np.mean(pcm.astype(np.float64) ** 2))) if len(pcm) else 0
        assert rms == e["data"]["rms"], f"tick {tick} ({kind}, epoch {e['epoch']} frame {e['frame']}): rms {rms}"
        if kind == "hold":
            assert not pcm.any() and (tick == 0 or np.array_equal(result.images[tick], result.images[tick - 1]))
        if e["data"]["faded"]:
            assert kind == "speech" and not pcm[fade:].any(), f"tick {tick} is not faded out in the replay"
    cuts = [e for e in session.timeline.events if e["actor"] == "player" and e["stage"] == "flush"
            and e["data"].get("fade_frame")]
    faded = [e["data"]["tick"] for e in events if e["data"]["faded"]]
    # The barge-in cuts one speaking frame -- unless the player's buffer held no speech at that
    # instant (a starved, loaded machine), and then no tick may claim to be faded either.
    assert len(cuts) <= 1 and len(faded) == len(cuts), (cuts, faded)
    speech = 0
    for packet in packets:  # every packet the sink got, against the replay's tick for it
        tick = tick_of[(packet.epoch, packet.frame_index)]
        assert result.pcm[tick].tobytes() == bytes(packet.pcm), f"audio differs at tick {tick}"
        assert result.images[tick].tobytes() == bytes(packet.pixels), f"frame differs at tick {tick}"
        speech += packet.kind == "speech"
    assert speech > 100
    # The files too: same decoded audio and frames.
    frames_a, audio_a, *_ = read_mp4(original)
    frames_b, audio_b, *_ = read_mp4(artifacts / "replay.mp4")
    assert np.array_equal(audio_a, audio_b)
    assert frames_a.shape == frames_b.shape and np.array_equal(frames_a, frames_b)


def test_replay_keeps_the_timing_of_engines_that_are_not_repeatable(tmp_path):
    config = write_private_config(tmp_path / "c.toml", {"tts": {"adapter": "espeak"}})
    timeline = tmp_path / "t.jsonl"
    with Session(str(config), timeline_jsonl=timeline, log=tmp_path / "s.log") as session:
        session.say_and_wait("Espeak cannot promise the same samples twice.")
    events = [e for e in session.timeline.events if e["actor"] == "player" and e["stage"] == "present"]
    result = replay(timeline)
    assert result.approximate and result.ticks == len(events)


def test_a_failed_chunk_is_retried_on_its_seeded_engine_and_joins_without_a_seam(tmp_path):
    config = write_private_config(tmp_path / "c.toml", {"voice": {"persona": "brisk"}})
    timeline = tmp_path / "t.jsonl"
    with Session(str(config), timeline_jsonl=timeline, log=tmp_path / "s.log") as session:
        collector = AVCollector(session.endpoints["av_out"])
        assert collector.wait_connected(10)
        session.control.call("config_set", changes={"fault.adapter": "piper", "fault.kind": "error_once"})
        done = session.say_and_wait("This sentence fails once. The retry speaks it exactly as it would have been.")
        assert collector.wait_for(lambda p: p.final and p.utterance_id == done["utterance_id"], 10)
        collector.close()
        events = session.timeline.events
    assert [e for e in events if e["stage"] == "synth" and e["result"] == "error"]
    retried = [e for e in events if e["stage"] == "retry"]
    assert retried and retried[0]["data"]["adapter"] == "piper"
    assert not [e for e in events if e["stage"] == "swap"]  # no fallback voice was needed
    # The retried chunk's audio equals a clean synthesis (the replay re-synthesises without faults).
    result = replay(timeline, keep_images=False)
    ticks = {(e["epoch"], e["frame"]): i for i, e in enumerate(e for e in events if e["actor"] == "player"
                                                                 and e["stage"] == "present")}
    speech = [p for p in collector.packets if p.kind == "speech"]
    assert len(speech) > 50
    for packet in speech:
        assert result.pcm[ticks[(packet.epoch, packet.frame_index)]].tobytes() == bytes(packet.pcm)
