"""Lifecycle family: what actors tell the supervisor about themselves."""

from __future__ import annotations

from dataclasses import dataclass, field

from .envelope import Message, register


@register
@dataclass(frozen=True)
class Ready(Message):
    """Models loaded and warmed; ``info`` is the actor's describe() descriptor."""

    TYPE = "ready"
    actor: str
    pid: int
    info: dict = field(default_factory=dict)


@register
@dataclass(frozen=True)
class Heartbeat(Message):
    """Sent from the actor's main loop every heartbeat interval (a hung loop stops it)."""

    TYPE = "heartbeat"
    actor: str
    pid: int
    seq: int
    epoch: int = 0
    stats: dict = field(default_factory=dict)
