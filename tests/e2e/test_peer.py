"""`personas bench peer` runs end to end: Personas (sentence rule, clause-first) and Pipecat's
PiperTTSService, same voice and tokens, one run, each with its time to first audio and the
ratio. (No speed assertion: speed lives in the benchmark's numbers.)"""

import json
import subprocess
import sys

import pytest

from clients.ports import write_private_config

pytestmark = pytest.mark.e2e


def test_bench_peer_reports_both_figures(tmp_path):
    from bench.peer_bench import table_rows

    config = write_private_config(tmp_path / "c.toml")
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, "-m", "supervisor.personas_cli_entry", "bench", "peer", "--runs", "1",
                             "--json", str(out), "--config", str(config)], capture_output=True, text=True, timeout=400,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    peer = json.loads(out.read_text())["peer"]
    assert peer["pipecat"]["first_audio_ms"]["n"] == 1 and peer["pipecat"]["first_audio_ms"]["median"] > 0
    for mode in ("sentence", "clause"):
        assert peer["personas"][mode]["presented_ms"]["n"] == 1
        assert peer["ratio"][mode] != 0 and peer["target"][mode] > 0
    assert "Pipecat" in peer["method"] and peer["pipecat"]["version"]
    rows = table_rows(peer)
    assert len(rows) == 2 and all(row.count("|") == 5 and "Pipecat" in row for row in rows)
