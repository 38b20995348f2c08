"""OpenAI-compatible speech, both ways, between two real Personas systems.

System A serves ``POST /v1/audio/speech`` from its web gateway (its own Piper, not its
pipeline's engine: A's pipeline speaks with espeak here, to show the two are apart), and the
official ``openai`` client gets speech from it that PocketSphinx understands. System B's TTS
engine is the ``openai_speech`` adapter pointed at A's gateway: B speaks a paragraph with A's
voice, its avatar's mouth follows that audio (lips named from the sound) and nothing underflows.
Both systems are module fixtures, so the suite pays for each once."""

from __future__ import annotations

import http.client
import json
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from clients.capture import AVCollector
from clients.ports import write_private_config
from clients.session import Session, private_system
from protocol.control_endpoint import read_token
from tests.media import mouth_follows_envelope, transcribe, word_error_rate, words

pytestmark = pytest.mark.e2e
openai = pytest.importorskip("openai", reason="the official openai client (pip install openai) drives this test")

TEXT = "Good morning. The quick brown fox jumps over the lazy dog."
KEY_WORDS = {"morning", "quick", "brown", "fox", "lazy", "dog"}
#: PocketSphinx hears Piper's own 22 kHz audio of the paragraph with a word error rate of 0.52
#: (measured: "the white house keeper climb the stairs ..."), so what counts is that these are heard.
PARAGRAPH_KEY_WORDS = {"keeper", "stairs", "evening", "great", "ships", "dark", "water"}
KEY_ENV = "PERSONAS_SPEECH_SERVER_KEY"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """System A: the gateway on, its pipeline on espeak alone (the gateway's speech is Piper)."""
    sections = {"web": {"enabled": True, "speech_adapter": "piper"},
                "tts": {"adapter": "espeak", "fallback": "", "adapters": ["espeak"]}}
    with private_system(tmp_path_factory.mktemp("speech_server"), sections, capture=False) as (session, _):
        web = session.config["web"]
        yield session, f"http://{web['host']}:{web['port']}", read_token(session.endpoints["control"])


@pytest.fixture(scope="module")
def speaker(server, tmp_path_factory):
    """System B: its only engine is openai_speech, asking system A's gateway; lips from the audio
    (driver.lips = auto, the default), idle motion off so only the mouth moves under speech."""
    _, base_url, token = server
    workdir = tmp_path_factory.mktemp("speech_client")
    sections = {"tts": {"adapter": "openai_speech", "fallback": "", "adapters": ["openai_speech"]},
                "openai_speech": {"base_url": base_url, "model": "tts-1", "voice": "joe", "api_key_env": KEY_ENV,
                                  "timeout_s": 60.0},  # the first request may load A's Piper
                "driver": {"idle_motion": False}}
    config = write_private_config(workdir / "personas.toml", sections)
    session = Session(str(config), log=workdir / "supervisor.log", env={KEY_ENV: token})
    session.start()
    collector = None
    try:
        collector = AVCollector(session.endpoints["av_out"], idle_pixels=False, curve=session.curve)
        assert collector.wait_connected(10), "the player's av_out did not accept the capture's connection"
        yield session, collector
    finally:
        if collector is not None:
            collector.close()
        session.stop()


def raw_post(base_url: str, body: bytes, headers: dict) -> tuple[int, dict]:
    """A request as any HTTP client sends it; the status and the JSON answer."""
    host, port = base_url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("POST", "/v1/audio/speech", body=body, headers={"Content-Type": "application/json", **headers})
        reply = conn.getresponse()
        return reply.status, json.loads(reply.read())
    finally:
        conn.close()


def test_an_openai_client_gets_real_speech_from_the_gateway(server, artifacts):
    session, base_url, token = server
    client = openai.OpenAI(base_url=base_url + "/v1", api_key=token, max_retries=0, timeout=120)
    start = len(session.timeline.events)
    arrivals, pieces = [], []
    with client.audio.speech.with_streaming_response.create(model="tts-1", voice="joe", input=TEXT,
                                                            response_format="pcm") as response:
        headers = dict(response.headers)
        for piece in response.iter_bytes():
            arrivals.append(time.monotonic())
            pieces.append(piece)
    pcm_bytes = b"".join(pieces)
    assert response.status_code == 200 and headers["content-type"] == "audio/pcm"
    assert headers["x-sample-rate"] == "24000" and headers["x-personas-model"] == "tts-1"
    assert headers["transfer-encoding"] == "chunked" and len(pcm_bytes) % 2 == 0
    pcm = np.frombuffer(pcm_bytes, np.int16)
    heard = transcribe(pcm, 24000)
    print(f"\nheard from /v1/audio/speech: {heard!r} ({len(pcm) / 24000:.2f} s)")
    assert 2.0 < len(pcm) / 24000 < 8.0
    assert KEY_WORDS <= set(words(heard)) and word_error_rate(TEXT, heard) <= 0.2, heard
    # Sentence by sentence: the first sentence's audio arrived while the second was being made.
    event = session.timeline.wait_for(lambda e: e["actor"] == "web" and e["stage"] == "speech", 10, start)
    assert event is not None and event["result"] == "ok" and event["data"]["sentences"] == 2
    assert event["data"]["first_audio_ms"] < event["duration_ms"] and arrivals[-1] > arrivals[0]
    (Path(artifacts) / "openai_speech.pcm").write_bytes(pcm_bytes)

    # wav: a streaming RIFF header at 24 kHz, 16-bit mono, then the very same audio (Piper is seeded).
    with client.audio.speech.with_streaming_response.create(model="tts-1", voice="joe", input=TEXT,
                                                            response_format="wav") as response:
        wav = response.read()
    assert wav[:4] == b"RIFF" and wav[8:16] == b"WAVEfmt " and wav[36:40] == b"data"
    fmt, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", wav, 20)
    assert (fmt, channels, rate, bits) == (1, 1, 24000, 16)
    assert wav[44:] == pcm_bytes


def test_the_gateway_refuses_in_openai_shape(server):
    session, base_url, token = server
    client = openai.OpenAI(base_url=base_url + "/v1", api_key=token, max_retries=0, timeout=30)
    start = len(session.timeline.events)
    with pytest.raises(openai.BadRequestError) as raised:
        client.audio.speech.create(model="tts-1", voice="alloy", input="Hello.")
    error = raised.value.body
    assert raised.value.status_code == 400 and error["param"] == "voice" and error["type"] == "invalid_request_error"
    assert "joe" in error["message"] and "brisk" in error["message"]  # the voices it has
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=base_url + "/v1", api_key="sk-not-the-token", max_retries=0).audio.speech.create(
            model="tts-1", voice="joe", input="Hello.")

    good = {"Authorization": f"Bearer {token}"}
    request = lambda **fields: json.dumps({"model": "tts-1", "voice": "joe", "input": "Hello.", **fields}).encode()
    status, answer = raw_post(base_url, request(input="a" * 4097), good)
    assert status == 400 and answer["error"]["code"] == "string_above_max_length" and answer["error"]["param"] == "input"
    status, answer = raw_post(base_url, request(), {})
    assert status == 401 and answer["error"]["code"] == "invalid_api_key"
    status, answer = raw_post(base_url, request(response_format="mp3"), good)
    assert status == 400 and answer["error"]["param"] == "response_format"
    # The gateway's guard holds here too: body size, JSON only, Host.
    status, answer = raw_post(base_url, request(input="a" * 70_000), good)
    assert status == 413 and set(answer["error"]) == {"message", "type", "param", "code"}
    status, answer = raw_post(base_url, b"input=hello", {**good, "Content-Type": "text/plain"})
    assert status == 415 and answer["error"]["type"] == "invalid_request_error"
    status, answer = raw_post(base_url, request(), {**good, "Host": "attacker.example"})
    assert status == 421 and "error" in answer
    assert session.timeline.wait_for(lambda e: e["stage"] == "web_refused" and e["data"]["status"] == 421, 10, start)
    refused = [e for e in session.timeline.events[start:] if e["stage"] == "web_refused"]
    assert {e["data"]["status"] for e in refused} >= {400, 401, 413, 415, 421}  # each on the timeline
    assert token not in json.dumps(session.timeline.events)  # never on the timeline


def test_a_second_system_speaks_through_the_first_ones_gateway_with_lips_from_the_audio(server, speaker):
    from clients.analysis import MouthMeter

    server_session, _, token = server
    session, collector = speaker
    adapters = session.control.call("adapters")
    assert adapters["active"] == "openai_speech" and adapters["adapters"]["openai_speech"]["determinism"] == "server_side"
    assert token not in json.dumps(adapters)  # the key stays in the environment
    served_before = len([e for e in server_session.timeline.events if e["stage"] == "speech"])
    start = len(session.timeline.events)
    r, sources, done = mouth_follows_envelope(session, collector, MouthMeter(session.config))
    events = session.timeline.events[start:]
    synth = [e for e in events if e["stage"] == "synth" and e["result"] == "ok"
             and e["utterance_id"] == done["utterance_id"] and e["data"]["audio_ms"] > 0]
    speech_audio = np.concatenate([np.frombuffer(p.pcm, np.int16) for p in sorted(
        collector.packets, key=lambda p: p.frame_index) if p.kind == "speech"])
    heard = transcribe(speech_audio, collector.packets[0].sample_rate)
    print(f"\nmouth opening vs audio level through the OpenAI speech API: r = {r:.3f}; heard: {heard!r}")
    assert synth and {e["data"]["adapter"] for e in synth} == {"openai_speech"}
    assert sources == {"audio"}  # no alignment from the API: visemes named from the sound
    assert r > 0.5
    assert not [e for e in events if e["stage"] == "present" and e["result"] == "underflow"]
    assert not [e for e in events if e["stage"] == "synth" and e["result"] == "error"]
    assert len(PARAGRAPH_KEY_WORDS & set(words(heard))) >= 6, heard
    served = [e for e in server_session.timeline.events if e["stage"] == "speech" and e["result"] == "ok"]
    assert len(served) - served_before >= len(synth)  # every chunk was served by system A's gateway
