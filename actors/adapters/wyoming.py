"""A client for any Wyoming-protocol TTS server (e.g. wyoming-piper).

Wire format (Wyoming 1.x): one JSON header line ``{"type", "data"?, "data_length"?,
"payload_length"?}``, then ``data_length`` bytes of JSON merged into ``data``, then
``payload_length`` bytes of payload. Unlike the reference implementation, this client
caps every declared length before reading it.

Wyoming carries no phoneme timing, so the lip-sync timing is a *shadow alignment*:
espeak-ng phonemises the same text in process and its phoneme and word positions are
stretched onto the voiced span of the server's audio.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from urllib.parse import urlparse

import numpy as np

from .base import Synthesis, SynthesisCancelled, TTSAdapter, split_multichar, voiced_span
from .espeak import EspeakEngine
from persona.voice import VoiceSchema

MAX_LINE = 64 * 1024
MAX_DATA = 1024 * 1024  # the describe reply lists every voice the server knows (~90 KB for piper)
MAX_PAYLOAD = 4 * 1024 * 1024
MAX_AUDIO_S = 120


class WyomingError(RuntimeError):
    pass


class WyomingConnection:
    """One request/response conversation over TCP."""

    def __init__(self, uri: str, timeout_s: float):
        parsed = urlparse(uri)
        if parsed.scheme != "tcp" or not parsed.hostname or not parsed.port:
            raise WyomingError(f"wyoming uri must be tcp://host:port, got {uri!r}")
        self.sock = socket.create_connection((parsed.hostname, parsed.port), timeout=timeout_s)
        self.reader = self.sock.makefile("rb")

    def write(self, event_type: str, data: dict | None = None) -> None:
        header = {"type": event_type, "version": "1.5.0"}
        body = b""
        if data is not None:
            body = json.dumps(data).encode()
            header["data_length"] = len(body)
        self.sock.sendall(json.dumps(header).encode() + b"\n" + body)

    def read(self) -> tuple[str, dict, bytes]:
        line = self.reader.readline(MAX_LINE + 1)
        if not line:
            raise WyomingError("server closed the connection")
        if len(line) > MAX_LINE or not line.endswith(b"\n"):
            raise WyomingError("header line too long")
        header = json.loads(line)
        data = dict(header.get("data") or {})
        data_length = int(header.get("data_length") or 0)
        payload_length = int(header.get("payload_length") or 0)
        if not 0 <= data_length <= MAX_DATA or not 0 <= payload_length <= MAX_PAYLOAD:
            raise WyomingError(f"declared lengths out of bounds ({data_length}, {payload_length})")
        if data_length:
            data.update(json.loads(self._exactly(data_length)))
        payload = self._exactly(payload_length) if payload_length else b""
        return str(header.get("type")), data, payload

    def _exactly(self, n: int) -> bytes:
        buf = self.reader.read(n)
        if len(buf) != n:
            raise WyomingError("short read")
        return buf

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class WyomingAdapter(TTSAdapter):
    name = "wyoming"

    def __init__(self, config: dict):
        self.uri = config["tts"]["wyoming_uri"]
        self.timeout_s = float(config["tts"]["wyoming_timeout_s"])
        self.server_info: dict = {}
        self._current: WyomingConnection | None = None
        self._lock = threading.Lock()
        self._cancelled = False

    def load(self) -> None:
        EspeakEngine.get()  # the shadow alignment's engine: loaded now, not on the first chunk
        conn = WyomingConnection(self.uri, self.timeout_s)
        try:
            conn.write("describe")
            kind, data, _ = conn.read()
            if kind != "info":
                raise WyomingError(f"expected info, got {kind}")
            programs = data.get("tts") or []
            voices = [v.get("name") for p in programs for v in p.get("voices", [])]
            self.server_info = {"programs": [p.get("name") for p in programs], "voices": len(voices)}
        finally:
            conn.close()
        self.sample_rate = 0  # learnt from the first audio-start

    def project(self, voice: VoiceSchema) -> dict:
        name = {"en-us": "en_US-joe-medium"}.get(voice.accent.lower(), "")
        return {"voice": {"name": name} if name else {}, "unsupported": ["pace", "prosody", "timbre.pitch"]}

    def describe(self) -> dict:
        return {
            "name": self.name, "version": "wyoming-1.x client", "streaming": True, "unit": "tokens",
            "granularity": [8, 12, 16, 24, 32, 48, 64], "voices": "dynamic", "supports_barge_in": True,
            "supports_seed": False, "stateful_context": "none", "sample_rate": self.sample_rate,
            "limits": {"max_chars": 2000, "timeout_ms": int(self.timeout_s * 1000)},
            "features": ["remote", "shadow_alignment_espeak"], "server": {"uri": self.uri, **self.server_info},
            "projects": ["accent->voice.name"],
        }

    def synthesize(self, text: str, voice: VoiceSchema) -> Synthesis:
        started = time.perf_counter()
        if not text.strip():
            return Synthesis(np.zeros(0, np.int16), self.sample_rate or 22050)
        conn = WyomingConnection(self.uri, self.timeout_s)
        with self._lock:
            self._current = conn
            cancelled = self._cancelled  # before or while connecting: nothing to close then
        try:
            if cancelled:
                raise SynthesisCancelled("cancelled")
            request = {"text": text}
            if self.project(voice)["voice"]:
                request["voice"] = self.project(voice)["voice"]
            conn.write("synthesize", request)
            pieces, rate = [], 0
            while True:
                kind, data, payload = conn.read()
                if kind == "audio-start":
                    rate = int(data.get("rate", 0))
                elif kind == "audio-chunk":
                    if int(data.get("width", 2)) != 2 or int(data.get("channels", 1)) != 1:
                        raise WyomingError("only 16-bit mono audio is supported")
                    rate = rate or int(data.get("rate", 0))
                    pieces.append(np.frombuffer(payload, np.int16))
                    if rate and sum(len(p) for p in pieces) > MAX_AUDIO_S * rate:
                        raise WyomingError("audio longer than the cap")
                elif kind == "audio-stop":
                    break
                elif kind == "error":
                    raise WyomingError(f"server error: {data.get('text')}")
        finally:
            with self._lock:
                self._current = None
            conn.close()
        if not rate:
            raise WyomingError("server sent no audio format")
        self.sample_rate = rate
        pcm = np.concatenate(pieces) if pieces else np.zeros(0, np.int16)
        phonemes, anchors = shadow_alignment(text, pcm, rate)
        return Synthesis(pcm=pcm, sample_rate=rate, phonemes=phonemes, word_anchors=anchors,
                         render_ms=(time.perf_counter() - started) * 1000, determinism="server_side",
                         timing="shadow")

    def new_call(self) -> None:
        with self._lock:
            self._cancelled = False

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            if self._current is not None:
                self._current.close()


def shadow_alignment(text: str, pcm: np.ndarray, rate: int):
    """espeak-ng's phonemes and word positions for ``text``, stretched onto the voiced span of
    ``pcm``: a guess at where another engine's phonemes fall."""
    shadow = EspeakEngine.get()
    shadow_pcm, words, events = shadow.synthesize(text, "en-us", 165, 45, 50)
    target = voiced_span(pcm, rate)
    source = voiced_span(shadow_pcm, shadow.sample_rate)
    if target is None or source is None:
        return [], []
    scale = (target[1] - target[0]) / max(source[1] - source[0], 1)
    warp = lambda s: int(target[0] + (s - source[0]) * scale)
    phonemes = []
    for i, (name, start) in enumerate(events):
        end = events[i + 1][1] if i + 1 < len(events) else len(shadow_pcm)
        a, b = max(warp(start), 0), min(warp(end), len(pcm))
        if b > a:
            phonemes.append((name, a, b - a))
    anchors = sorted({(c, max(warp(s), 0)) for c, s in words})
    return split_multichar(phonemes), anchors
