"""What every scene shares: a live system on private ports, a lossless capture of what the
player presented, resource sampling, a file-system watch, and the artefacts.

A scene is a function ``run(scene: Scene) -> None`` that drives the system and records
checks with ``scene.check(name, passed, value, expected)``. Checks assert shapes (no
underflow, converging sizes, flat memory), not single magic numbers.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from clients.capture import AVCollector
from clients.ports import write_private_config
from clients.resources import ResourceSampler
from clients.session import Session

ARTIFACTS = Path(__file__).resolve().parent / "_artifacts"


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
    resources: ResourceSampler | None = None

    def check(self, name: str, passed: bool, value, expected: str) -> bool:
        self.checks.append(Check(name, bool(passed), value, expected))
        return bool(passed)

    def start(self, sections: dict | None = None, record: bool = True) -> Session:
        """Start the system with this scene's config (private ports, a private TMPDIR) and
        begin capturing."""
        config_path = write_private_config(self.dir / "config.toml", sections or {})
        timeline = self.dir / "timeline.jsonl"
        timeline.unlink(missing_ok=True)
        self.tmp = self.dir / "tmp"
        self.tmp.mkdir(exist_ok=True)
        self.session = Session(str(config_path), record=str(self.dir / "video.mp4") if record else None,
                               timeline_jsonl=timeline, log=self.dir / "supervisor.log",
                               env={"TMPDIR": str(self.tmp)})
        self.session.start()
        self.capture = AVCollector(self.session.endpoints["av_out"], idle_pixels=False)
        if not self.capture.wait_connected(10):
            raise RuntimeError("the player's av_out did not accept the capture's connection")
        self.resources = ResourceSampler(self.session)
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


def process_tree(pids: list[int]) -> list[int]:
    """The processes and all their descendants (an actor's helper process counts as the actor)."""
    import psutil

    found = set(pids)
    for pid in pids:
        try:
            found |= {child.pid for child in psutil.Process(pid).children(recursive=True)}
        except psutil.Error:
            pass
    return sorted(found)


def shared_memory_in_use(pids: list[int]) -> list[str]:
    """Files under /dev/shm the processes (or their helpers) have open or mapped and that still
    exist: shared memory is ours only when we hold it, since any program may use /dev/shm.
    POSIX semaphores (``sem.*``, a queue's lock to a helper process) and unlinked segments
    hold no data anyone could read back, so they do not count."""
    found = set()
    for pid in process_tree(pids):
        try:
            maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
            fds = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
        except OSError:
            continue
        paths = [line.split(None, 5)[5] for line in maps if len(line.split(None, 5)) == 6] + fds
        found |= {f"{pid}:{path}" for path in paths if path.startswith("/dev/shm/") and not path.endswith("(deleted)")
                  and not path.startswith("/dev/shm/sem.")}
    return sorted(found)


def written_files(pids: list[int], allowed: list[str]) -> list[str]:
    """Regular files the processes (and their helpers) hold open for writing right now (from /proc)."""
    found = []
    for pid in process_tree(pids):
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
