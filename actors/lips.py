"""Lips from the sound itself: a small learned network maps audio to visemes.

Engines that give no phoneme timing (a Wyoming server, an OpenAI-compatible voice, a
recording) still get a mouth that follows what is heard. The network reads log-mel frames
(10 ms hop, 25 ms window, any sample rate of 16 kHz or more) and names the viseme class of
every 10 ms hop; consecutive hops of one class become one segment, written as the
(symbol, start, n_samples) tuples the driver already animates from (the class's first IPA
symbol stands for it), so coarticulation, the envelope gain, recovery and replay are the
same for both sources of lip timing.

The network is convolutional with a bounded look-ahead (``LOOKAHEAD_MS``): the viseme of a
hop depends on audio at most that far past the hop's centre, so a streaming caller adds at
most that much latency. Inference is plain numpy (no torch in the TTS process); the weights
are an ``.npz`` read without pickle. ``training/lips.py`` trains them (``personas train
lips``); the model card beside the weights says on what and how well.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .render.motion import VISEME_GROUPS

HOP_S = 0.010
WINDOW_S = 0.025
N_MELS = 40
MEL_FMIN, MEL_FMAX = 60.0, 7600.0
MIN_SAMPLE_RATE = 16000  # MEL_FMAX must stay under Nyquist
#: Class 0 is the closed, resting mouth; then one class per viseme group of the renderer.
REST_SYMBOL = "_"
CLASS_SYMBOLS: tuple[str, ...] = (REST_SYMBOL,) + tuple(symbols.split()[0] for symbols, _ in VISEME_GROUPS)
CLASS_OF_SYMBOL: dict[str, int] = {s: i + 1 for i, (symbols, _) in enumerate(VISEME_GROUPS) for s in symbols.split()}
N_CLASSES = len(CLASS_SYMBOLS)
#: (kernel, dilation, look-ahead in hops) per convolution: the architecture, shared with training.
LAYERS = ((3, 1, 0), (3, 2, 1), (3, 4, 1), (3, 8, 2))
CHANNELS = 96
LOOKAHEAD_HOPS = sum(a for _, _, a in LAYERS)
#: Audio past a hop's centre that its viseme depends on: the layers' look-ahead plus half a window.
LOOKAHEAD_MS = round(1000 * (LOOKAHEAD_HOPS * HOP_S + WINDOW_S / 2), 1)
WEIGHTS = Path(__file__).with_name("lips_model") / "lips.npz"
MAX_WEIGHTS_BYTES = 4 * 1024 * 1024


class LipsModelError(RuntimeError):
    pass


@functools.lru_cache(maxsize=8)
def mel_filterbank(sample_rate: int, n_fft: int) -> np.ndarray:
    """(N_MELS, n_fft // 2 + 1) triangular filters on the mel scale, each of unit area."""
    to_mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)
    to_hz = lambda m: 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    edges = to_hz(np.linspace(to_mel(MEL_FMIN), to_mel(MEL_FMAX), N_MELS + 2))
    bins = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    bank = np.zeros((N_MELS, len(bins)), np.float32)
    for m in range(N_MELS):
        lo, mid, hi = edges[m], edges[m + 1], edges[m + 2]
        rise, fall = (bins - lo) / (mid - lo), (hi - bins) / (hi - mid)
        bank[m] = np.maximum(0.0, np.minimum(rise, fall)) * 2.0 / (hi - lo)
    return bank


def hop_count(n_samples: int, sample_rate: int) -> int:
    return int(np.ceil(n_samples / (sample_rate * HOP_S)))


def hop_start(hop: int | np.ndarray, sample_rate: int):
    """First sample of 10 ms hop ``hop`` (hops are on the chunk's own sample clock)."""
    return np.rint(np.asarray(hop) * sample_rate * HOP_S).astype(np.int64)


def log_mel(pcm: np.ndarray, sample_rate: int) -> np.ndarray:
    """(T, N_MELS) log-mel energies, one row per 10 ms hop, each window centred on its hop."""
    if sample_rate < MIN_SAMPLE_RATE:
        raise LipsModelError(f"audio at {sample_rate} Hz: lips from audio need {MIN_SAMPLE_RATE} Hz or more")
    x = np.asarray(pcm, np.float32) / 32768.0
    n_hops = hop_count(len(x), sample_rate)
    window = int(round(WINDOW_S * sample_rate))
    n_fft = 1 << (window - 1).bit_length()
    centres = np.rint((np.arange(n_hops) + 0.5) * sample_rate * HOP_S).astype(np.int64)
    padded = np.pad(x, (window, window))
    index = centres[:, None] + window - window // 2 + np.arange(window)[None, :]
    frames = padded[index] * np.hanning(window).astype(np.float32)
    power = np.abs(np.fft.rfft(frames, n_fft, axis=1)) ** 2
    return np.log(power @ mel_filterbank(sample_rate, n_fft).T + 1e-6).astype(np.float32)


@dataclass(frozen=True)
class ConvLayer:
    weight: np.ndarray  # (out, in, kernel)
    bias: np.ndarray  # (out,)
    dilation: int
    lookahead: int

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """(in, T) -> (out, T): the output at hop t sees hops t - span + lookahead .. t + lookahead."""
        kernel = self.weight.shape[2]
        span = (kernel - 1) * self.dilation
        padded = np.pad(x, ((0, 0), (span - self.lookahead, self.lookahead)))
        t = x.shape[1]
        out = np.broadcast_to(self.bias[:, None], (self.weight.shape[0], t)).copy()
        for j in range(kernel):
            out += self.weight[:, :, j] @ padded[:, j * self.dilation:j * self.dilation + t]
        return out


class AudioLips:
    """The trained network, ready to name visemes. Load once; ``visemes`` is thread-safe."""

    def __init__(self, arrays: dict[str, np.ndarray], source: str = ""):
        try:
            self.mean, self.std = arrays["feature_mean"].astype(np.float32), arrays["feature_std"].astype(np.float32)
            self.layers = [ConvLayer(arrays[f"conv{i}.weight"].astype(np.float32), arrays[f"conv{i}.bias"].astype(np.float32),
                                     dilation, lookahead) for i, (_, dilation, lookahead) in enumerate(LAYERS)]
            self.out_weight = arrays["out.weight"].astype(np.float32)
            self.out_bias = arrays["out.bias"].astype(np.float32)
        except KeyError as exc:
            raise LipsModelError(f"lip model {source or ''} lacks {exc}") from None
        if self.out_weight.shape != (N_CLASSES, CHANNELS) or self.mean.shape != (N_MELS,):
            raise LipsModelError(f"lip model {source} has the wrong shape for this code "
                                 f"({self.out_weight.shape}, {self.mean.shape})")
        self.source = source

    @classmethod
    def load(cls, path: Path | str = WEIGHTS) -> "AudioLips":
        path = Path(path)
        if not path.is_file() or path.stat().st_size > MAX_WEIGHTS_BYTES:
            raise LipsModelError(f"no lip model at {path} (or larger than {MAX_WEIGHTS_BYTES} bytes)")
        with np.load(path, allow_pickle=False) as data:
            return cls({k: data[k] for k in data.files}, str(path))

    def logits(self, features: np.ndarray) -> np.ndarray:
        """(T, N_MELS) log-mel -> (T, N_CLASSES) class scores. Layers after the first are residual."""
        x = ((features - self.mean) / self.std).T
        for i, layer in enumerate(self.layers):
            y = np.maximum(layer(x), 0.0)
            x = y if i == 0 else x + y
        return (self.out_weight @ x + self.out_bias[:, None]).T

    def classes(self, pcm: np.ndarray, sample_rate: int) -> np.ndarray:
        """The viseme class of every 10 ms hop of ``pcm``."""
        if len(pcm) == 0:
            return np.zeros(0, np.int64)
        return np.argmax(self.logits(log_mel(pcm, sample_rate)), axis=1)

    def visemes(self, pcm: np.ndarray, sample_rate: int) -> list[tuple[str, int, int]]:
        """Viseme segments of ``pcm`` as (symbol, start, n_samples), samples from pcm[0]."""
        return segments(self.classes(pcm, sample_rate), sample_rate, len(pcm))


def segments(classes: np.ndarray, sample_rate: int, n_samples: int) -> list[tuple[str, int, int]]:
    """Runs of one class -> (symbol, start, n) tuples; resting runs are left out (rest is the default)."""
    if len(classes) == 0:
        return []
    change = np.flatnonzero(np.diff(classes)) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [len(classes)]])
    out = []
    for a, b in zip(starts, ends):
        cls = int(classes[a])
        if cls == 0:
            continue
        first, last = int(hop_start(a, sample_rate)), min(int(hop_start(b, sample_rate)), n_samples)
        if last > first:
            out.append((CLASS_SYMBOLS[cls], first, last - first))
    return out


def class_of(symbol: str) -> int:
    """The viseme class an aligned phoneme symbol belongs to (0: rest; unknown symbols: schwa's)."""
    if symbol in CLASS_OF_SYMBOL:
        return CLASS_OF_SYMBOL[symbol]
    from .render.motion import SILENT

    if symbol in SILENT or symbol.isspace():
        return 0
    return CLASS_OF_SYMBOL["ə"]


def hop_labels(phonemes: list[tuple[str, int, int]], n_samples: int, sample_rate: int) -> np.ndarray:
    """The class of the phoneme under each hop's centre (training targets and evaluation)."""
    n_hops = hop_count(n_samples, sample_rate)
    centres = np.rint((np.arange(n_hops) + 0.5) * sample_rate * HOP_S)
    labels = np.zeros(n_hops, np.int64)
    for (_, start, n), cls in zip(phonemes, resolved_classes([symbol for symbol, _, _ in phonemes])):
        if cls:
            labels[(centres >= start) & (centres < start + n)] = cls
    return labels


def resolved_classes(symbols: list[str]) -> list[int]:
    """Each symbol's class; a stress mark takes the class of the phoneme after it and a length
    mark that of the one before, as the renderer shapes them (actors.render.motion)."""
    from .render.motion import LENGTH, STRESS

    classes = [None if s in STRESS or s in LENGTH else class_of(s) for s in symbols]
    for i, symbol in enumerate(symbols):
        if classes[i] is None:
            step = 1 if symbol in STRESS else -1
            j = i + step
            while 0 <= j < len(symbols) and (symbols[j] in STRESS or symbols[j] in LENGTH):
                j += step
            classes[i] = class_of(symbols[j]) if 0 <= j < len(symbols) else 0
    return classes


class LipTiming:
    """Chooses where each chunk's lip timing comes from, by ``driver.lips`` (live):
    "alignment" keeps what the engine gave (a shadow alignment for engines without timing),
    "audio" names visemes from the sound for every chunk, "auto" does so only where the engine
    had no alignment of its own. Runs in the synthesis thread, after the engine."""

    def __init__(self, config: dict, model: AudioLips | None = None):
        self.config = config  # the actor's live config: a change applies from the next chunk
        self.model = model or shipped()

    def apply(self, synthesis):
        mode = self.config["driver"]["lips"]
        if mode == "alignment" or not len(synthesis.pcm) or synthesis.sample_rate < MIN_SAMPLE_RATE:
            return synthesis
        if mode == "auto" and synthesis.timing == "engine" and synthesis.phonemes:
            return synthesis
        synthesis.phonemes = self.model.visemes(synthesis.pcm, synthesis.sample_rate)
        synthesis.timing = "audio"
        return synthesis


@functools.lru_cache(maxsize=1)
def shipped() -> AudioLips:
    """The weights shipped with the package (loaded once per process)."""
    return AudioLips.load(WEIGHTS)


__all__ = ["AudioLips", "LipTiming", "CLASS_SYMBOLS", "LOOKAHEAD_MS", "LipsModelError", "N_CLASSES", "hop_labels", "log_mel",
           "segments", "shipped"]
