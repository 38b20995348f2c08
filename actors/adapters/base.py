"""The TTS adapter interface and what every engine returns."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from persona.voice import VoiceSchema

_WORD = re.compile(r"\S+")
#: Phoneme symbols that separate or bracket words in Piper/espeak output.
WORD_BREAK = " "
SENTENCE_START = "^"
SILENCE_SYMBOLS = frozenset("^$_")


@dataclass
class Synthesis:
    """One text chunk rendered to speech. Positions are samples from the chunk start."""

    pcm: np.ndarray  # int16, mono
    sample_rate: int
    phonemes: list[tuple[str, int, int]] = field(default_factory=list)  # (symbol, start, n_samples)
    word_anchors: list[tuple[int, int]] = field(default_factory=list)  # (char_offset, start_sample)
    render_ms: float = 0.0
    determinism: str = "deterministic"  # how this engine made it repeatable: zero_noise, seeded_noise, ...
    seed: int = 0
    #: Where ``phonemes`` come from: "engine" (its own alignment), "shadow" (another engine's
    #: phonemes stretched onto this audio: a guess), "audio" (named from the sound by actors.lips),
    #: "none".
    timing: str = "engine"

    @property
    def duration_ms(self) -> float:
        return 1000.0 * len(self.pcm) / self.sample_rate


class TTSAdapter(ABC):
    """An engine that turns a text chunk into PCM plus phoneme timing.

    Every request carries the voice schema; ``project`` maps it onto this engine's knobs.
    """

    name: str = ""
    sample_rate: int = 0
    #: Modules ``load()`` imports. A host that must keep answering while an engine loads (the
    #: web gateway loads one on its first speech request) imports them before READY: some hold
    #: the GIL while they initialise (onnx: 4 s on a busy machine, past a heartbeat's liveness).
    heavy_modules: tuple[str, ...] = ()

    @abstractmethod
    def describe(self) -> dict:
        """The capability descriptor the orchestrator negotiates from."""

    @abstractmethod
    def load(self) -> None:
        """Load models / connect (start-up, never on the hot path)."""

    @abstractmethod
    def project(self, voice: VoiceSchema) -> dict:
        """The engine knobs this voice maps to (also shown in describe())."""

    @abstractmethod
    def synthesize(self, text: str, voice: VoiceSchema) -> Synthesis:
        """Render ``text`` in ``voice``; called from one worker thread."""

    def warmup(self, voice: VoiceSchema) -> None:
        """Run once before READY so the first real request pays no first-call cost."""
        self.synthesize("Hello there. This is a warm up.", voice)

    def new_call(self) -> None:
        """Before each synthesize, from the thread that may cancel it (never while one runs): a
        cancel from before this call does not apply to it, and one from now on always does,
        however early it comes (before the engine started, between two sentences)."""

    def cancel(self) -> None:
        """Best-effort abort of a synthesis running in another thread."""


class SynthesisCancelled(Exception):
    """A synthesis ended early because cancel() asked it to."""


def split_multichar(phonemes: list[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
    """Engines that report diphthongs as one symbol ("oʊ") get them split evenly, so the
    viseme table can stay per character."""
    out = []
    for symbol, start, n in phonemes:
        chars = [c for c in symbol if c not in "ˈˌ"] or [symbol]
        if len(chars) == 1:
            out.append((chars[0], start, n))
            continue
        step = n / len(chars)
        for i, c in enumerate(chars):
            out.append((c, start + int(i * step), int((i + 1) * step) - int(i * step)))
    return out


def word_anchors(text: str, phonemes: list[tuple[str, int, int]]) -> list[tuple[int, int]]:
    """Map each written word's character offset to the sample where it is spoken.

    Spoken words are delimited by the engine's word breaks and sentence starts. When
    the engine expands text ("3.14" -> four words) the counts differ and written word
    i maps to spoken word round(i * (S-1) / (W-1)): monotonic, exact at both ends.
    """
    written = [m.start() for m in _WORD.finditer(text) if any(c.isalnum() for c in m.group())]
    spoken: list[int] = []
    at_word_start = True
    for symbol, start, _n in phonemes:
        if symbol == WORD_BREAK or symbol in SILENCE_SYMBOLS:
            at_word_start = True
            continue
        if at_word_start:
            spoken.append(start)
            at_word_start = False
    if not written or not spoken:
        return []
    if len(written) == len(spoken):
        return list(zip(written, spoken))
    last_w, last_s = len(written) - 1, len(spoken) - 1
    return [(w, spoken[round(i * last_s / last_w) if last_w else 0]) for i, w in enumerate(written)]


def voiced_span(pcm: np.ndarray, rate: int) -> tuple[int, int] | None:
    """(first, end) sample of the audible part of ``pcm`` (10 ms blocks above 5 % of the
    loudest, and above a floor), or None when nothing is audible."""
    block = max(rate // 100, 1)
    n = len(pcm) // block
    if n == 0:
        return None
    energy = np.sqrt(np.mean(pcm[: n * block].astype(np.float64).reshape(n, block) ** 2, axis=1))
    voiced = np.flatnonzero(energy > max(200.0, 0.05 * energy.max()))
    if len(voiced) == 0:
        return None
    return int(voiced[0] * block), int((voiced[-1] + 1) * block)
