"""The audio arithmetic the live pipeline and replay share: one source for each formula.

The stitcher joins chunks with it, the player cuts with it, and replay rebuilds a session
with the very same functions, which is what makes replayed audio byte-identical.
"""

from __future__ import annotations

import math

import numpy as np

#: A barge-in fades the cut frame's audio to zero within this many milliseconds (no click).
BARGE_FADE_MS = 5
#: The player's audio leaves in blocks this long (its sound-card period): a barge-in fades out
#: from the first block that has not started playing, not at the next frame boundary.
AUDIO_BLOCK_MS = 5


def to_int16(samples: np.ndarray) -> np.ndarray:
    """Round and clip float samples to int16 PCM."""
    return np.clip(np.rint(samples), -32768, 32767).astype(np.int16)


def crossfade_ramps(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(fade_in, fade_out): raised-cosine ramps of ``n`` samples (float32) that sum to one."""
    fade_in = (0.5 - 0.5 * np.cos(np.linspace(0.0, math.pi, max(n, 1), dtype=np.float32))).astype(np.float32)
    return fade_in, fade_in[::-1].copy()


def overlap_add(tail: np.ndarray, head: np.ndarray, fade_out: np.ndarray, fade_in: np.ndarray) -> np.ndarray:
    """The join of two chunks: ``tail`` (the end of the earlier one) faded out under ``head``
    (the start of the later one) faded in; both of the same length."""
    n = len(head)
    return to_int16(tail.astype(np.float32) * fade_out[:n] + head.astype(np.float32) * fade_in[:n])


def apply_gain(pcm: np.ndarray, gain: float) -> np.ndarray:
    return pcm if gain == 1.0 else to_int16(pcm.astype(np.float32) * gain)


def fade_out(pcm: np.ndarray, n: int) -> np.ndarray:
    """Raised-cosine fade to zero over the first ``n`` samples, silence after."""
    out = np.zeros_like(pcm)
    n = min(n, len(pcm))
    ramp = 0.5 + 0.5 * np.cos(np.linspace(0.0, np.pi, n))
    out[:n] = (pcm[:n].astype(np.float32) * ramp).astype(np.int16)
    return out


def barge_cut(pcm: np.ndarray, sample_rate: int, at: int = 0) -> np.ndarray:
    """The barge-in cut of one frame's audio: unchanged before sample ``at`` (blocks already
    playing), faded to zero within BARGE_FADE_MS from there, silence after."""
    out = pcm.copy()
    out[at:] = fade_out(pcm[at:], BARGE_FADE_MS * sample_rate // 1000)
    return out


def blocks_per_frame(fps: int) -> int:
    """How many AUDIO_BLOCK_MS blocks one frame's audio leaves in (8 at 25 fps)."""
    return max(1, round(1000 / (fps * AUDIO_BLOCK_MS)))


def block_start(block: int, n_samples: int, blocks: int) -> int:
    """First sample of ``block`` inside a frame of ``n_samples`` cut into ``blocks`` (the frame
    rule again, so the blocks tile the frame exactly: 0, 110, 220, 330, 441, ... at 882)."""
    return block * n_samples // blocks


def place_timing(start: int, scale: float, phonemes, word_anchors) -> tuple[list, tuple]:
    """A chunk's phonemes ``(symbol, start, n)`` and word anchors ``(char_offset, sample)``,
    relative to its own first sample at the engine's rate, moved onto the clock: the chunk
    starts at ``start`` and ``scale`` = clock rate / engine rate."""
    return ([(p, start + int(s * scale), int(n * scale)) for p, s, n in phonemes],
            tuple((c, start + int(s * scale)) for c, s in word_anchors))


def resample(pcm: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Polyphase resampling of int16 PCM (an engine's rate onto the clock's)."""
    from scipy.signal import resample_poly

    g = math.gcd(from_rate, to_rate)
    return to_int16(resample_poly(pcm.astype(np.float32), to_rate // g, from_rate // g))


def speech_loudness(pcm: np.ndarray, block: int = 220) -> float:
    """RMS over the louder half of 10 ms blocks: the level of the speech, not the pauses."""
    n = len(pcm) // block
    if n == 0:
        return 0.0
    rms = np.sqrt(np.mean(pcm[: n * block].astype(np.float64).reshape(n, block) ** 2, axis=1))
    loud = np.sort(rms)[n // 2:]
    return float(loud.mean()) if loud.size and loud.mean() > 50 else 0.0
