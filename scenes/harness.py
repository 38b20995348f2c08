"""What every scene shares: a live system on private ports, a lossless capture of what the
player presented, resource sampling, a file-system watch, and the artefacts.

A scene is a function ``run(scene: Scene) -> None`` that drives the system and records
checks with ``scene.check(name, passed, value, expected)``. Checks assert shapes (no
underflow, converging sizes, flat memory), not single magic numbers.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil

from actors.config import load_config
from supervisor.client import AVCollector
from supervisor.session import Session

ARTIFACTS = Path(__file__).resolve().parent / "_artifacts"
ENDPOINTS = ("ingress", "timeline", "control", "av_out", "timeline_in", "system", "health",
             "parser", "tts", "stitcher", "driver", "player", "web")


@dataclass
class Check:
    name: str
    passed: bool
    value: object
    expected: str


@dataclass
class Scene:
    name: str
    quick: bool
    adapters: list[str]
    dir: Path
    checks: list[Check] = field(default_factory=list)
    notes: dict = field(default_factory=dict)
    session: Session | None = None
    capture: AVCollector | None = None
    resources: "ResourceSampler | None" = None

    def check(self, name: str, passed: bool, value, expected: str) -> bool:
        self.checks.append(Check(name, bool(passed), value, expected))
        return bool(passed)

    def start(self, sections: dict | None = None, record: bool = True) -> Session:
        """Start the system with this scene's config (private ports, a private TMPDIR) and
        begin capturing."""
        config_path = write_scene_config(self.dir / "config.toml", sections or {})
        timeline = self.dir / "timeline.jsonl"
        timeline.unlink(missing_ok=True)
        self.tmp = self.dir / "tmp"
        self.tmp.mkdir(exist_ok=True)
        self.session = Session(str(config_path), record=str(self.dir / "video.mp4") if record else None,
                               timeline_jsonl=timeline, log=self.dir / "supervisor.log",
                               env={"TMPDIR": str(self.tmp)})
        self.session.start()
        self.capture = AVCollector(self.session.endpoints["av_out"], idle_pixels=False)
        self.resources = ResourceSampler(self.session)
        time.sleep(0.3)
        return self.session

    def stop(self) -> None:
        if self.resources:
            self.resources.stop()
        if self.capture:
            self.capture.close()
        if self.session:
            self.session.stop()

    @property
    def events(self) -> list[dict]:
        return self.session.timeline.events if self.session else []

    def of(self, actor: str, stage: str, result: str | None = "ok", after: int = 0) -> list[dict]:
        return [e for e in self.events[after:] if e["actor"] == actor and e["stage"] == stage
                and (result is None or e["result"] == result)]

    def verdict(self, started: float) -> dict:
        return {"scene": self.name, "passed": bool(self.checks) and all(c.passed for c in self.checks),
                "quick": self.quick, "adapters": self.adapters, "duration_s": round(time.monotonic() - started, 1),
                "checks": [c.__dict__ for c in self.checks], "notes": self.notes,
                "artifacts": sorted(p.name for p in self.dir.iterdir())}


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


class FileWatch:
    """Snapshot of files (path -> size, mtime) in the places a hot path could write to."""

    def __init__(self, roots: list[Path], ignore: list[Path]):
        self.roots = [r for r in roots if r.exists()]
        self.ignore = [str(p) for p in ignore]
        self.before = self._scan()

    def _scan(self) -> dict[str, tuple[int, int]]:
        seen = {}
        for root in self.roots:
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames[:] = [d for d in dirnames if d not in (".git", "__pycache__", ".pytest_cache", ".hypothesis")]
                for name in filenames:
                    path = os.path.join(dirpath, name)
                    if any(path.startswith(i) for i in self.ignore):
                        continue
                    try:
                        st = os.stat(path)
                    except OSError:
                        continue
                    seen[path] = (st.st_size, st.st_mtime_ns)
        return seen

    def changed(self) -> list[str]:
        after = self._scan()
        return sorted(p for p, v in after.items() if self.before.get(p) != v)


def written_files(pids: list[int], allowed: list[str]) -> list[str]:
    """Regular files the processes hold open for writing right now (from /proc)."""
    found = []
    for pid in pids:
        fd_dir = Path(f"/proc/{pid}/fd")
        try:
            fds = list(fd_dir.iterdir())
        except OSError:
            continue
        for fd in fds:
            if fd.name in ("0", "1", "2"):
                continue  # inherited stdio: where the operator sends logs, not the hot path
            try:
                target = os.readlink(fd)
                flags = int(Path(f"/proc/{pid}/fdinfo/{fd.name}").read_text().split("flags:")[1].split()[0], 8)
            except (OSError, IndexError, ValueError):
                continue
            writable = flags & (os.O_WRONLY | os.O_RDWR)
            if target.startswith("/") and writable and os.path.isfile(target) and target not in allowed:
                if not target.startswith(("/dev/", "/proc/")):
                    found.append(f"{pid}:{target}")
    return found


def write_scene_config(path: Path, sections: dict) -> Path:
    """Private loopback ports (so a scene never collides with a running system) plus overrides."""
    sockets = []
    for _ in ENDPOINTS:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
    lines = ["[endpoints]"] + [f'{k} = "tcp://127.0.0.1:{s.getsockname()[1]}"' for k, s in zip(ENDPOINTS, sockets)]
    for s in sockets:
        s.close()
    sections = {**sections, "web": {"enabled": False, **sections.get("web", {})}}  # scenes need no browser
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    load_config(path)
    return path


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
