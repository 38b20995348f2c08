"""`personas train lips` as a user runs it: data made, a model trained and evaluated, the
weights and the card written; the same command twice gives the same weights, bit for bit."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np

from actors.lips import AudioLips


def train(out) -> dict:
    done = subprocess.run([sys.executable, "-m", "supervisor.personas_cli_entry", "train", "lips", "--quick",
                           "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(out.with_suffix(".json").read_text())


def test_training_reproduces_its_weights(tmp_path):
    first, second = train(tmp_path / "a" / "lips.npz"), train(tmp_path / "b" / "lips.npz")
    a, b = (tmp_path / "a" / "lips.npz").read_bytes(), (tmp_path / "b" / "lips.npz").read_bytes()
    assert hashlib.sha256(a).hexdigest() == first["sha256"] == second["sha256"]
    assert a == b
    model = AudioLips.load(tmp_path / "a" / "lips.npz")  # what the tts would load
    assert model.classes(np.zeros(22050, np.int16), 22050).shape == (100,)
    for held_out in ("unseen_sentences", "unseen_voice"):
        figures = first["evaluation"][held_out]
        assert figures["utterances"] > 0 and -1.0 <= figures["model"]["mouth_opening_r"] <= 1.0
        assert "shadow_alignment" in figures
