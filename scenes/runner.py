"""`personas scenes run`: run scenes, write their artefacts, print the verdicts."""

from __future__ import annotations

import importlib
import json
import shutil
import time
import traceback

import numpy as np
import soundfile

from clients.views import plot

from .harness import ARTIFACTS, Scene

SCENES = ("breathing_room", "long_read", "mid_stream_swap", "barge_in", "throttle_recover", "persona_script",
          "cold_start", "fault", "concurrency")


def run_scenes(names: list[str], adapters: list[str], quick: bool, echo=print) -> list[dict]:
    verdicts = []
    for name in names:
        if name not in SCENES:
            raise ValueError(f"unknown scene {name!r} (known: {', '.join(SCENES)})")
        directory = ARTIFACTS / name
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        scene = Scene(name, quick, adapters, directory)
        started = time.monotonic()
        echo(f"scene {name} ({'quick' if quick else 'full'}) ...")
        try:
            importlib.import_module(f"scenes.{name}").run(scene)
        except Exception as exc:  # a scene that crashes fails, and the others still run
            scene.check("ran to the end", False, f"{type(exc).__name__}: {exc}", "no exception")
            (directory / "error.txt").write_text(traceback.format_exc())
        finally:
            scene.stop()
        write_artifacts(scene)
        verdict = scene.verdict(started)
        (directory / "verdict.json").write_text(json.dumps(verdict, indent=2, default=str))
        verdicts.append(verdict)
        echo(f"  {'PASS' if verdict['passed'] else 'FAIL'} in {verdict['duration_s']} s")
        for c in scene.checks:
            echo(f"    {'ok  ' if c.passed else 'FAIL'} {c.name}: {c.value} (expected {c.expected})")
    return verdicts


def write_artifacts(scene: Scene) -> None:
    if scene.capture is not None and scene.session is not None:
        sample_rate = scene.session.config["media"]["sample_rate"]
        soundfile.write(scene.dir / "audio.wav", scene.capture.audio(), sample_rate, subtype="PCM_16")
    if scene.events:
        plot(scene.events, scene.dir / "plot.png", title=f"scene: {scene.name}")


def table(verdicts: list[dict]) -> str:
    rows = [f"{'scene':<18}{'verdict':<9}{'checks':>8}{'seconds':>9}"]
    for v in verdicts:
        checks = f"{sum(c['passed'] for c in v['checks'])}/{len(v['checks'])}"
        rows.append(f"{v['scene']:<18}{'PASS' if v['passed'] else 'FAIL':<9}{checks:>8}{v['duration_s']:>9}")
    return "\n".join(rows)


def audio_of(scene: Scene) -> np.ndarray:
    return scene.capture.audio() if scene.capture else np.zeros(0, np.int16)
