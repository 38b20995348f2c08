"""An actor's side of crash recovery (see ``protocol.recovery`` for the protocol).

The supervisor broadcasts the state of one recovery again and again until the actors
concerned have acknowledged it, so an actor may see a phase many times, or see a later
phase first (a replacement that joined late). :class:`RecoveryRole` turns that stream into
one call per phase, in order, and acknowledges each: ``on_peer_down``, ``on_peer_rejoined``,
``on_rewind``, ``on_recovered`` on the actor, each optional. A handler that returns False
is not done yet (it is called again on the next broadcast, and nothing is acknowledged).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from protocol import Recovery, RecoveryAck

if TYPE_CHECKING:
    from .runtime import ActorContext

PHASES = ("down", "rejoined", "rewind", "done")
HANDLERS = {"down": "on_peer_down", "rejoined": "on_peer_rejoined", "rewind": "on_rewind", "done": "on_recovered",
            "cancelled": "on_recovered"}


class RecoveryRole:
    def __init__(self, ctx: "ActorContext"):
        self.ctx = ctx
        self.recovery_id = 0
        self.applied = -1  # index in PHASES of the last phase handled for recovery_id
        self.current: Recovery | None = None
        self.rewound = 0  # the last recovery whose rewind this actor applied (stamped on its grants)

    @property
    def active(self) -> bool:
        """A recovery has started and is not over yet."""
        return self.current is not None and self.applied < len(PHASES) - 1

    def on_recovery(self, actor: Any, msg: Recovery) -> None:
        if msg.epoch < self.ctx.epoch or msg.recovery_id < self.recovery_id:
            return  # a barge-in has dropped what that recovery was about
        if msg.recovery_id > self.recovery_id:
            self.recovery_id, self.applied = msg.recovery_id, -1
        self.current = msg
        for phase in self.phases_to_apply(msg.phase):
            if phase == "rewind" and self.ctx.name in msg.scope:
                self.rewound = msg.recovery_id  # before the handler: the grants it makes are from after
            handler = getattr(actor, HANDLERS[phase], None)
            if handler is not None and handler(msg) is False:
                return
            self.applied = PHASES.index(phase) if phase in PHASES else len(PHASES) - 1
            if phase in ("rewind", "done", "cancelled") and msg.actor == self.ctx.name:
                self.ctx.stop_rejoining()  # placed: from now on this replacement takes data
        self.ctx.request(RecoveryAck(actor=self.ctx.name, pid=self.ctx.incarnation, recovery_id=msg.recovery_id,
                                     phase=msg.phase))

    def phases_to_apply(self, phase: str) -> list[str]:
        if phase == "cancelled":
            return ["cancelled"] if self.applied < len(PHASES) - 1 else []
        return list(PHASES[self.applied + 1: PHASES.index(phase) + 1])
