"""Each of the nine scenes in --quick mode, one test apiece: the behavioural gate of
`make test`. (`personas scenes run --all` is the full gate: a 5-minute Long Read and more
interruptions.)"""

import json

import pytest

from scenes.harness import ARTIFACTS
from scenes.runner import SCENES, run_scenes

pytestmark = pytest.mark.e2e
ARTEFACTS = ("timeline.jsonl", "audio.wav", "video.mp4", "plot.png", "verdict.json")


@pytest.mark.parametrize("name", SCENES)
def test_scene_passes_quick(name):
    (verdict,) = run_scenes([name], ["piper", "espeak", "wyoming"], quick=True)
    failed = [c for c in verdict["checks"] if not c["passed"]]
    assert verdict["passed"], json.dumps(failed or verdict["checks"], indent=1, default=str)
    for artefact in ARTEFACTS:
        assert (ARTIFACTS / name / artefact).stat().st_size > 0, f"{name}/{artefact}"
