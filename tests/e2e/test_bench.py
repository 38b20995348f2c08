"""The benchmark command runs end to end and reports each figure with its same-run floor.
(No speed assertions here: speed lives in the benchmark's numbers, not in tests.)"""

import json
import subprocess
import sys

import pytest

from clients.ports import write_private_config

pytestmark = pytest.mark.e2e


def test_bench_ttff_writes_figures_with_their_floor(tmp_path):
    config = write_private_config(tmp_path / "c.toml")
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, "-m", "supervisor.personas_cli_entry", "bench", "ttff", "--runs", "2",
                             "--json", str(out), "--config", str(config)], capture_output=True, text=True, timeout=300,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    ttff = json.loads(out.read_text())["ttff"]
    for mode, first in (("sentence", "Hello there, it is good to see you again."), ("clause", "Hello there,")):
        figures = ttff["modes"][mode]
        assert figures["first_fragment"] == first
        for key in ("generated_ms", "presented_ms", "floor_ms", "generated_from_first_token_ms"):
            assert figures[key]["n"] == 2
        assert figures["floor_ms"]["median"] > 0 and figures["ratio_generated_to_floor"] > 0
    assert "floor" in ttff["method"].lower() and "clause_gain_ms" in ttff


def test_bench_drift_and_lips_report_both_lip_sources(tmp_path):
    """The drift benchmark on a short narration: both lip sources measured on presented frames,
    each vowel's drift within the search range; the lip model's held-out figures beside the
    shadow alignment's. (Bounds only: the figures themselves are the benchmark's.)"""
    from bench.lips_bench import MAX_SHIFT_MS, drift, lips, table_rows

    text = ("The captain walked across the harbour at dawn. Far away, a large ship was waiting for the tide, "
            "and the sailors sang a happy song about home.")
    result = drift(None, (), text=text, echo=lambda _: None)  # on a private system of its own
    for source, reported in (("alignment", ["engine"]), ("audio", ["audio"])):
        figures = result[source]
        assert figures["lips_reported"] == reported
        assert figures["vowels"] >= 5 and figures["peaks"] >= 0.5 * figures["vowels"]
        assert 0 <= figures["abs_ms"]["median"] <= MAX_SHIFT_MS
    held_out = lips(held_out=2, echo=lambda _: None)
    for name in ("unseen_sentences", "unseen_voice"):
        assert held_out[name]["utterances"] >= 2 and "shadow_alignment" in held_out[name]
    assert held_out["lookahead_ms"] > 0 and held_out["ms_per_audio_second"] > 0
    assert len(table_rows(held_out, result)) == 2
