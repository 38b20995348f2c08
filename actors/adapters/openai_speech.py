"""A client for any server that speaks OpenAI's speech API: OpenAI itself, another Personas'
web gateway, or one of the local servers that copy the API.

Request: ``POST {base_url}/v1/audio/speech`` with JSON ``{model, input, voice,
response_format, speed}`` (a ``base_url`` that already ends in ``/v1``, the form OpenAI's own
clients take, is not doubled). The answer is the audio, read as it streams in (chunked):
``pcm`` is raw 16-bit little-endian mono at ``openai_speech.sample_rate`` (the body does not
say its rate: OpenAI's is 24000 Hz); ``wav`` starts with a RIFF header that states it (a
streaming server writes 0 or 0xFFFFFFFF as the data size, so the data runs to the end).

The API carries no timing. The synthesis says so (``timing = "none"``), and with
``driver.lips = "auto"`` the TTS actor names the visemes from the audio (actors/lips.py).
Word anchors (where visual markers land) are spread over the audible span by character
position: a guess, good to a word or two.

Standard library only (``http.client``): the request runs in the engine's worker thread, every
socket wait is bounded by ``timeout_s`` and the whole answer by RESPONSE_BUDGET_S; ``cancel()``
shuts the socket from another thread, which ends a blocked read at once. Like the Wyoming
client, nothing the server declares is trusted: the audio is capped by ``max_audio_s``, the
WAV header by MAX_WAV_HEADER, an error body by MAX_ERROR_BODY.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import re
import socket
import ssl
import struct
import threading
import time
from urllib.parse import urlsplit

import numpy as np

from .base import Synthesis, SynthesisCancelled, TTSAdapter, voiced_span
from persona.voice import VoiceSchema

#: Bytes asked of the socket per read (a read returns what has arrived, up to this).
READ_SIZE = 16 * 1024
#: The whole answer to one chunk must have arrived within this, however it trickles in.
RESPONSE_BUDGET_S = 120.0
#: An error answer is read up to this many bytes, and quoted up to ERROR_EXCERPT characters.
MAX_ERROR_BODY = 4096
ERROR_EXCERPT = 300
#: RIFF chunks before ``data`` (fmt, LIST, ...) may take this many bytes at most.
MAX_WAV_HEADER = 64 * 1024
#: OpenAI's limit on ``input``; the parser's chunks are far shorter (parser.max_chunk_chars).
MAX_INPUT_CHARS = 4096
#: A busy server (429, 503) is asked again this many times, after its Retry-After (at most
#: MAX_BUSY_WAIT_S): what OpenAI's own clients do. Then it is an error like any other.
BUSY_RETRIES = 2
MAX_BUSY_WAIT_S = 2.0
BUSY_STATUSES = (429, 503)
#: OpenAI's ``speed`` range; the voice schema's pace (0.5..2) always lies inside it.
SPEED_RANGE = (0.25, 4.0)
WAVE_FORMAT_PCM, WAVE_FORMAT_EXTENSIBLE = 1, 0xFFFE
_WORD = re.compile(r"\S+")


class OpenAISpeechError(RuntimeError):
    """The server refused, failed or answered something that is not the audio asked for."""


class ServerBusy(OpenAISpeechError):
    """429 or 503: worth asking again after ``retry_after_s``."""

    def __init__(self, message: str, retry_after_s: float):
        super().__init__(message)
        self.retry_after_s = retry_after_s


#: Encoded or containered audio: never raw PCM, whatever the bytes look like.
CONTAINER_TYPES = frozenset({"audio/mpeg", "audio/mp3", "audio/wav", "audio/x-wav", "audio/wave", "audio/ogg",
                             "audio/opus", "audio/aac", "audio/flac", "audio/x-flac", "audio/webm", "audio/mp4"})


class WavStream:
    """A RIFF/WAVE body read as it arrives: the header (``fmt `` before ``data``) is parsed
    from the first bytes, then every byte of ``data`` is PCM. 16-bit mono PCM only."""

    def __init__(self):
        self.pending = bytearray()  # the header so far (bounded by MAX_WAV_HEADER)
        self.sample_rate = 0
        self.in_data = False
        self.data_left: int | None = None  # None: the data runs to the end of the body

    def feed(self, data: bytes) -> bytes:
        """The PCM bytes among ``data`` (none until the header is complete)."""
        if self.in_data:
            return self._data(data)
        self.pending += data
        if not self._parse_header():
            if len(self.pending) > MAX_WAV_HEADER:
                raise OpenAISpeechError(f"WAV header longer than {MAX_WAV_HEADER} bytes")
            return b""
        rest, self.pending = bytes(self.pending), bytearray()
        return self._data(rest)

    def _data(self, data: bytes) -> bytes:
        if self.data_left is None:
            return data
        data = data[: self.data_left]
        self.data_left -= len(data)
        return data

    def _parse_header(self) -> bool:
        """Consume whole RIFF chunks from ``pending``; True once ``data`` begins."""
        buf = self.pending
        if len(buf) < 12:
            return False
        if buf[:4] != b"RIFF" or buf[8:12] != b"WAVE":
            raise OpenAISpeechError(f"not a WAV stream (starts with {bytes(buf[:12])!r})")
        at = 12
        while len(buf) >= at + 8:
            kind, size = bytes(buf[at:at + 4]), struct.unpack_from("<I", buf, at + 4)[0]
            if kind == b"data":
                if not self.sample_rate:
                    raise OpenAISpeechError("WAV data before its fmt chunk")
                self.in_data = True
                self.data_left = None if size in (0, 0xFFFFFFFF) else size  # streamed: unknown length
                del buf[:at + 8]
                return True
            if size > MAX_WAV_HEADER:
                raise OpenAISpeechError(f"WAV chunk {kind!r} of {size} bytes before the data")
            end = at + 8 + size + (size & 1)  # chunks are padded to even sizes
            if len(buf) < end:
                return False
            if kind == b"fmt ":
                self._format(bytes(buf[at + 8:at + 8 + size]))
            at = end
        return False

    def _format(self, fmt: bytes) -> None:
        if len(fmt) < 16:
            raise OpenAISpeechError("WAV fmt chunk too short")
        tag, channels, rate, _byte_rate, _align, bits = struct.unpack_from("<HHIIHH", fmt)
        if tag == WAVE_FORMAT_EXTENSIBLE and len(fmt) >= 26:
            tag = struct.unpack_from("<H", fmt, 24)[0]  # the sub-format GUID starts with the real tag
        if tag != WAVE_FORMAT_PCM or bits != 16 or channels != 1:
            raise OpenAISpeechError(f"WAV is format {tag}, {bits}-bit, {channels} channel(s): only 16-bit mono PCM is taken")
        if not 8000 <= rate <= 192_000:
            raise OpenAISpeechError(f"WAV sample rate {rate} Hz is out of range")
        self.sample_rate = rate


def speech_url(base_url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path) of the speech route under ``base_url``."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise OpenAISpeechError(f"openai_speech.base_url must be http(s)://HOST[:PORT][/PATH], got {base_url!r}")
    path = parts.path.rstrip("/")
    path += "/audio/speech" if path.endswith("/v1") else "/v1/audio/speech"
    return parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80), path


def error_excerpt(body: bytes) -> str:
    """What an error body says: OpenAI's ``{"error": {"message"}}`` when it is that, else its text."""
    text = body.decode("utf-8", "replace")
    try:
        message = json.loads(text)["error"]["message"]
        if isinstance(message, str):
            text = message
    except (ValueError, KeyError, TypeError):
        pass
    text = " ".join(text.split())
    return text if len(text) <= ERROR_EXCERPT else text[:ERROR_EXCERPT - 3] + "..."


def retry_after(header: str | None) -> float:
    """Seconds a busy server asks us to wait (its Retry-After in seconds), within 0.1..MAX_BUSY_WAIT_S."""
    try:
        seconds = float(header) if header else 0.5
    except ValueError:  # an HTTP date: not worth parsing for a wait this short
        seconds = MAX_BUSY_WAIT_S
    return min(max(seconds, 0.1), MAX_BUSY_WAIT_S) if math.isfinite(seconds) else MAX_BUSY_WAIT_S


def spread_word_anchors(text: str, pcm: np.ndarray, rate: int) -> list[tuple[int, int]]:
    """Each written word's character offset mapped to a sample by its position in the text,
    over the audible span of ``pcm``: a guess for engines that give no timing."""
    span = voiced_span(pcm, rate)
    words = [m.start() for m in _WORD.finditer(text) if any(c.isalnum() for c in m.group())]
    if span is None or not words:
        return []
    first, end = span
    return [(c, first + int((end - first) * c / max(len(text), 1))) for c in words]


class OpenAISpeechAdapter(TTSAdapter):
    name = "openai_speech"

    def __init__(self, config: dict):
        cfg = config["openai_speech"]
        self.base_url = cfg["base_url"]
        self.model, self.voice_name = cfg["model"], cfg["voice"]
        self.response_format = cfg["response_format"]
        self.pcm_rate = int(cfg["sample_rate"])
        self.api_key_env = cfg["api_key_env"]
        self.timeout_s = float(cfg["timeout_s"])
        self.max_audio_s = float(cfg["max_audio_s"])
        self.sample_rate = self.pcm_rate if self.response_format == "pcm" else 0  # wav: learnt from the header
        self.scheme, self.host, self.port, self.path = speech_url(self.base_url)
        self.api_key = ""
        self._current: http.client.HTTPConnection | None = None
        self._cancelled = threading.Event()
        self._lock = threading.Lock()

    def load(self) -> None:
        """Read the key from the environment; the warm-up's request then proves the server
        answers (an unreachable one makes the engine unavailable at start, as for Wyoming)."""
        if self.api_key_env:
            self.api_key = os.environ.get(self.api_key_env, "")
            if not self.api_key:
                raise OpenAISpeechError(f"the environment variable {self.api_key_env} (openai_speech.api_key_env) "
                                        "is not set: it holds the API key")

    def project(self, voice: VoiceSchema) -> dict:
        speed = min(max(voice.pace, SPEED_RANGE[0]), SPEED_RANGE[1])
        return {"voice": self.voice_name or voice.name, "speed": round(speed, 4),
                "unsupported": ["timbre", "prosody", "accent (the server's voice has its own)"]}

    def describe(self) -> dict:
        return {
            "name": self.name, "version": "openai speech API client (http.client)", "streaming": True,
            "unit": "tokens", "granularity": [8, 12, 16, 24, 32, 48, 64], "voices": [self.voice_name or "(voice.persona)"],
            "supports_barge_in": True, "supports_seed": False, "stateful_context": "none",
            "sample_rate": self.sample_rate, "determinism": "server_side", "alignment": "none",
            "limits": {"max_chars": MAX_INPUT_CHARS, "timeout_ms": int(self.timeout_s * 1000),
                       "max_audio_s": self.max_audio_s},
            "features": ["remote", "openai_speech_api", "streamed_response", "no_alignment_lips_from_audio"],
            "server": {"base_url": self.base_url, "model": self.model, "response_format": self.response_format,
                       "api_key_env": self.api_key_env},
            "projects": ["pace->speed"],
        }

    def synthesize(self, text: str, voice: VoiceSchema) -> Synthesis:
        started = time.perf_counter()
        if not text.strip():
            return Synthesis(np.zeros(0, np.int16), self.sample_rate or 24000, determinism="server_side", timing="none")
        if len(text) > MAX_INPUT_CHARS:
            raise OpenAISpeechError(f"{len(text)} characters: the API takes at most {MAX_INPUT_CHARS}")
        for attempt in range(BUSY_RETRIES + 1):
            try:
                pcm, rate = self._attempt(text, voice)
                break
            except ServerBusy as busy:
                if attempt == BUSY_RETRIES:
                    raise
                if self._cancelled.wait(busy.retry_after_s):
                    raise SynthesisCancelled("cancelled") from None
        if not len(pcm):
            raise OpenAISpeechError(f"the server sent no audio for {len(text)} characters")
        self.sample_rate = rate
        return Synthesis(pcm=pcm, sample_rate=rate, word_anchors=spread_word_anchors(text, pcm, rate),
                         render_ms=(time.perf_counter() - started) * 1000, determinism="server_side", timing="none")

    def new_call(self) -> None:
        self._cancelled.clear()

    def cancel(self) -> None:
        """Close the connection under a running request: its blocked read ends now."""
        self._cancelled.set()
        with self._lock:
            conn = self._current
        if conn is not None and conn.sock is not None:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # -- one request --------------------------------------------------------------------------
    def _attempt(self, text: str, voice: VoiceSchema) -> tuple[np.ndarray, int]:
        conn = self._connect()
        try:
            return self._request(conn, text, voice)
        finally:
            with self._lock:
                self._current = None
            conn.close()

    def _connect(self) -> http.client.HTTPConnection:
        if self.scheme == "https":
            conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout_s,
                                               context=ssl.create_default_context())
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
        with self._lock:
            self._current = conn
        if self._cancelled.is_set():  # cancelled before there was a connection to shut down
            raise SynthesisCancelled("cancelled")
        return conn

    def _request(self, conn: http.client.HTTPConnection, text: str, voice: VoiceSchema) -> tuple[np.ndarray, int]:
        knobs = self.project(voice)
        body = json.dumps({"model": self.model, "input": text, "voice": knobs["voice"],
                           "response_format": self.response_format, "speed": knobs["speed"]}).encode()
        headers = {"Content-Type": "application/json", "Accept": "audio/*, application/octet-stream",
                   "User-Agent": "personas-openai-speech"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        try:
            conn.request("POST", self.path, body=body, headers=headers)
            if self._cancelled.is_set():  # cancelled while connecting (no socket to shut down yet)
                raise SynthesisCancelled("cancelled")
            response = conn.getresponse()
            if response.status != 200:
                said = error_excerpt(response.read(MAX_ERROR_BODY))
                why = f"HTTP {response.status} {response.reason} from {self.where}: {said}"
                if response.status in BUSY_STATUSES:
                    raise ServerBusy(why, retry_after(response.getheader("Retry-After")))
                raise OpenAISpeechError(why)
            kind = response.getheader("Content-Type", "").split(";")[0].strip().lower()
            if kind == "application/json" or kind.startswith("text/"):
                raise OpenAISpeechError(f"{self.where} answered {kind} instead of audio: "
                                        f"{error_excerpt(response.read(MAX_ERROR_BODY))}")
            if self.response_format == "pcm" and kind in CONTAINER_TYPES:
                # A server that ignored response_format: its bytes played as raw PCM would be noise.
                raise OpenAISpeechError(f"{self.where} answered {kind} to a request for raw pcm")
            return self._read_audio(response, len(text))
        except (OSError, http.client.HTTPException) as exc:
            if self._cancelled.is_set():
                raise SynthesisCancelled("cancelled") from None
            raise OpenAISpeechError(f"{self.where}: {type(exc).__name__}: {exc or 'no answer'}") from None

    @property
    def where(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}{self.path}"

    def _read_audio(self, response: http.client.HTTPResponse, chars: int) -> tuple[np.ndarray, int]:
        """The body's PCM as it streams in, within the size cap and the time budget."""
        wav = WavStream() if self.response_format == "wav" else None
        pcm = bytearray()
        deadline = time.monotonic() + RESPONSE_BUDGET_S
        while True:
            piece = response.read1(READ_SIZE)  # what has arrived; each wait bounded by timeout_s
            if self._cancelled.is_set():
                raise SynthesisCancelled("cancelled")
            if not piece:
                break
            pcm += wav.feed(piece) if wav else piece
            rate = wav.sample_rate if wav else self.pcm_rate
            if rate and len(pcm) > self.max_audio_s * rate * 2:
                raise OpenAISpeechError(f"more than {self.max_audio_s:g} s of audio for {chars} characters: refused "
                                        "(openai_speech.max_audio_s)")
            if time.monotonic() > deadline:
                raise OpenAISpeechError(f"the answer took longer than {RESPONSE_BUDGET_S:g} s")
            if wav is not None and wav.data_left == 0:  # all the data it declared: what follows is not audio
                break
        if wav is not None and not wav.in_data:
            raise OpenAISpeechError("the WAV stream ended before its data")
        rate = wav.sample_rate if wav else self.pcm_rate
        return np.frombuffer(bytes(pcm[: len(pcm) // 2 * 2]), "<i2").astype(np.int16), rate
