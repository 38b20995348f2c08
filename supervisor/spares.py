"""Warm spares: for the actors that take seconds to start (the TTS loads its voices, the
driver its renderer), a second process, loaded and warmed, waits on the system channel.
When the active one dies the spare takes its place (``TakeOver``): it binds the inbox and
says READY within milliseconds, and the recovery places it like any replacement. A new
spare is started once the recovery is over, so it never competes with one.

A spare beats on the health channel like an actor; one that dies or stops beating is
replaced, and after MAX_FAILURES in a row the actor does without (a plain restart).
"""

from __future__ import annotations

import logging
import subprocess
import time
from dataclasses import dataclass
from typing import Callable

import psutil

from protocol import Heartbeat, TakeOver

LOG = logging.getLogger("personas.supervisor")
#: How often a TakeOver is repeated until the spare says READY.
TAKE_OVER_RESEND_S = 0.3
#: Spares of one actor that may fail in a row before it does without.
MAX_FAILURES = 3


@dataclass
class Spare:
    name: str
    proc: subprocess.Popen
    started_at: float
    last_beat: float = 0.0

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def ready(self) -> bool:
        return self.last_beat > 0 and self.proc.poll() is None


class SparePool:
    def __init__(self, names: list[str], spawn: Callable[[str], subprocess.Popen], send: Callable[[TakeOver], None],
                 emit: Callable[..., None], beat_timeout_s: float, ready_timeout_s: float):
        self.names, self.spawn, self.send, self.emit = list(names), spawn, send, emit
        self.beat_timeout_s, self.ready_timeout_s = beat_timeout_s, ready_timeout_s
        self.spares: dict[str, Spare] = {}
        self.taking: dict[str, tuple[int, float]] = {}  # actor -> (spare pid, last TakeOver sent)
        self.failures: dict[str, int] = {name: 0 for name in self.names}
        self.enabled = False  # from the first time the system is running (start-up comes first)
        self.taken = 0

    def tick(self, now: float, recovering: bool) -> None:
        """Check the spares, start missing ones (not while a recovery runs), repeat TakeOvers."""
        for name, spare in list(self.spares.items()):
            why = self.trouble(spare, now)
            if why:
                self.drop(spare, why)
        if self.enabled and not recovering:
            for name in self.names:
                if name not in self.spares and name not in self.taking and self.failures[name] < MAX_FAILURES:
                    self.spares[name] = Spare(name, self.spawn(name), started_at=now)
        for name, (pid, sent_at) in list(self.taking.items()):
            if now - sent_at >= TAKE_OVER_RESEND_S:
                self.taking[name] = (pid, now)
                self.send(TakeOver(actor=name, pid=pid))

    def trouble(self, spare: Spare, now: float) -> str:
        if spare.proc.poll() is not None:
            return f"exited with code {spare.proc.returncode}"
        if not spare.last_beat and now - spare.started_at > self.ready_timeout_s:
            return f"not ready after {self.ready_timeout_s:.0f}s"
        if spare.last_beat and now - spare.last_beat > self.beat_timeout_s:
            return f"no heartbeat for {now - spare.last_beat:.1f}s"
        return ""

    def drop(self, spare: Spare, why: str) -> None:
        LOG.warning("spare %s (pid %d) %s", spare.name, spare.pid, why)
        self.emit("spare", "warn", data={"actor": spare.name, "pid": spare.pid, "why": why})
        kill(spare.proc)
        del self.spares[spare.name]
        self.failures[spare.name] += 1

    def on_beat(self, msg: Heartbeat) -> bool:
        """A spare's heartbeat (True), or not one of ours (False)."""
        spare = self.spares.get(msg.actor)
        if spare is None or spare.pid != msg.pid:
            return False
        if not spare.last_beat:
            self.failures[spare.name] = 0
            self.emit("spare", data={"actor": spare.name, "pid": spare.pid, "ready_s": round(time.monotonic() - spare.started_at, 2)})
        spare.last_beat = time.monotonic()
        return True

    def take(self, name: str) -> Spare | None:
        """The ready spare for ``name``, told to take over now; None if there is none."""
        spare = self.spares.get(name)
        if spare is None or not spare.ready:
            return None
        del self.spares[name]
        self.taking[name] = (spare.pid, time.monotonic())
        self.send(TakeOver(actor=name, pid=spare.pid))
        self.taken += 1
        return spare

    def took_over(self, name: str, pid: int) -> None:
        """The spare said READY as ``name``."""
        if self.taking.get(name, (0, 0))[0] == pid:
            del self.taking[name]

    def stop(self) -> list[subprocess.Popen]:
        """The spares' processes, for the supervisor's orderly stop."""
        procs = [s.proc for s in self.spares.values()]
        self.spares.clear()
        self.enabled = False
        return procs

    def describe(self) -> dict:
        return {"actors": self.names, "taken": self.taken,
                "ready": {n: s.pid for n, s in self.spares.items() if s.ready},
                "loading": {n: s.pid for n, s in self.spares.items() if not s.ready}}


def kill(proc: subprocess.Popen) -> None:
    try:
        for child in psutil.Process(proc.pid).children(recursive=True):
            child.kill()
        proc.kill()
        proc.wait(timeout=0.5)
    except (psutil.NoSuchProcess, ProcessLookupError, subprocess.TimeoutExpired):
        pass
