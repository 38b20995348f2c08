"""``POST /v1/audio/speech``: Personas' voices behind OpenAI's speech API, served by the gateway.

The gateway owns its own engine instances (``web.speech_adapter``, made by
``actors.adapters.make_adapter`` and loaded on the first request), so a speech request never
touches the avatar pipeline: no credit, no epoch, no frame, nothing on its hot path. Synthesis
runs in a pool of ``web.speech_workers`` threads, one engine instance each; a request that
finds every engine busy waits for one (at most QUEUE_WAIT_S, at most MAX_WAITING per engine
waiting), else it is answered 429 with Retry-After. A client that goes away cancels its
synthesis (its engine is free again within a poll). ``input`` is cut into
sentences by the parser's own rules and each sentence's audio is sent as soon as it is made
(chunked transfer) while the next one is synthesised.

Request (JSON): ``model`` (required, echoed in ``X-Personas-Model``), ``input`` (1..4096
characters), ``voice`` (a voice schema's name from configs/voices or ``voice.dirs``, or
``{"id": NAME}``), ``response_format`` (``pcm`` | ``wav``; omitted: ``wav``), ``speed`` (0.25..4:
multiplies the voice's pace, held within the schema's 0.5..2), ``stream_format`` (``audio`` only),
``instructions`` (accepted, not used: no engine here takes them). The answer is 16-bit mono at
24000 Hz, OpenAI's rate, whatever the engine's own (resampled): raw for ``pcm``, after a
streaming RIFF header for ``wav``. Errors are OpenAI's shape: ``{"error": {"message", "type",
"param", "code"}}``.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
from aiohttp import web

from actors.adapters import TTSAdapter, make_adapter
from actors.dsp import resample
from actors.stream_parser import ParsedChunk, StreamParser
from persona.voice import VOICE_NAME, VoiceSchema, VoiceSchemaError, load_voice, voice_dirs

ROUTE = "/v1/audio/speech"
#: Paths whose answers, refusals included, are in OpenAI's shape.
OPENAI_PREFIX = "/v1/"
#: What OpenAI's clients expect of pcm (and what a Personas openai_speech adapter assumes).
OUTPUT_RATE = 24000
MAX_INPUT_CHARS = 4096
FORMATS = {"pcm": "audio/pcm", "wav": "audio/wav"}
SPEED_RANGE = (0.25, 4.0)
PACE_RANGE = (0.5, 2.0)  # what a voice schema allows (persona/voice.py)
#: One sentence per synthesis; a longer one is cut at its last space (as the parser does).
SENTENCE_MAX_CHARS = 400
#: Waits: the first request loads the engine (Piper: seconds); a sentence; a client's reading.
LOAD_TIMEOUT_S = 120.0
SENTENCE_TIMEOUT_S = 60.0
WRITE_TIMEOUT_S = 30.0
#: A request waits this long for a busy engine; this many per engine may wait; beyond: 429.
QUEUE_WAIT_S = 10.0
MAX_WAITING = 4
#: While a sentence is made, whether its client is still there is checked this often.
CLIENT_POLL_S = 0.1
MAX_VOICES = 256
ERROR_TYPES = {429: "rate_limit_error", 503: "server_error", 500: "server_error"}
REFUSAL_CODES = {401: "invalid_api_key", 403: "forbidden_origin", 404: "not_found", 405: "method_not_allowed",
                 413: "request_too_large", 415: "unsupported_media_type", 421: "misdirected_request"}


def wav_header(sample_rate: int) -> bytes:
    """A RIFF/WAVE header for a stream of unknown length (sizes set to the maximum)."""
    return (b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
            + b"data" + struct.pack("<I", 0xFFFFFFFF))


def openai_error(status: int, message: str, code: str | None = None, param: str | None = None,
                 headers: dict | None = None) -> web.Response:
    """An error as OpenAI's API and its clients have it."""
    kind = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return web.json_response({"error": {"message": message, "type": kind, "param": param, "code": code}},
                             status=status, headers=headers)


def openai_refusal(status: int, why: str) -> web.Response:
    """The gateway guard's refusal (Host, Origin, token, JSON), in OpenAI's shape."""
    return openai_error(status, why, REFUSAL_CODES.get(status, "invalid_request"))


class SpeechRefusal(Exception):
    """A request this route will not serve; becomes an OpenAI-shaped 4xx/5xx before any audio."""

    def __init__(self, status: int, message: str, code: str, param: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.headers = status, message, code, param, headers

    def response(self) -> web.Response:
        return openai_error(self.status, self.message, self.code, self.param, self.headers)


@dataclass(frozen=True)
class SpeechOrder:
    """One validated request."""

    model: str
    sentences: tuple[str, ...]
    chars: int
    voice: VoiceSchema
    response_format: str
    speed: float


def sentences(text: str) -> list[str]:
    """``text`` cut where the pipeline's parser would cut it (markers stripped); pieces with
    nothing to say (no letter or digit) are left out."""
    parser = StreamParser(max_chunk_chars=SENTENCE_MAX_CHARS)
    events = parser.feed(text) + parser.end()
    return [e.text.strip() for e in events if isinstance(e, ParsedChunk) and any(c.isalnum() for c in e.text)]


class SpeechEngine:
    """One engine instance: used by one request at a time, its model loaded in a pool thread
    when first needed. ``job`` is the synthesis running or last run on it."""

    def __init__(self, name: str, config: dict):
        self.adapter: TTSAdapter = make_adapter(name, config)
        self.loaded = False
        self.job: asyncio.Future | None = None

    def speak(self, text: str, voice: VoiceSchema) -> np.ndarray:
        """int16 PCM at OUTPUT_RATE (runs in a pool thread)."""
        if not self.loaded:
            self.adapter.load()
            self.loaded = True
        synthesis = self.adapter.synthesize(text, voice)
        if synthesis.sample_rate == OUTPUT_RATE or not len(synthesis.pcm):
            return synthesis.pcm
        return resample(synthesis.pcm, synthesis.sample_rate, OUTPUT_RATE)

    def cancel(self) -> None:
        self.adapter.cancel()


class SpeechService:
    """The route's handler, its engines and their threads."""

    def __init__(self, config: dict, emit: Callable[..., None], refused: Callable[[str, int, str, str | None], None]):
        self.config, self.emit, self.refused = config, emit, refused
        self.engine_name = config["web"]["speech_adapter"]
        workers = int(config["web"]["speech_workers"])
        self.unavailable = ""  # why the engine cannot be made here: the route answers 503, the page lives on
        try:
            self.engines = [SpeechEngine(self.engine_name, config) for _ in range(workers)] if self.engine_name else []
        except Exception as exc:  # e.g. its voice package is not installed
            self.engines, self.unavailable = [], f"{type(exc).__name__}: {exc}"[:300]
        self.idle: asyncio.Queue[SpeechEngine] = asyncio.Queue(maxsize=max(len(self.engines), 1))
        for engine in self.engines:
            self.idle.put_nowait(engine)
        self.waiting = 0
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="speech")
        self.dirs = voice_dirs(config)
        self.counts = {"speech_requests": 0, "speech_busy": 0, "speech_failed": 0}

    def describe(self) -> dict:
        return {"route": f"POST {ROUTE}", "engine": self.engine_name or None, "workers": len(self.engines),
                "unavailable": self.unavailable or None,
                "formats": sorted(FORMATS), "sample_rate": OUTPUT_RATE, "voices": self.voice_names()}

    def prepare(self) -> None:
        """Before READY: import what the engine's load needs (see TTSAdapter.heavy_modules) and
        what resampling needs, so a first request never starves this process's heartbeat. The
        model itself loads on the first request."""
        for engine in self.engines[:1]:
            try:
                for module in (*engine.adapter.heavy_modules, "scipy.signal"):
                    importlib.import_module(module)
            except ImportError as exc:
                self.engines, self.unavailable = [], f"{type(exc).__name__}: {exc}"[:300]

    def close(self) -> None:
        for engine in self.engines:
            engine.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)

    # -- the route --------------------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.counts["speech_requests"] += 1
        try:
            if not self.engine_name:
                raise SpeechRefusal(404, f"{ROUTE} is not served here (web.speech_adapter = \"\")", "not_served")
            if self.unavailable:
                raise SpeechRefusal(503, f"the {self.engine_name} engine cannot run here: {self.unavailable}",
                                    "engine_unavailable")
            # The guard has checked that the body is a JSON object (an empty body counts as {}).
            body = json.loads(await request.read() or b"{}")
            # order() reads voice files: off the event loop, which serves every other client.
            order = await asyncio.to_thread(self.order, body)
            engine = await self.take()
        except SpeechRefusal as refusal:
            self.refused(f"POST {ROUTE}", refusal.status, refusal.message, request.remote)
            return refusal.response()
        try:
            return await self.speak(request, order, engine)
        except SpeechRefusal as refusal:  # the engine failed before any audio left
            self.counts["speech_failed"] += 1
            self.emit("speech", "error", surface="http", data={"status": refusal.status, "why": refusal.message})
            return refusal.response()
        finally:
            self.give_back(engine)

    async def take(self) -> SpeechEngine:
        """An idle engine, waiting a while for one (a client that just hung up may still be
        freeing it); 429 when too many wait or the wait is over."""
        if self.idle.empty() and self.waiting >= MAX_WAITING * len(self.engines):
            raise self.busy(f"{self.waiting} requests already wait for the speech engine(s)")
        self.waiting += 1
        try:
            return await asyncio.wait_for(self.idle.get(), QUEUE_WAIT_S)
        except asyncio.TimeoutError:
            raise self.busy(f"no speech engine was free within {QUEUE_WAIT_S:g} s") from None
        finally:
            self.waiting -= 1

    def busy(self, why: str) -> SpeechRefusal:
        self.counts["speech_busy"] += 1
        return SpeechRefusal(429, f"{why} ({len(self.engines)} engine(s), web.speech_workers); try again shortly",
                             "engine_busy", headers={"Retry-After": "1"})

    def give_back(self, engine: SpeechEngine) -> None:
        """Idle again once its thread is done (a cancelled synthesis may still be finishing)."""
        def freed(job: asyncio.Future) -> None:
            if not job.cancelled():
                job.exception()  # a cancelled engine's error was expected: retrieved, not logged as lost
            self.idle.put_nowait(engine)

        if engine.job is None:
            self.idle.put_nowait(engine)
        else:
            engine.job.add_done_callback(freed)  # at once when it is done already

    async def speak(self, request: web.Request, order: SpeechOrder, engine: SpeechEngine) -> web.StreamResponse:
        """The first sentence is made before the answer starts (so a failing engine is an
        error status, not a cut stream); then each one is sent while the next is made."""
        started = time.monotonic()
        try:
            pcm = await self.synthesize(request, engine, order.sentences[0], order.voice)
        except ConnectionResetError:  # nobody to answer
            self.emit("speech", "drop", surface="http", data={"why": "the client went away", "chars": order.chars})
            return web.Response(status=499, reason="Client Closed Request")
        except Exception as exc:
            raise SpeechRefusal(503, f"the {self.engine_name} engine failed: {type(exc).__name__}: {exc}"[:300],
                                "engine_unavailable") from None
        first_audio_ms = (time.monotonic() - started) * 1000
        response = web.StreamResponse(headers={
            "Content-Type": FORMATS[order.response_format], "Cache-Control": "no-store",
            "X-Sample-Rate": str(OUTPUT_RATE), "X-Personas-Model": order.model, "X-Personas-Voice": order.voice.name,
            "X-Personas-Engine": self.engine_name, "X-Personas-Pace": f"{order.voice.pace:g}"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        samples = await self.stream(request, response, order, engine, pcm)
        if samples < 0:
            return response  # cut: said on the timeline by stream()
        self.emit("speech", duration_ms=(time.monotonic() - started) * 1000, surface="http", data={
            "model": order.model[:80], "voice": order.voice.name, "format": order.response_format, "chars": order.chars,
            "sentences": len(order.sentences), "audio_ms": round(samples * 1000 / OUTPUT_RATE, 1),
            "first_audio_ms": round(first_audio_ms, 1), "engine": self.engine_name})
        return response

    async def stream(self, request: web.Request, response: web.StreamResponse, order: SpeechOrder,
                     engine: SpeechEngine, pcm: np.ndarray) -> int:
        """Write every sentence's audio; a failure now can only end the connection (a cut stream,
        never a shorter one that looks whole). Returns the samples sent, -1 when cut."""
        sent = 0
        try:
            if order.response_format == "wav":
                await asyncio.wait_for(response.write(wav_header(OUTPUT_RATE)), WRITE_TIMEOUT_S)
            for following in (*order.sentences[1:], None):
                upcoming = (asyncio.ensure_future(self.synthesize(request, engine, following, order.voice))
                            if following else None)
                try:
                    await asyncio.wait_for(response.write(np.ascontiguousarray(pcm).tobytes()), WRITE_TIMEOUT_S)
                except BaseException:
                    if upcoming is not None:
                        upcoming.cancel()
                        engine.cancel()
                    raise
                sent += len(pcm)
                if upcoming is not None:
                    pcm = await upcoming  # bounded by the sentence's own timeout
            await asyncio.wait_for(response.write_eof(), WRITE_TIMEOUT_S)
        except Exception as exc:
            self.counts["speech_failed"] += 1
            self.emit("speech", "error", surface="http", data={"why": f"{type(exc).__name__}: {exc}"[:200],
                                                               "samples_sent": sent, "action": "connection closed"})
            if request.transport is not None:
                request.transport.abort()  # the client sees a cut stream, never one that looks whole
            return -1
        return sent

    async def synthesize(self, request: web.Request, engine: SpeechEngine, text: str, voice: VoiceSchema) -> np.ndarray:
        """One sentence in a pool thread, within its timeout (the first pays for loading); a
        client gone meanwhile cancels it, so its engine is free for the next request."""
        loop = asyncio.get_running_loop()
        timeout = SENTENCE_TIMEOUT_S if engine.loaded else LOAD_TIMEOUT_S
        deadline = loop.time() + timeout
        engine.adapter.new_call()  # the engine is idle here: an earlier request's cancel is over
        engine.job = job = loop.run_in_executor(self.executor, engine.speak, text, voice)
        while not job.done():
            if request.transport is None or request.transport.is_closing():
                engine.cancel()
                raise ConnectionResetError("the client went away")
            if loop.time() > deadline:
                engine.cancel()
                raise TimeoutError(f"no audio within {timeout:g} s")
            await asyncio.wait({job}, timeout=CLIENT_POLL_S)  # never cancels the job itself
        return job.result()

    # -- what is asked ----------------------------------------------------------------------------
    def order(self, body: dict) -> SpeechOrder:
        model = body.get("model")
        if not isinstance(model, str) or not 0 < len(model.strip()) <= 256 or not model.isprintable():
            # Echoed in a header: a control character would fail the answer after synthesis.
            raise SpeechRefusal(400, "model must be a non-empty printable string (any name: it is echoed)",
                                "invalid_value", "model")
        text = body.get("input")
        if not isinstance(text, str) or not text.strip():
            raise SpeechRefusal(400, "input must be a non-empty string", "invalid_value", "input")
        if len(text) > MAX_INPUT_CHARS:
            raise SpeechRefusal(400, f"input is {len(text)} characters; at most {MAX_INPUT_CHARS} are taken",
                                "string_above_max_length", "input")
        response_format = body.get("response_format") or "wav"
        if response_format not in FORMATS:
            raise SpeechRefusal(400, f"response_format {str(response_format)[:20]!r} is not served here: "
                                f"{' or '.join(FORMATS)}", "unsupported_value", "response_format")
        if body.get("stream_format") not in (None, "audio"):
            raise SpeechRefusal(400, "stream_format: only 'audio' is served", "unsupported_value", "stream_format")
        speed = body.get("speed")
        speed = 1.0 if speed is None else speed
        if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not SPEED_RANGE[0] <= speed <= SPEED_RANGE[1]:
            raise SpeechRefusal(400, f"speed must be a number within {SPEED_RANGE[0]}..{SPEED_RANGE[1]}",
                                "invalid_value", "speed")
        voice = self.voice(body.get("voice"))
        pace = min(max(voice.pace * float(speed), PACE_RANGE[0]), PACE_RANGE[1])
        cut = sentences(text)
        if not cut:
            raise SpeechRefusal(400, "input has nothing to speak (no letter or digit outside markers)",
                                "invalid_value", "input")
        return SpeechOrder(model.strip(), tuple(cut), len(text), replace(voice, pace=pace), response_format, float(speed))

    def voice(self, asked) -> VoiceSchema:
        name = asked.get("id") if isinstance(asked, dict) else asked
        names = self.voice_names()
        if not isinstance(name, str) or name not in names:
            shown = repr(name[:40]) if isinstance(name, str) else "missing"
            raise SpeechRefusal(400, f"voice {shown} is not a voice of this server; voices: {', '.join(names)}",
                                "invalid_value", "voice")
        try:
            return load_voice(name, self.dirs)
        except VoiceSchemaError as exc:
            raise SpeechRefusal(400, str(exc), "invalid_value", "voice") from None

    def voice_names(self) -> list[str]:
        """The voice schemas a request may name: NAME.json in configs/voices and voice.dirs."""
        names: list[str] = []
        for directory in self.dirs:
            try:
                found = sorted(p.stem for p in directory.glob("*.json") if VOICE_NAME.fullmatch(p.stem))
            except OSError:
                continue
            names += [n for n in found if n not in names]
        return names[:MAX_VOICES]
