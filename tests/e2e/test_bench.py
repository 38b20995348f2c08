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
