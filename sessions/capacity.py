"""How many sessions fit: the one formula, and where its figures come from.

A speaking session's cost (CPU cores, resident memory) is measured, never guessed:
``personas bench sessions`` measures it on the machine and writes ``capacity.json`` (into
the manager's state directory with ``--save``; the repository ships the figure measured on
the reference 2-core machine in ``configs/capacity.json``). While sessions speak, the
manager keeps measuring and uses the live figure when it is higher.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from protocol.config import REPO_ROOT

SHIPPED = REPO_ROOT / "configs" / "capacity.json"
FILE_NAME = "capacity.json"
#: Live samples of a speaking session's CPU before they may raise the measured figure.
MIN_LIVE_SAMPLES = 5
#: Smoothing of the live per-session CPU figure.
LIVE_ALPHA = 0.2


@dataclass
class Cost:
    """What one speaking session needs, and where the figure comes from."""

    cpu: float  # cores
    rss_mb: float
    source: str


def measured_cost(state_dir: Path, config: dict) -> Cost:
    """The configured figures when set, else the machine's own measurement, else the shipped one."""
    cfg = config["sessions"]
    for path in (Path(state_dir) / FILE_NAME, SHIPPED):
        try:
            record = json.loads(path.read_text())
            cost = Cost(float(record["cpu_per_session"]), float(record["rss_mb_per_session"]),
                        f"{path} ({record.get('method', 'personas bench sessions')})")
            if cost.cpu > 0 and cost.rss_mb > 0 and math.isfinite(cost.cpu + cost.rss_mb):
                break
        except (OSError, ValueError, KeyError, TypeError):
            continue
    else:
        raise RuntimeError(f"no session cost measurement in {state_dir} or {SHIPPED}: run `personas bench sessions --save`")
    if float(cfg["cpu_per_session"]) > 0:
        cost = Cost(float(cfg["cpu_per_session"]), cost.rss_mb, "sessions.cpu_per_session")
    return cost


def save_measurement(state_dir: Path, record: dict) -> Path:
    path = Path(state_dir) / FILE_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def session_capacity(cpu_budget: float, memory_budget_mb: float, cost: Cost) -> int:
    """Sessions that can speak at once without underflowing: the tighter of CPU and memory."""
    return max(0, min(math.floor(cpu_budget / cost.cpu + 1e-9), math.floor(memory_budget_mb / cost.rss_mb + 1e-9)))


def cpu_budget(config: dict) -> float:
    configured = float(config["sessions"]["cpu_budget"])
    return configured if configured > 0 else float(os.cpu_count() or 1)


class LiveCost:
    """The measured cost, corrected upwards by what speaking sessions are seen to use."""

    def __init__(self, measured: Cost):
        self.measured = measured
        self.cpu = 0.0
        self.samples = 0

    def observe(self, cpu: float) -> None:
        self.cpu = cpu if self.samples == 0 else (1 - LIVE_ALPHA) * self.cpu + LIVE_ALPHA * cpu
        self.samples += 1

    @property
    def cost(self) -> Cost:
        if self.samples >= MIN_LIVE_SAMPLES and self.cpu > self.measured.cpu:
            return Cost(round(self.cpu, 3), self.measured.rss_mb, f"live ({self.samples} samples of speaking sessions)")
        return self.measured


def memory_budget_mb(config: dict) -> float:
    import psutil

    configured = float(config["sessions"]["memory_budget_mb"])
    return configured if configured > 0 else 0.8 * psutil.virtual_memory().total / 2**20
