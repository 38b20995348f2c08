"""espeak-ng, in process through libespeak-ng (Debian package ``espeak-ng``).

Synchronous mode with a synth callback: PCM arrives in memory (no temp files, no
subprocess), and the callback's WORD and PHONEME events carry the sample position of
every word and IPA phoneme -- real timing for lip sync. libespeak-ng has one global
state, so every call goes through a process-wide lock.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
import time

import numpy as np

from .base import Synthesis, SynthesisCancelled, TTSAdapter, split_multichar
from persona.voice import VoiceSchema

AUDIO_OUTPUT_SYNCHRONOUS = 2
INITIALIZE_PHONEME_EVENTS = 0x0001
INITIALIZE_PHONEME_IPA = 0x0002
EVENT_LIST_TERMINATED, EVENT_WORD, EVENT_PHONEME = 0, 1, 7
POS_CHARACTER, CHARS_UTF8 = 1, 1
PARAM_RATE, PARAM_VOLUME, PARAM_PITCH, PARAM_RANGE = 1, 2, 3, 4


class _Id(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", _Id)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


class EspeakEngine:
    """The one libespeak-ng instance of this process."""

    _instance: "EspeakEngine | None" = None
    _lock = threading.Lock()

    @classmethod
    def get(cls) -> "EspeakEngine":
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def __init__(self):
        path = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
        try:
            self.lib = ctypes.CDLL(path)
        except OSError as exc:
            raise RuntimeError(f"libespeak-ng not found ({exc}); install the espeak-ng package") from None
        self.sample_rate = self.lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, None,
                                                      INITIALIZE_PHONEME_EVENTS | INITIALIZE_PHONEME_IPA)
        if self.sample_rate <= 0:
            raise RuntimeError("espeak_Initialize failed")
        self.lock = threading.Lock()
        self._pcm: list[np.ndarray] = []
        self._words: list[tuple[int, int]] = []
        self._phonemes: list[tuple[str, int]] = []
        self._abort = False
        self._callback = _CALLBACK(self._on_synth)  # keep a reference: C holds the pointer
        self.lib.espeak_SetSynthCallback(self._callback)
        version = ctypes.c_char_p()
        self.lib.espeak_Info.restype = ctypes.c_char_p
        self.version = (self.lib.espeak_Info(ctypes.byref(version)) or b"?").decode()

    def _on_synth(self, wav, n, events) -> int:
        if n > 0:
            self._pcm.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        i = 0
        while events[i].type != EVENT_LIST_TERMINATED:
            e = events[i]
            if e.type == EVENT_WORD and e.text_position > 0:  # position 0: a sentence-boundary artefact
                self._words.append((e.text_position - 1, e.sample))
            elif e.type == EVENT_PHONEME:
                name = bytes(e.id.string).split(b"\0", 1)[0].decode("utf-8", "replace")
                if name:
                    self._phonemes.append((name, e.sample))
            i += 1
        return 1 if self._abort else 0

    def synthesize(self, text: str, voice: str, rate: int, pitch: int, pitch_range: int):
        with self.lock:
            self._pcm, self._words, self._phonemes, self._abort = [], [], [], False
            if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise ValueError(f"espeak-ng has no voice {voice!r}")
            self.lib.espeak_SetParameter(PARAM_RATE, rate, 0)
            self.lib.espeak_SetParameter(PARAM_PITCH, pitch, 0)
            self.lib.espeak_SetParameter(PARAM_RANGE, pitch_range, 0)
            data = text.encode("utf-8") + b"\0"
            self.lib.espeak_Synth(data, len(data), 0, POS_CHARACTER, 0, CHARS_UTF8, None, None)
            self.lib.espeak_Synchronize()
            pcm = np.concatenate(self._pcm) if self._pcm else np.zeros(0, np.int16)
            first_sample: dict[int, int] = {}
            for char, sample in self._words:
                first_sample.setdefault(char, sample)
            return pcm, sorted(first_sample.items()), list(self._phonemes)

    def abort(self) -> None:
        self._abort = True


class EspeakAdapter(TTSAdapter):
    name = "espeak"

    def __init__(self, config: dict):
        self.engine: EspeakEngine | None = None
        self._cancelled = False

    def load(self) -> None:
        self.engine = EspeakEngine.get()
        self.sample_rate = self.engine.sample_rate

    def project(self, voice: VoiceSchema) -> dict:
        variant = {"male": "+m3", "female": "+f2"}.get(str(voice.timbre.get("gender", "")), "")
        return {
            "voice": f"{voice.accent}{variant}",
            "rate_wpm": int(round(165 * voice.pace)),
            "pitch": int(max(0, min(99, 45 + 4 * voice.pitch_semitones))),
            "range": int(max(0, min(99, 50 * voice.pitch_range))),
        }

    def describe(self) -> dict:
        return {
            "name": self.name, "version": self.engine.version if self.engine else "?", "streaming": False,
            "unit": "tokens", "granularity": [8, 12, 16, 24, 32, 48, 64], "voices": "dynamic",
            # Not repeatable: libespeak-ng carries wave-generator state (phase, echo, breath noise)
            # from one utterance into the next, so the same text differs by a few samples.
            "supports_barge_in": True, "supports_seed": False, "stateful_context": "rolling",
            "sample_rate": self.sample_rate, "limits": {"max_chars": 2000, "timeout_ms": 2000},
            "features": ["phoneme_events", "word_events", "in_process"],
            "projects": ["pace->rate_wpm", "accent+timbre.gender->voice", "timbre.pitch_semitones->pitch",
                         "prosody.pitch_range->range"],
        }

    def synthesize(self, text: str, voice: VoiceSchema) -> Synthesis:
        started = time.perf_counter()
        if not text.strip():
            return Synthesis(np.zeros(0, np.int16), self.sample_rate)
        knobs = self.project(voice)
        if self._cancelled:  # the engine's own abort flag is reset when a synthesis starts
            raise SynthesisCancelled("cancelled")
        pcm, words, events = self.engine.synthesize(text, knobs["voice"], knobs["rate_wpm"], knobs["pitch"], knobs["range"])
        phonemes = []
        for i, (name, start) in enumerate(events):
            end = events[i + 1][1] if i + 1 < len(events) else len(pcm)
            if end > start:
                phonemes.append((name, start, end - start))
        return Synthesis(pcm=pcm, sample_rate=self.sample_rate, phonemes=split_multichar(phonemes),
                         word_anchors=words, render_ms=(time.perf_counter() - started) * 1000,
                         determinism="not_repeatable")

    def new_call(self) -> None:
        self._cancelled = False

    def cancel(self) -> None:
        self._cancelled = True
        if self.engine is not None:
            self.engine.abort()
