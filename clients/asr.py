"""What was said, heard by a machine: PocketSphinx (offline, its default US English model),
and word lists compared. The scenes, the fault benchmark and the tests share these."""

from __future__ import annotations

import difflib
import math

import numpy as np


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


def word_changes(reference: str, hypothesis: str) -> dict:
    """Words of ``reference`` missing from ``hypothesis`` (lost) and words it has in addition
    (doubled or foreign), by the longest common word sequence."""
    ref, hyp = words(reference), words(hypothesis)
    lost, added = 0, 0
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=ref, b=hyp, autojunk=False).get_opcodes():
        if op in ("delete", "replace"):
            lost += i2 - i1
        if op in ("insert", "replace"):
            added += j2 - j1
    return {"lost": lost, "added": added, "reference_words": len(ref), "heard_words": len(hyp)}


def recording_audio(path) -> tuple[np.ndarray, int]:
    """A recording's sound track: int16 mono samples and their rate (PyAV)."""
    import av

    with av.open(str(path)) as container:
        rate = container.streams.audio[0].rate
        audio = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
    if audio.dtype != np.int16:
        audio = np.clip(audio * 32767, -32768, 32767).astype(np.int16)
    return audio, rate


def heard_in_order(reference: str, hypothesis: str) -> float:
    """The share of ``reference``'s words heard, in their order (longest common subsequence)."""
    ref, hyp = words(reference), words(hypothesis)
    matched = sum(block.size for block in difflib.SequenceMatcher(a=ref, b=hyp, autojunk=False).get_matching_blocks())
    return matched / max(len(ref), 1)
