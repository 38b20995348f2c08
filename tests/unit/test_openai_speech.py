"""The openai_speech adapter against a real HTTP server (the standard library's, in a thread of
this process) that answers POST /v1/audio/speech the way each test scripts it: streamed PCM and
WAV cut at awkward places, error answers, a runaway stream, a silent server; and the TTS actor
turning a failing server into a timeline error and a fallback."""

from __future__ import annotations

import http.server
import json
import struct
import threading
import time

import numpy as np
import pytest

from actors.adapters import SynthesisCancelled, make_adapter
from actors.adapters.openai_speech import OpenAISpeechError, WavStream, speech_url
from actors.testing import RecordingContext
from actors.tts import Tts
from clients.ports import write_private_config
from persona.voice import load_voice
from protocol import AudioChunk, Credit, TextChunk
from protocol.config import ConfigError, load_config

RATE = 24000
KEY_ENV = "PERSONAS_TEST_SPEECH_KEY"


def syllables(seconds: float, rate: int = RATE) -> np.ndarray:
    """A voiced sound with a syllable rhythm (4 Hz envelope): speech-like enough to have an
    audible span and something for the lips to follow."""
    t = np.arange(int(seconds * rate)) / rate
    envelope = np.clip(np.sin(2 * np.pi * 4 * t), 0, None)
    return (9000 * envelope * np.sin(2 * np.pi * 180 * t) * (1 + 0.3 * np.sin(2 * np.pi * 900 * t))).astype(np.int16)


def wav_bytes(pcm: np.ndarray, rate: int, data_size: int | None = 0xFFFFFFFF, channels: int = 1,
              extra_chunk: bytes = b"") -> bytes:
    size = len(pcm) * 2 if data_size is None else data_size
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * 2 * channels, 2 * channels, 16)
    return (b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
            + extra_chunk + b"data" + struct.pack("<I", size) + pcm.tobytes())


class ScriptedServer:
    """A real HTTP/1.1 server; ``answer(handler, request)`` writes each response. Keeps every
    request (path, headers, JSON body) and how many body bytes each answer managed to write."""

    def __init__(self, answer):
        self.answer, self.requests, self.written = answer, [], []
        self.stop = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, "headers": dict(self.headers), "json": body})
                server.answer(self, body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> "ScriptedServer":
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()  # a stalled answer ends now
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)

    # -- answers ----------------------------------------------------------------------------------
    def chunked(self, handler, pieces, content_type="audio/pcm", status=200, pause_s=0.0) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        written = 0
        try:
            for piece in pieces:
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                handler.wfile.flush()
                written += len(piece)
                if pause_s and self.stop.wait(pause_s):
                    return
            handler.wfile.write(b"0\r\n\r\n")
        except OSError:  # the client hung up: what a refusal or a cancel does
            pass
        finally:
            self.written.append(written)

    def plain(self, handler, status, body: bytes, content_type="application/json") -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)


def split_awkwardly(data: bytes, sizes=(1, 7, 333, 2, 4096, 3)) -> list[bytes]:
    """Pieces of odd sizes: samples and headers are cut in the middle."""
    out, at, i = [], 0, 0
    while at < len(data):
        out.append(data[at:at + sizes[i % len(sizes)]])
        at += sizes[i % len(sizes)]
        i += 1
    return out


def adapter_for(url: str, **keys):
    settings = {"base_url": url, "voice": "", "api_key_env": "", "timeout_s": 2.0, **keys}
    config = load_config(overrides=[f"openai_speech.{k}={json.dumps(v)}" for k, v in settings.items()])
    adapter = make_adapter("openai_speech", config)
    adapter.load()
    return adapter


def test_pcm_is_read_as_it_streams_in_whatever_the_cuts(monkeypatch):
    pcm = syllables(1.5)
    with ScriptedServer(lambda h, _: server.chunked(h, split_awkwardly(pcm.tobytes()))) as server:
        monkeypatch.setenv(KEY_ENV, "sk-test-123")
        adapter = adapter_for(server.url + "/v1/", api_key_env=KEY_ENV)  # a base_url with /v1 is not doubled
        result = adapter.synthesize("Good morning, world. Nice day.", load_voice("brisk"))
    assert np.array_equal(result.pcm, pcm) and result.sample_rate == RATE
    assert result.timing == "none" and result.phonemes == [] and result.determinism == "server_side"
    anchors = result.word_anchors  # a guess, spread over the audible span: in order, one per word
    assert len(anchors) == 5 and [s for _, s in anchors] == sorted(s for _, s in anchors)
    (request,) = server.requests
    assert request["path"] == "/v1/audio/speech"
    assert request["headers"]["Authorization"] == "Bearer sk-test-123"
    assert request["json"] == {"model": "gpt-4o-mini-tts", "input": "Good morning, world. Nice day.", "voice": "brisk",
                               "response_format": "pcm", "speed": load_voice("brisk").pace}
    assert "sk-test" not in json.dumps(adapter.describe())  # the key is never in the descriptor


def test_a_streamed_wav_states_its_rate_and_its_data_runs_to_the_end():
    pcm = syllables(0.8, 16000)
    listing = b"LIST" + struct.pack("<I", 5) + b"INFO!" + b"\x00"  # an odd-sized chunk, padded, before the data
    body = wav_bytes(pcm, 16000, extra_chunk=listing)
    with ScriptedServer(lambda h, _: server.chunked(h, split_awkwardly(body), "audio/wav")) as server:
        result = adapter_for(server.url, response_format="wav").synthesize("Hello.", load_voice("joe"))
    assert result.sample_rate == 16000 and np.array_equal(result.pcm, pcm)
    # A WAV that states its data size and then keeps the connection open: the adapter stops at the
    # end of the data it declared, it does not wait for the server to close.
    declared = wav_bytes(pcm, 16000, data_size=None)
    with ScriptedServer(lambda h, _: server.chunked(h, [declared, b"junk"], "audio/wav", pause_s=5)) as server:
        started = time.monotonic()
        result = adapter_for(server.url, response_format="wav", timeout_s=10.0).synthesize("Hello.", load_voice("joe"))
    assert np.array_equal(result.pcm, pcm) and time.monotonic() - started < 4
    # A WAV that states its data size: what follows the data is not audio.
    stream = WavStream()
    fixed = wav_bytes(pcm[:100], 16000, data_size=None) + b"trailing junk"
    assert b"".join(stream.feed(p) for p in split_awkwardly(fixed)) == pcm[:100].tobytes()


OPENAI_400 = json.dumps({"error": {"message": "Invalid voice 'zed'", "type": "invalid_request_error"}}).encode()


@pytest.mark.parametrize("fmt, answer, expected", [
    ("pcm", lambda s, h: s.plain(h, 400, OPENAI_400), "HTTP 400 Bad Request from http://127.0.0.1:"),
    ("pcm", lambda s, h: s.plain(h, 500, b"<html>upstream exploded</html>", "text/html"), "upstream exploded"),
    ("pcm", lambda s, h: s.plain(h, 200, b'{"error": {"message": "quota used up"}}'),
     "application/json instead of audio: quota used up"),
    ("wav", lambda s, h: s.chunked(h, [b"ID3\x04mp3 frames"], "audio/mpeg"), "not a WAV stream"),
    ("wav", lambda s, h: s.chunked(h, [wav_bytes(syllables(0.2), RATE, channels=2)], "audio/wav"), "only 16-bit mono PCM"),
    ("wav", lambda s, h: s.chunked(h, [b"RIFF\xff\xff\xff\xffWAVEfmt "], "audio/wav"), "ended before its data"),
    ("pcm", lambda s, h: s.chunked(h, []), "sent no audio"),
    ("pcm", lambda s, h: s.chunked(h, [b"ID3\x04mp3 frames"], "audio/mpeg"), "answered audio/mpeg to a request for raw pcm"),
])
def test_a_failing_or_wrong_answer_is_an_error_that_says_what_the_server_said(fmt, answer, expected):
    with ScriptedServer(lambda h, _: answer(server, h)) as server:
        with pytest.raises(OpenAISpeechError) as raised:
            adapter_for(server.url, response_format=fmt).synthesize("Hello.", load_voice("joe"))
    assert expected in str(raised.value), str(raised.value)
    if "HTTP 400" in expected:
        assert "Invalid voice 'zed'" in str(raised.value)  # OpenAI's message, not the JSON around it


def test_a_busy_server_is_asked_again_after_its_retry_after_then_it_is_an_error():
    busy = json.dumps({"error": {"message": "all engines busy"}}).encode()

    def busy_once(handler, _):
        if len(server.requests) == 1:
            handler.send_response(429)
            handler.send_header("Retry-After", "0.2")
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(busy)))
            handler.end_headers()
            handler.wfile.write(busy)
        else:
            server.chunked(handler, [syllables(0.5).tobytes()])

    with ScriptedServer(busy_once) as server:
        started = time.monotonic()
        result = adapter_for(server.url).synthesize("Hello.", load_voice("joe"))
        assert len(server.requests) == 2 and len(result.pcm) == RATE // 2 and time.monotonic() - started >= 0.2
    with ScriptedServer(lambda h, _: server.plain(h, 503, busy)) as server:
        with pytest.raises(OpenAISpeechError, match="HTTP 503 .*all engines busy"):
            adapter_for(server.url).synthesize("Hello.", load_voice("joe"))
        assert len(server.requests) == 3  # the first try and two more, then it is the engine pool's error


def test_more_audio_than_the_cap_is_refused_and_the_rest_is_not_read():
    second = syllables(1.0).tobytes()
    with ScriptedServer(lambda h, _: server.chunked(h, (second for _ in range(600)), pause_s=0.001)) as server:
        started = time.monotonic()
        with pytest.raises(OpenAISpeechError, match="more than 2 s of audio"):
            adapter_for(server.url, max_audio_s=2.0).synthesize("Hello.", load_voice("joe"))
        elapsed = time.monotonic() - started
        deadline = time.monotonic() + 5
        while not server.written and time.monotonic() < deadline:
            time.sleep(0.02)
    assert elapsed < 3.0
    assert server.written and server.written[0] < 100 * len(second)  # the server stopped long before its 600 s


def test_a_silent_server_times_out_and_cancel_ends_a_request_at_once():
    def stall(handler, _):
        server.chunked(handler, (syllables(0.1).tobytes() for _ in range(2)), pause_s=30)

    with ScriptedServer(stall) as server:
        adapter = adapter_for(server.url, timeout_s=0.5)
        started = time.monotonic()
        with pytest.raises(OpenAISpeechError, match="TimeoutError|timed out"):
            adapter.synthesize("Hello.", load_voice("joe"))
        assert time.monotonic() - started < 3.0  # one wait of timeout_s, not the server's 30 s

        adapter = adapter_for(server.url, timeout_s=20.0)
        timer = threading.Timer(0.3, adapter.cancel)
        timer.start()
        started = time.monotonic()
        with pytest.raises(SynthesisCancelled):
            adapter.synthesize("Hello.", load_voice("joe"))
        assert time.monotonic() - started < 2.0
        timer.join()


def test_the_key_is_read_from_the_named_variable_and_a_missing_one_is_named(monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(OpenAISpeechError, match=f"{KEY_ENV} .* is not set"):
        adapter_for("http://127.0.0.1:9", api_key_env=KEY_ENV)
    with pytest.raises(ConfigError, match="openai_speech.base_url"):
        load_config(overrides=['openai_speech.base_url="http://user:secret@example.com"'])
    with pytest.raises(ConfigError, match="openai_speech.response_format"):
        load_config(overrides=['openai_speech.response_format="mp3"'])
    assert speech_url("https://api.example.com/v1") == ("https", "api.example.com", 443, "/v1/audio/speech")
    assert speech_url("http://10.0.0.2:8080/openai") == ("http", "10.0.0.2", 8080, "/openai/v1/audio/speech")


def test_the_tts_actor_names_lips_from_the_audio_and_falls_back_when_the_server_fails(tmp_path):
    """The real TTS actor (RecordingContext): the server's audio gets lips from the audio, and a
    chunk the server refuses is an engine_error on the timeline, with the server's words, spoken
    by the fallback."""
    def answer(handler, request):
        if "refuse" in request["input"]:
            server.plain(handler, 500, json.dumps({"error": {"message": "the model crashed"}}).encode())
        else:
            server.chunked(handler, split_awkwardly(syllables(1.0).tobytes()))

    with ScriptedServer(answer) as server:
        config = load_config(write_private_config(tmp_path / "c.toml", {
            "tts": {"adapters": ["openai_speech", "espeak"], "adapter": "openai_speech", "fallback": "espeak"},
            "openai_speech": {"base_url": server.url, "voice": "", "api_key_env": "", "timeout_s": 5.0}}))
        with RecordingContext("tts", config) as ctx:
            tts = Tts(ctx)
            try:
                ctx.deliver(tts, Credit(link="tts->stitcher", epoch=0, amount=60_000, unit="ms"))
                for seq, text in enumerate(["The server speaks this.", "The server will refuse this one."]):
                    ctx.deliver(tts, TextChunk(epoch=0, utterance_id=0, sequence_id=seq, text=text, boundary=".",
                                               final=seq == 1))
                deadline = time.monotonic() + 30
                while len(ctx.of_type("stitcher", AudioChunk)) < 2 and time.monotonic() < deadline:
                    tts.step()
                    time.sleep(0.005)
            finally:
                tts.pool.close()
    chunks = ctx.of_type("stitcher", AudioChunk)
    assert [c.adapter for c in chunks] == ["openai_speech", "espeak"]
    assert chunks[0].sample_rate == RATE and chunks[0].phonemes  # visemes named from the sound
    lips = {e["data"]["adapter"]: e["data"]["lips"] for e in ctx.events_of("synth", "ok")}
    assert lips == {"openai_speech": "audio", "espeak": "engine"}
    (error,) = [e for e in ctx.events_of("synth", "error") if e["data"]["code"] == "engine_error"]
    assert "HTTP 500" in error["data"]["detail"] and "the model crashed" in error["data"]["detail"]
    assert [e["data"]["reason"] for e in ctx.events_of("swap")] == ["error"]
    assert server.requests[0]["json"]["voice"] == "joe"  # voice "" = the voice schema's name


def test_a_cancel_before_the_request_is_sent_still_applies():
    """The worker had not connected yet when the barge-in came: nothing to shut down, so the
    flag must stop the request (else the whole sentence is synthesised and the engine stays busy)."""
    with ScriptedServer(lambda handler, _: server.chunked(handler, [syllables(0.5).tobytes()])) as server:
        adapter = adapter_for(server.url)
        adapter.new_call()
        adapter.cancel()
        with pytest.raises(SynthesisCancelled):
            adapter.synthesize("Hello.", load_voice("joe"))
        adapter.new_call()  # the next call is not affected
        assert len(adapter.synthesize("Hello.", load_voice("joe")).pcm) > 0
