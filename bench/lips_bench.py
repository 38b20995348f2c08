"""`personas bench lips` and `personas bench drift`: how well and how truly the mouth follows speech.

- lips: the shipped audio-to-viseme model on held-out sentences (the scenes' prose, in the
  training voices) and on an unseen voice: correlation and lag of the mouth opening from its
  visemes against the one from the engine's own alignment; the same-run baseline is the
  espeak-ng shadow alignment (how engines without timing were lip-synced before). Also the
  model's cost per second of audio and its look-ahead (the latency it adds to a stream).
- drift: a long narration through the real pipeline, once with alignment-driven lips and once
  with audio-driven lips (`driver.lips` switched live). Every presented frame is captured; the
  mouth opening is read from its pixels (clients.analysis.MouthMeter). For every open vowel of
  the speech (Piper's alignment of each chunk, placed on the audio clock where the stitcher put
  the chunk) the frames around it are matched against the jaw the phonemes call for, shifted in
  1 ms steps: the best shift is how far the picture is from the sound there. median / p95 / max
  of |drift|.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from actors.lips import LOOKAHEAD_MS, log_mel, shipped
from actors.render.motion import VISEMES, coarticulate, envelope_gain, viseme_targets
from clients.analysis import MouthMeter, summarize
from clients.session import private_system
from scenes.texts import LONG_READ
from training.lips import Settings, evaluate, held_out_sets

#: Vowels whose jaw opens wide enough to peak visibly (the renderer's jaw >= this).
OPEN_JAW = 0.55
MIN_VOWEL_MS = 40
WINDOW_FRAMES = 3  # frames each side of a vowel's frame
MAX_SHIFT_MS = 80
MIN_MATCH_R = 0.5  # below it the frames around the vowel do not show this vowel's shape at any shift


def lips(held_out: int = 24, echo: Callable[[str], None] = print) -> dict:
    model = shipped()
    sets = held_out_sets(Settings(held_out=held_out), echo)
    figures = {name: evaluate(model, utterances) for name, utterances in sets.items()}
    audio = [u for u in sets["unseen_sentences"]]
    started = time.perf_counter()
    for u in audio:
        model.visemes(u.pcm, u.sample_rate)
    seconds = sum(len(u.pcm) / u.sample_rate for u in audio)
    cost = (time.perf_counter() - started) * 1000 / seconds
    started = time.perf_counter()
    for u in audio:
        log_mel(u.pcm, u.sample_rate)
    features_cost = (time.perf_counter() - started) * 1000 / seconds
    result = {
        "method": ("Held-out sentences (the scenes' prose, never trained on) spoken by Piper joe and espeak-ng, and "
                   "the same sentences in an unseen voice (espeak-ng female variant, +4 semitones). Mouth opening = "
                   "the renderer's jaw after coarticulation, every 10 ms, from the model's visemes vs from the "
                   "engine's own alignment: Pearson r at zero lag and the lag that maximises r. Baseline, same "
                   "audio: the espeak-ng shadow alignment stretched onto the voiced span. Cost: the model on the "
                   "held-out audio, ms per second of audio, one process; the features alone beside it."),
        **figures,
        "lookahead_ms": LOOKAHEAD_MS,
        "ms_per_audio_second": round(cost, 2),
        "features_ms_per_audio_second": round(features_cost, 2),
    }
    for name in sets:
        f = figures[name]
        echo(f"{name}: model r {f['model']['mouth_opening_r']} (lag {f['model']['best_lag_ms']} ms, hop accuracy "
             f"{f['model']['hop_accuracy']}); shadow alignment r {f['shadow_alignment']['mouth_opening_r']} "
             f"(lag {f['shadow_alignment']['best_lag_ms']} ms)")
    echo(f"cost {result['ms_per_audio_second']} ms per second of audio (features {features_cost:.2f}); "
         f"look-ahead {LOOKAHEAD_MS} ms")
    return result


# -- drift ------------------------------------------------------------------------------------------
def aligned_phonemes(events: list[dict], utterance_id: int, sample_rate: int, threads: int) -> list[tuple[str, int, int]]:
    """Piper's alignment of every chunk of this utterance, placed on the audio clock where the
    stitcher put the chunk (Piper is deterministic: the same text gives the same audio)."""
    from persona.voice import load_voice
    from training.lips import piper_adapter

    texts = {e["chunk_id"]: e["data"]["text"] for e in events if e["stage"] == "parse" and e["actor"] == "parser"
             and e["utterance_id"] == utterance_id}
    starts = {e["chunk_id"]: e["data"]["start"] for e in events if e["stage"] == "stitch" and e["utterance_id"] == utterance_id
              and e["data"].get("piece") == 0 and e["data"].get("start", -1) >= 0}
    samples = {e["chunk_id"]: e["data"]["samples"] for e in events if e["stage"] == "synth" and e["utterance_id"] == utterance_id}
    piper, voice = piper_adapter(threads), load_voice("joe")  # the session's threads: the same audio
    placed = []
    for chunk_id, start in sorted(starts.items()):
        syn = piper.synthesize(texts[chunk_id], voice)
        if syn.sample_rate != sample_rate or len(syn.pcm) != samples.get(chunk_id):
            raise RuntimeError(f"chunk {chunk_id} does not resynthesise to the audio the session spoke")
        placed += [(symbol, start + a, n) for symbol, a, n in syn.phonemes]
    return placed


def open_vowel_centres(phonemes: list[tuple[str, int, int]], sample_rate: int) -> list[float]:
    return [a + n / 2 for symbol, a, n in phonemes
            if VISEMES.get(symbol, (0.0,))[0] >= OPEN_JAW and n * 1000 / sample_rate >= MIN_VOWEL_MS]


def vowel_drifts_ms(frames: np.ndarray, opening: np.ndarray, rms: np.ndarray, phonemes: list, sample_rate: int,
                    fps: int, sigma_ms: float) -> list[float]:
    """Per open vowel: the shift of the jaw that the phonemes call for (coarticulated, scaled by each
    frame's audio level, as the driver does) that best matches the mouth opening seen in the 7
    frames around the vowel, searched in 1 ms steps. + = the mouth is late."""
    rows = viseme_targets(phonemes)
    sigma = sigma_ms * sample_rate / 1000.0
    where = {int(k): i for i, k in enumerate(frames)}
    shifts = np.arange(-MAX_SHIFT_MS, MAX_SHIFT_MS + 1)
    gains = envelope_gain(rms)
    drifts = []
    for centre in open_vowel_centres(phonemes, sample_rate):
        k0 = int(centre * fps // sample_rate)
        window = [where.get(k) for k in range(k0 - WINDOW_FRAMES, k0 + WINDOW_FRAMES + 1)]
        if None in window:
            continue
        seen = opening[window]
        if seen.std() < 1e-3:
            continue
        times = ((frames[window] + 0.5) * sample_rate / fps)[None, :] - shifts[:, None] * sample_rate / 1000.0
        near = rows[(rows[:, 1] > times.min() - 4 * sigma) & (rows[:, 0] < times.max() + 4 * sigma)]
        wanted = coarticulate(times.ravel(), near, sigma)[:, 0].reshape(times.shape) * gains[window][None, :]
        r = np.array([np.corrcoef(seen, w)[0, 1] if w.std() > 0 else -1.0 for w in wanted])
        if r.max() >= MIN_MATCH_R:
            drifts.append(float(shifts[int(np.argmax(r))]))
    return drifts


def drift(config_path: str | None, overrides, text: str = LONG_READ, echo: Callable[[str], None] = print) -> dict:
    sources = ("alignment", "audio")
    result: dict = {"method": (
        "One system (Piper joe), the Long Read narration said once per lip source, `driver.lips` switched live "
        "between them; every presented frame captured from av_out; idle head motion off. Mouth opening per frame = "
        "how much darker the mouth region is than the resting face's (the cavity between the teeth). Reference: "
        "Piper's alignment of each chunk (re-synthesised, checked sample-count equal), placed where the stitcher "
        f"placed the chunk on the audio clock. For every open vowel (jaw >= {OPEN_JAW}, >= {MIN_VOWEL_MS} ms), the "
        f"7 frames around it are matched against the jaw its phonemes call for (coarticulated, times each frame's "
        f"envelope gain, as the driver does) shifted by -{MAX_SHIFT_MS}..+{MAX_SHIFT_MS} ms in 1 ms steps; drift = "
        f"the best shift (r >= {MIN_MATCH_R}), + = the mouth is late. Frame k's time is its slot's centre.")}
    with tempfile.TemporaryDirectory(prefix="personas-drift-") as tmp:
        # Idle sway moves the mouth region too: off, so the pixels measure the mouth alone.
        with private_system(Path(tmp), overrides=[*overrides, "driver.idle_motion=false"]) as (session, collector):
            meter = MouthMeter(session.config)
            for source in sources:
                session.control.call("config_set", changes={"driver.lips": source})
                collector.packets.clear()
                done = session.say_and_wait(text, rate=40.0)
                sr, fps = session.config["media"]["sample_rate"], session.config["media"]["fps"]
                frames, opening, rms = meter.track(list(collector.packets))
                phonemes = aligned_phonemes(session.timeline.events, done["utterance_id"], sr,
                                            int(session.config["voice"]["threads"]))
                drifts = vowel_drifts_ms(frames, opening, rms, phonemes, sr, fps,
                                         float(session.config["driver"]["coarticulation_ms"]))
                lips_used = {e["data"].get("lips") for e in session.timeline.events if e["stage"] == "synth"
                             and e["utterance_id"] == done["utterance_id"] and e["data"].get("audio_ms", 0) > 0}
                result[source] = {"signed_ms": summarize(drifts), "abs_ms": summarize([abs(d) for d in drifts]),
                                  "vowels": len(open_vowel_centres(phonemes, sr)), "peaks": len(drifts),
                                  "speech_s": round(len(frames) / fps, 1),
                                  "lips_reported": sorted(x for x in lips_used if x)}
                echo(f"{source}: |drift| median {result[source]['abs_ms']['median']} / p95 {result[source]['abs_ms']['p95']}"
                     f" / max {result[source]['abs_ms']['max']} ms over {len(drifts)} vowel peaks "
                     f"({result[source]['speech_s']} s of speech); signed median {result[source]['signed_ms']['median']} ms")
    result["target_ms"] = 20
    return result


def table_rows(lips_result: dict | None, drift_result: dict | None) -> list[str]:
    rows = []
    if lips_result:
        s, v = lips_result["unseen_sentences"], lips_result["unseen_voice"]
        rows.append(f"| Lips from audio (learned model): mouth opening vs the engine's alignment, r (lag) | unseen "
                    f"sentences {s['model']['mouth_opening_r']} ({s['model']['best_lag_ms']} ms); unseen voice "
                    f"{v['model']['mouth_opening_r']} ({v['model']['best_lag_ms']} ms) | shadow alignment "
                    f"{s['shadow_alignment']['mouth_opening_r']} ({s['shadow_alignment']['best_lag_ms']} ms); "
                    f"{v['shadow_alignment']['mouth_opening_r']} ({v['shadow_alignment']['best_lag_ms']} ms) | "
                    f"look-ahead {lips_result['lookahead_ms']} ms, {lips_result['ms_per_audio_second']} ms per s of audio |")
    if drift_result:
        cell = lambda r: f"{r['abs_ms']['median']} / {r['abs_ms']['p95']} / {r['abs_ms']['max']} ms ({r['peaks']} peaks)"
        rows.append(f"| Phoneme-to-frame drift (Long Read, 62 s per source): per open vowel, the shift of the jaw its phonemes call for that best matches the presented frames, abs median / p95 / max | alignment "
                    f"{cell(drift_result['alignment'])}; audio {cell(drift_result['audio'])} | one frame = 40 ms | "
                    f"target p95 <= 20 ms |")
    return rows
