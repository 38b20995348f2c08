"""The gateway's POST /v1/audio/speech in this process: the real route handler (gateway.speech)
with a real espeak engine behind a real aiohttp server, asked over a real socket. How input is
cut into sentences, what the answer is, what a busy engine does, and that a client hanging up
frees its engine. (The whole gateway, its guard and the official openai client: tests/e2e.)"""

from __future__ import annotations

import asyncio
import http.client
import json
import struct
import threading
import time

import pytest
from aiohttp import web

from gateway import speech
from gateway.speech import SpeechRefusal, SpeechService, sentences
from protocol.config import load_config

LONG = " ".join(f"This is sentence number {n}, said slowly and at some length." for n in range(40))


class SpeechServer:
    """The route on an aiohttp server in a thread; ``events`` holds what it put on the timeline."""

    def __init__(self, workers: int = 1):
        config = load_config(overrides=['web.speech_adapter="espeak"', f"web.speech_workers={workers}"])
        self.events: list[tuple] = []
        self.service = SpeechService(config, lambda *a, **k: self.events.append((a, k)),
                                     lambda *a: self.events.append((("web_refused",), {"args": a})))
        self.ready = threading.Event()

    def __enter__(self) -> "SpeechServer":
        self.thread = threading.Thread(target=asyncio.run, args=(self.serve(),), daemon=True)
        self.thread.start()
        assert self.ready.wait(10)
        return self

    async def serve(self) -> None:
        app = web.Application()
        app.router.add_route("POST", speech.ROUTE, self.service.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        self.loop, self.stop = asyncio.get_running_loop(), asyncio.Event()
        self.ready.set()
        try:
            await asyncio.wait_for(self.stop.wait(), 60)
        finally:
            await runner.cleanup()
            self.service.close()

    def __exit__(self, *exc) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(timeout=10)

    def connect(self, body: dict) -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.request("POST", speech.ROUTE, json.dumps(body), {"Content-Type": "application/json"})
        return conn

    def post(self, **fields) -> tuple[int, dict, bytes]:
        conn = self.connect({"model": "tts-1", "voice": "joe", **fields})
        try:
            reply = conn.getresponse()
            return reply.status, dict(reply.getheaders()), reply.read()
        finally:
            conn.close()


def test_input_is_cut_where_the_parser_cuts_and_markers_are_not_spoken():
    assert sentences("Dr. Smith arrived at 3.14 pm. Hello <v:expression:smile>world! Is it") == [
        "Dr. Smith arrived at 3.14 pm.", "Hello world!", "Is it"]
    assert sentences("<v:blink:now>   ...") == []


def test_the_answer_is_24_khz_whatever_the_engine_and_comes_sentence_by_sentence():
    with SpeechServer() as server:
        status, headers, body = server.post(input="Hello there. How are you today?", response_format="wav")
        assert status == 200 and headers["Content-Type"] == "audio/wav" and headers["Transfer-Encoding"] == "chunked"
        assert headers["X-Sample-Rate"] == "24000" and headers["X-Personas-Model"] == "tts-1"
        assert struct.unpack_from("<HHI", body, 20) == (1, 1, 24000)  # espeak speaks at 22050: resampled
        status, headers, pcm = server.post(input="Hello there. How are you today?", response_format="pcm", speed=2.0)
        assert status == 200 and headers["Content-Type"] == "audio/pcm" and float(headers["X-Personas-Pace"]) == 2.0
        assert len(pcm) < len(body) - 44  # twice the pace: shorter
    meta = next(meta for stage, meta in server.events if stage == ("speech",))
    assert meta["data"]["sentences"] == 2 and meta["data"]["first_audio_ms"] <= meta["duration_ms"]
    assert meta["data"]["audio_ms"] == pytest.approx((len(body) - 44) / 2 / 24, abs=0.2)


def test_a_model_name_that_cannot_be_echoed_and_an_empty_body_are_clear_400s():
    with SpeechServer() as server:
        status, _, body = server.post(model="tts-1\r\nX-Injected: 1", input="Hello.")
        assert status == 400 and json.loads(body)["error"]["param"] == "model"
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        try:
            conn.request("POST", speech.ROUTE, b"", {"Content-Type": "application/json"})
            reply = conn.getresponse()
            error = json.loads(reply.read())["error"]
        finally:
            conn.close()
        assert reply.status == 400 and error["param"] == "model" and "model must be" in error["message"]
    assert sum(1 for stage, _ in server.events if stage == ("web_refused",)) == 2  # both on the timeline


def test_a_busy_engine_makes_a_request_wait_and_too_many_waiting_are_refused_429(monkeypatch):
    monkeypatch.setattr(speech, "QUEUE_WAIT_S", 0.3)
    monkeypatch.setattr(speech, "MAX_WAITING", 1)
    service = SpeechServer(workers=1).service

    async def scenario():
        held = await service.take()
        waiting = asyncio.ensure_future(service.take())
        await asyncio.sleep(0.05)
        with pytest.raises(SpeechRefusal) as crowded:  # one already waits for the one engine
            await service.take()
        service.give_back(held)
        again = await asyncio.wait_for(waiting, 1)  # the waiting request gets the engine
        started = time.monotonic()
        with pytest.raises(SpeechRefusal) as late:  # nobody gives it back within QUEUE_WAIT_S
            await service.take()
        return crowded.value, late.value, time.monotonic() - started, again is held

    crowded, late, waited, same = asyncio.run(scenario())
    service.close()
    for refusal in (crowded, late):
        assert refusal.status == 429 and refusal.code == "engine_busy" and refusal.headers == {"Retry-After": "1"}
    assert 0.25 <= waited < 2.0 and same
    assert json.loads(late.response().body)["error"]["type"] == "rate_limit_error"


def test_a_client_that_hangs_up_mid_stream_frees_its_engine_for_the_next():
    with SpeechServer(workers=1) as server:
        conn = server.connect({"model": "tts-1", "voice": "joe", "input": LONG, "response_format": "pcm"})
        reply = conn.getresponse()
        assert reply.status == 200 and len(reply.read(2000)) == 2000  # audio is flowing ...
        conn.close()  # ... and the client goes away
        started = time.monotonic()
        status, _, pcm = server.post(input="Are you still there?", response_format="pcm")
        assert status == 200 and len(pcm) > 24000  # the one engine served the next request
        assert time.monotonic() - started < 10
    cut = [meta for stage, meta in server.events if stage in (("speech", "error"), ("speech", "drop"))]
    assert cut, server.events  # the cut request is on the timeline, not silently lost
