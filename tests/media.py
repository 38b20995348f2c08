"""Reading what Personas produced: decode recordings; speech and words come from clients.asr."""

from __future__ import annotations

import math

import numpy as np

from clients.asr import transcribe, word_error_rate, words  # noqa: F401 -- the tests' one import for media


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


#: A paragraph with open vowels and closures: the lip-sync tests say it and follow the mouth.
PARAGRAPH = ("The lighthouse keeper climbed the stairs every evening. He polished the great lens until it shone, "
             "and watched the ships pass far away on the dark water.")


def mouth_follows_envelope(session, collector, meter) -> tuple[float, set, dict]:
    """Say the paragraph; r between the mouth opening and the audio level of the speech frames
    (both smoothed over 3 frames, syllable scale), the lip sources the TTS reported, and the
    utterance's presented-event."""
    collector.packets.clear()
    done = session.say_and_wait(PARAGRAPH)
    _, opening, rms = meter.track(list(collector.packets))
    smooth = lambda x: np.convolve(x, np.ones(3) / 3, mode="same")  # noqa: E731
    sources = {e["data"].get("lips") for e in session.timeline.events if e["stage"] == "synth"
               and e["utterance_id"] == done["utterance_id"] and e["data"]["audio_ms"] > 0}
    return float(np.corrcoef(smooth(opening), smooth(rms))[0, 1]), sources, done
