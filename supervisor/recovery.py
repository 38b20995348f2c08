"""The supervisor's side of crash recovery: one :class:`RecoveryRun` per replaced actor.

A run moves through the phases of ``protocol.recovery`` (down, rejoined, rewind, done) and
broadcasts its state every RESEND_S until the actors it waits for have acknowledged, so a
lost broadcast or a replacement that subscribed late changes nothing. It never blocks:
the arbiter calls :meth:`RecoveryCoordinator.tick` from its loop.

Where a recovery cannot work (the owner never says where to resume, a second actor dies
while one is under way), the coordinator gives up and says so; the arbiter then falls back
to a new epoch, which drops what was in flight but leaves a consistent system.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from protocol import Recovery, RecoveryAck, ResumePoint
from protocol.names import ACTOR_NAMES, recovery_owner, recovery_scope

#: How often the current state is broadcast again while someone has not acknowledged it.
RESEND_S = 0.1
#: How long the owner may take to say where to resume, and the scope to apply the rewind.
OWNER_TIMEOUT_S = 3.0
REWIND_TIMEOUT_S = 5.0
#: How long "done" is repeated for actors that have not seen it (a best effort: nothing waits on it).
DONE_REPEAT_S = 1.0


@dataclass
class RecoveryRun:
    recovery_id: int
    actor: str
    epoch: int
    old_pid: int
    started_at: float
    pid: int = 0
    phase: str = "down"
    phase_at: float = 0.0
    resume: ResumePoint | None = None
    acked: set = field(default_factory=set)
    sent_at: float = 0.0
    times: dict = field(default_factory=dict)  # phase -> seconds after the death

    @property
    def scope(self) -> tuple[str, ...]:
        return recovery_scope(self.actor)

    @property
    def owner(self) -> str:
        return recovery_owner(self.actor)

    def message(self) -> Recovery:
        r = self.resume
        return Recovery(recovery_id=self.recovery_id, actor=self.actor, phase=self.phase, epoch=self.epoch, pid=self.pid,
                        scope=self.scope, owner=self.owner,
                        resume_frame=r.resume_frame if r else -1, resume_chunk=r.resume_chunk if r else -1,
                        chunk_start=r.chunk_start if r else -1, skip_samples=r.skip_samples if r else 0)

    def waiting_for(self, alive: set[str]) -> set[str]:
        """Who must acknowledge the current phase before the run moves on (or stops resending)."""
        if self.phase == "down":
            return (set(self.scope) - {self.actor}) & alive
        if self.phase == "rejoined":
            return {self.actor} if self.actor == ACTOR_NAMES[0] else set()  # the owner answers with a ResumePoint
        if self.phase == "rewind":
            return set(self.scope) & alive
        return alive  # done / cancelled: repeated for a while, nobody waits on it


class RecoveryCoordinator:
    def __init__(self, broadcast: Callable[[Recovery], None], emit: Callable[..., None]):
        self.broadcast, self.emit = broadcast, emit
        self.run: RecoveryRun | None = None
        self.next_id = 1
        self.completed = 0
        self.failed = 0

    @property
    def active(self) -> bool:
        return self.run is not None and self.run.phase not in ("done", "cancelled")

    # -- what the arbiter tells it --------------------------------------------------------------
    def actor_died(self, actor: str, old_pid: int, epoch: int) -> bool:
        """Start recovering ``actor``; False when it cannot (one is already under way)."""
        if actor not in ACTOR_NAMES or self.active:
            return False
        now = time.monotonic()
        self.run = RecoveryRun(self.next_id, actor, epoch, old_pid, started_at=now, phase_at=now)
        self.next_id += 1
        self.emit("recovery", "warn", data={"recovery": self.run.recovery_id, "actor": actor, "phase": "down",
                                            "scope": list(self.run.scope), "owner": self.run.owner})
        self.send(now)
        return True

    def actor_ready(self, actor: str, pid: int) -> None:
        run = self.run
        if run is not None and run.phase == "down" and run.actor == actor:
            run.pid = pid
            self.advance("rejoined")

    def on_resume_point(self, msg: ResumePoint) -> None:
        run = self.run
        if run is None or run.phase != "rejoined" or msg.recovery_id != run.recovery_id or msg.actor != run.owner:
            return
        run.resume = msg
        self.advance("rewind", data={"resume_frame": msg.resume_frame, "resume_chunk": msg.resume_chunk,
                                     "chunk_start": msg.chunk_start, "skip_samples": msg.skip_samples})

    def on_ack(self, msg: RecoveryAck, expected_pid: int | None) -> None:
        run = self.run
        if run is None or msg.recovery_id != run.recovery_id or msg.phase != run.phase:
            return
        if msg.actor == run.actor and run.phase != "down" and msg.pid != run.pid:
            return  # the dead one's ack, late
        if expected_pid is not None and msg.pid != expected_pid:
            return
        run.acked.add(msg.actor)

    def cancel(self, why: str) -> None:
        """A barge-in (or a fallback epoch): what the recovery was restoring is dropped anyway."""
        if self.active:
            self.emit("recovery", "warn", data={"recovery": self.run.recovery_id, "actor": self.run.actor,
                                                "phase": "cancelled", "why": why})
            self.run.phase, self.run.phase_at, self.run.acked = "cancelled", time.monotonic(), set()
            self.send(time.monotonic())

    # -- the loop -------------------------------------------------------------------------------
    def tick(self, now: float, alive: set[str]) -> str:
        """Resend, move on, or time out. Returns why the run failed ("" if it did not)."""
        run = self.run
        if run is None:
            return ""
        waiting = run.waiting_for(alive) - run.acked
        if run.phase == "rejoined" and run.actor == ACTOR_NAMES[0] and not waiting:
            self.advance("done")
        elif run.phase == "rewind" and not waiting:
            self.advance("done")
        elif run.phase == "rejoined" and now - run.phase_at > OWNER_TIMEOUT_S and run.actor != ACTOR_NAMES[0]:
            return self.give_up(f"{run.owner} did not say where to resume within {OWNER_TIMEOUT_S:.0f} s")
        elif run.phase == "rewind" and now - run.phase_at > REWIND_TIMEOUT_S:
            return self.give_up(f"{sorted(waiting)} did not apply the rewind within {REWIND_TIMEOUT_S:.0f} s")
        elif run.phase in ("done", "cancelled") and (not waiting or now - run.phase_at > DONE_REPEAT_S):
            self.run = None
            return ""
        if self.run is not None and now - self.run.sent_at >= RESEND_S:
            self.send(now)
        return ""

    def advance(self, phase: str, data: dict | None = None) -> None:
        run = self.run
        now = time.monotonic()
        run.phase, run.phase_at, run.acked = phase, now, set()
        run.times[phase] = round(now - run.started_at, 3)
        if phase == "done":
            self.completed += 1
        self.emit("recovery", data={"recovery": run.recovery_id, "actor": run.actor, "phase": phase,
                                    "after_s": run.times[phase], **(data or {})})
        self.send(now)

    def give_up(self, why: str) -> str:
        run = self.run
        self.failed += 1
        self.emit("recovery", "error", data={"recovery": run.recovery_id, "actor": run.actor, "phase": run.phase,
                                             "why": why})
        self.cancel(why)
        return why

    def send(self, now: float) -> None:
        self.run.sent_at = now
        self.broadcast(self.run.message())

    def describe(self) -> dict:
        run = self.run
        current = None if run is None else {"recovery": run.recovery_id, "actor": run.actor, "phase": run.phase,
                                             "times": run.times}
        return {"current": current, "completed": self.completed, "failed": self.failed}
