"""All seven scenes in --quick mode: the behavioural gate of `make test`.
(`personas scenes run --all` is the full gate: a 5-minute Long Read and more interruptions.)"""

import json

import pytest

from scenes.harness import ARTIFACTS
from scenes.runner import SCENES, run_scenes

pytestmark = pytest.mark.e2e


def test_every_scene_passes_quick():
    verdicts = run_scenes(list(SCENES), ["piper", "espeak", "wyoming"], quick=True)
    failed = {v["scene"]: [c for c in v["checks"] if not c["passed"]] for v in verdicts if not v["passed"]}
    assert not failed, json.dumps(failed, indent=1, default=str)
    for name in SCENES:
        for artefact in ("timeline.jsonl", "audio.wav", "video.mp4", "plot.png", "verdict.json"):
            assert (ARTIFACTS / name / artefact).stat().st_size > 0, f"{name}/{artefact}"
