"""Scene 6, Persona Script: one JSON voice persona spoken by three engines. Timbre may
differ; the prosody envelope should not: the same pause pattern, a similar speaking rate,
a similar pitch movement and the same declination across the statements."""

from __future__ import annotations

import numpy as np

from clients.wyoming_server import WyomingServer

from .harness import Scene
from .texts import PERSONA_SCRIPT

MAJOR_PAUSES = 3  # the script's sentence breaks
MIN_PAUSE_MS = 40


def run(scene: Scene) -> None:
    engines = scene.adapters or ["piper", "espeak", "wyoming"]
    server = WyomingServer(scene.dir / "wyoming.log")
    try:
        sections = {"tts": {"adapters": engines, "adapter": engines[0], "fallback": ""}, "voice": {"persona": "joe"}}
        if "wyoming" in engines:
            sections["tts"]["wyoming_uri"] = server.start()
        session = scene.start(sections)
        envelopes = {}
        for engine in engines:
            start = len(scene.events)
            version = session.control.call("config_set", changes={"tts.adapter": engine})["version"]
            session.timeline.wait_for(lambda e: e["actor"] == "tts" and e["stage"] == "config"
                                      and e["data"].get("version") == version, 10, start)
            done = session.say_and_wait(PERSONA_SCRIPT, rate=0)
            scene.capture.wait_for(lambda p: p.final and p.utterance_id == done["utterance_id"], 10)
            pcm = np.concatenate([np.frombuffer(p.pcm, np.int16) for p in scene.capture.packets
                                  if p.utterance_id == done["utterance_id"] and p.epoch == done["epoch"] and p.kind == "speech"])
            envelopes[engine] = envelope(pcm, session.config["media"]["sample_rate"])
    finally:
        server.stop()
    scene.notes["envelopes"] = envelopes
    reference = envelopes[engines[0]]
    scene.check("every engine spoke the script", all(e["duration_s"] > 2 for e in envelopes.values()),
                {k: e["duration_s"] for k, e in envelopes.items()}, "> 2 s of speech each")
    matches = {k: pauses_match(reference, e) for k, e in envelopes.items()}
    scene.check("same pause pattern", all(matches.values()), {k: e["major_pauses"] for k, e in envelopes.items()},
                f"each engine's {MAJOR_PAUSES} longest silences where {engines[0]} also stops, and back (+-0.06)")
    rates = {k: round(e["words_per_s"] / reference["words_per_s"], 2) for k, e in envelopes.items()}
    scene.check("similar speaking rate", all(0.65 <= r <= 1.5 for r in rates.values()), rates, f"0.65..1.5 x {engines[0]}")
    spreads = {k: e["pitch_spread_st"] for k, e in envelopes.items()}
    scene.check("similar pitch movement", all(s and 0.6 <= s / reference["pitch_spread_st"] <= 1.6 for s in spreads.values()),
                spreads, f"spread (semitones) within 0.6..1.6 x {engines[0]}")
    slopes = {k: e["declination_st"] for k, e in envelopes.items()}
    scene.check("pitch declines across the statements", all(d is not None and d < 0 and abs(d - reference["declination_st"]) < 2
                                                             for d in slopes.values()),
                slopes, f"negative on every engine, within 2 semitones of {engines[0]}")
    voices = {e["data"].get("voice") for e in scene.of("tts", "synth")}
    scene.check("one schema for all engines", voices == {"joe"}, sorted(voices), "['joe']")


def envelope(pcm: np.ndarray, sr: int) -> dict:
    """Speaking rate, silences (position in the utterance 0..1, duration) and the pitch
    movement over the first statement."""
    hop = sr // 100
    n = len(pcm) // hop
    rms = np.sqrt(np.mean(pcm[: n * hop].astype(np.float64).reshape(n, hop) ** 2, axis=1))
    voiced = rms > max(150.0, 0.08 * rms.max())
    idx = np.flatnonzero(voiced)
    first, last = idx[0], idx[-1] + 1
    duration = (last - first) / 100
    silences, run_start = [], None
    for i in range(first, last):
        if not voiced[i] and run_start is None:
            run_start = i
        elif voiced[i] and run_start is not None:
            silences.append((round(((run_start + i) / 2 - first) / (last - first), 3), (i - run_start) * 10))
            run_start = None
    major = sorted(sorted(silences, key=lambda s: -s[1])[:MAJOR_PAUSES])
    pitch = pitch_envelope(pcm, sr)
    words = len(PERSONA_SCRIPT.split())
    return {"duration_s": round(float(duration), 2), "major_pauses": [(float(p), int(d)) for p, d in major],
            "silences": [(float(p), int(d)) for p, d in silences if d >= MIN_PAUSE_MS],
            "words_per_s": round(float(words / duration), 2), **pitch}


def pitch_envelope(pcm: np.ndarray, sr: int) -> dict:
    """Median pitch, its spread (median absolute deviation, semitones) and the declination
    over the statements (semitones across the first 80 %: the closing question may rise).
    Octave errors of the tracker are folded back towards the median first."""
    track = np.array([(t, f) for t, f in f0_track(pcm, sr) if f > 0])
    if len(track) < 20:
        return {"pitch_hz": None, "pitch_spread_st": None, "declination_st": None}
    t, f = track[:, 0], track[:, 1]
    median = np.median(f)
    f = np.where(f > 1.6 * median, f / 2, np.where(f < 0.62 * median, f * 2, f))
    semitones = 12 * np.log2(f / np.median(f))
    position = (t - t.min()) / max(t.max() - t.min(), 1)
    statements = position < 0.8
    slope = np.polyfit(position[statements], semitones[statements], 1)[0]
    spread = np.median(np.abs(semitones - np.median(semitones)))
    return {"pitch_hz": round(float(median), 1), "pitch_spread_st": round(float(spread), 2),
            "declination_st": round(float(slope), 2)}


def f0_track(pcm: np.ndarray, sr: int, low: float = 70, high: float = 400) -> list[tuple[int, float]]:
    """(10 ms frame index, f0 Hz or 0) by normalised autocorrelation over 40 ms windows."""
    x = pcm.astype(np.float64)
    win, hop = int(0.04 * sr), sr // 100
    lags = np.arange(int(sr / high), int(sr / low))
    out = []
    for start in range(0, len(x) - win - lags[-1], hop):
        frame = x[start:start + win]
        if np.sqrt(np.mean(frame ** 2)) < 300:
            out.append((start // hop, 0.0))
            continue
        frame = frame - frame.mean()
        energy = np.dot(frame, frame)
        corr = np.array([np.dot(frame, x[start + lag:start + lag + win] - x[start + lag:start + lag + win].mean())
                         for lag in lags]) / (energy + 1e-9)
        best = int(np.argmax(corr))
        out.append((start // hop, sr / lags[best] if corr[best] > 0.45 else 0.0))
    return out


def pauses_match(a: dict, b: dict) -> bool:
    """Each engine's longest silences fall where the other engine also stops (>= MIN_PAUSE_MS),
    within 0.06 of the utterance: the same pause pattern, whatever each engine's pause lengths."""
    covered = lambda majors, others: all(any(abs(p - q) <= 0.06 for q, _ in others) for p, _ in majors)
    return covered(a["major_pauses"], b["silences"]) and covered(b["major_pauses"], a["silences"])
