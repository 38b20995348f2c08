"""Reading what Personas produced: decode recordings, transcribe speech, compare words."""

from __future__ import annotations

import math

import numpy as np


def read_mp4(path) -> tuple[np.ndarray, np.ndarray, int, int, dict]:
    """(frames (N,H,W,3) uint8, audio int16 mono, sample_rate, fps, durations in seconds)."""
    import av

    with av.open(str(path)) as container:
        vstream, astream = container.streams.video[0], container.streams.audio[0]
        durations = {"video": float(vstream.duration * vstream.time_base),
                     "audio": float(astream.duration * astream.time_base)}
        fps = int(round(float(vstream.average_rate)))
        sample_rate = astream.rate
        audio = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
        container.seek(0)
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    if audio.dtype != np.int16:
        audio = np.clip(audio * 32767, -32768, 32767).astype(np.int16)
    return frames, audio, sample_rate, fps, durations


def frame_rms(audio: np.ndarray, sample_rate: int, fps: int, n_frames: int) -> np.ndarray:
    out = np.zeros(n_frames)
    for k in range(n_frames):
        window = audio[k * sample_rate // fps:(k + 1) * sample_rate // fps].astype(np.float64)
        out[k] = math.sqrt(np.mean(window ** 2)) if len(window) else 0.0
    return out


def transcribe(audio: np.ndarray, sample_rate: int) -> str:
    """PocketSphinx, offline, default US English model, the whole utterance at once."""
    from pocketsphinx import Decoder
    from scipy.signal import resample_poly

    g = math.gcd(16000, sample_rate)
    pcm = resample_poly(audio.astype(np.float32), 16000 // g, sample_rate // g)
    pcm = np.clip(pcm, -32768, 32767).astype(np.int16)
    decoder = Decoder(samprate=16000, loglevel="FATAL")
    decoder.start_utt()
    decoder.process_raw(pcm.tobytes(), full_utt=True)
    decoder.end_utt()
    hyp = decoder.hyp()
    return hyp.hypstr if hyp else ""


def words(text: str) -> list[str]:
    return "".join(c.lower() if c.isalnum() or c == "'" else " " for c in text).split()


def word_error_rate(reference: str, hypothesis: str) -> float:
    ref, hyp = words(reference), words(hypothesis)
    d = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, d[0] = d[0], i
        for j, h in enumerate(hyp, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (r != h))
    return d[len(hyp)] / max(len(ref), 1)
