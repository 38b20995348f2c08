"""CPU and RSS of a running system's processes, sampled in a thread."""

from __future__ import annotations

import threading
import time

import numpy as np
import psutil

from .session import Session


class ResourceSampler:
    """RSS and CPU of the supervisor and every actor, every second."""

    def __init__(self, session: Session, interval: float = 1.0):
        status = session.control.call("status")
        self.procs = {"supervisor": psutil.Process(status["supervisor"]["pid"])}
        self.procs.update({name: psutil.Process(a["pid"]) for name, a in status["actors"].items()})
        for p in self.procs.values():
            p.cpu_percent(None)
        self.samples: list[dict] = []
        self.t0 = time.monotonic()  # sample times are seconds since this moment
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self._thread.start()

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            row = {"t": time.monotonic() - self.t0}
            for name, p in self.procs.items():
                try:
                    row[name] = (p.memory_info().rss / 2**20, p.cpu_percent(None))
                except psutil.Error:
                    pass
            self.samples.append(row)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(3)

    def rss_slope_mb_per_min(self, name: str, after_s: float = 0.0) -> float:
        rows = [(r["t"], r[name][0]) for r in self.samples if name in r and r["t"] >= after_s]
        if len(rows) < 3:
            return 0.0
        t, m = np.array(rows).T
        return float(np.polyfit(t, m, 1)[0] * 60)

    def rss_growth_mb(self, name: str, start: float, end: float) -> float:
        values = [r[name][0] for r in self.samples if name in r and start <= r["t"] <= end]
        return max(values) - values[0] if values else 0.0

    def mean_cpu(self, name: str, start: float, end: float) -> float:
        values = [r[name][1] for r in self.samples if name in r and start <= r["t"] < end]
        return float(np.mean(values)) if values else 0.0
