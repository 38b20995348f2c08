"""Acceptance: the Wyoming adapter speaks through a real wyoming-piper server (started here,
offline, with the joe voice), in the adapter on its own and in the running system."""

from __future__ import annotations

import pytest

from actors.adapters import make_adapter
from persona.voice import load_voice
from clients.ports import write_private_config
from clients.session import Session
from clients.wyoming_server import WyomingServer
from protocol.config import load_config
from tests.media import mouth_follows_envelope, read_mp4, transcribe, word_error_rate

pytestmark = pytest.mark.e2e
TEXT = "Good morning. The quick brown fox jumps over the lazy dog."


@pytest.fixture(scope="module")
def wyoming_server(tmp_path_factory):
    with WyomingServer(tmp_path_factory.mktemp("wyoming") / "server.log") as uri:
        yield uri


def test_wyoming_adapter_against_a_real_server(wyoming_server):
    config = load_config(overrides=[f'tts.wyoming_uri="{wyoming_server}"'])
    adapter = make_adapter("wyoming", config)
    adapter.load()
    voice = load_voice("joe")
    adapter.warmup(voice)
    result = adapter.synthesize(TEXT, voice)
    assert adapter.server_info["voices"] > 0 and adapter.describe()["server"]["uri"] == wyoming_server
    assert result.sample_rate == 22050 and len(result.pcm) > 22050
    # Shadow alignment: phonemes inside the audio, word anchors in order, one per written word.
    assert result.phonemes and all(0 <= s and s + n <= len(result.pcm) for _, s, n in result.phonemes)
    starts = [s for _, s in result.word_anchors]
    assert len(result.word_anchors) == len(TEXT.split()) and starts == sorted(starts)
    assert word_error_rate(TEXT, transcribe(result.pcm, result.sample_rate)) <= 0.2


def test_lips_follow_a_wyoming_engines_own_sound(wyoming_server, tmp_path):
    """The same paragraph through a real Wyoming server, lips from the espeak-ng shadow alignment
    and then from the audio (the learned model), in one system: the mouth follows the sound at
    least as closely with the model."""
    from clients.analysis import MouthMeter
    from clients.session import private_system

    sections = {"tts": {"adapter": "wyoming", "fallback": "", "adapters": ["wyoming"], "wyoming_uri": wyoming_server},
                "driver": {"idle_motion": False, "lips": "alignment"}}
    with private_system(tmp_path, sections) as (session, collector):
        meter = MouthMeter(session.config)
        r_shadow, shadow_sources, _ = mouth_follows_envelope(session, collector, meter)
        assert session.control.call("config_set", changes={"driver.lips": "audio"})["changes"] == {"driver.lips": "audio"}
        r_audio, audio_sources, _ = mouth_follows_envelope(session, collector, meter)
    print(f"\nmouth opening vs audio level through wyoming: shadow alignment r = {r_shadow:.3f}, "
          f"learned lips from audio r = {r_audio:.3f}")
    assert shadow_sources == {"shadow"} and audio_sources == {"audio"}
    assert r_audio > 0.5
    assert r_audio >= r_shadow


def test_the_system_speaks_through_wyoming(wyoming_server, tmp_path, artifacts):
    config = write_private_config(tmp_path / "c.toml", {"tts": {"adapter": "wyoming", "fallback": "piper",
                                                        "adapters": ["wyoming", "piper"], "wyoming_uri": wyoming_server}})
    recording = artifacts / "wyoming.mp4"
    with Session(str(config), record=str(recording), log=tmp_path / "s.log") as session:
        done = session.say_and_wait(TEXT)
        events = session.timeline.events
        adapters = session.control.call("adapters")
    assert adapters["active"] == "wyoming" and "shadow_alignment_espeak" in adapters["adapters"]["wyoming"]["features"]
    synth = [e for e in events if e["stage"] == "synth" and e["result"] == "ok" and e["utterance_id"] == done["utterance_id"]
             and e["data"]["audio_ms"] > 0]
    assert synth and {e["data"]["adapter"] for e in synth} == {"wyoming"}
    frames, audio, sr, fps, _ = read_mp4(recording)
    heard = transcribe(audio, sr)
    print(f"\nheard through wyoming: {heard}")
    assert word_error_rate(TEXT, heard) <= 0.2
    # Lips move with the Wyoming audio too (timing from the shadow alignment).
    speech = [e for e in events if e["stage"] == "render" and e["data"]["kind"] == "speech"]
    assert sum(e["data"]["frames"] for e in speech) > 50
