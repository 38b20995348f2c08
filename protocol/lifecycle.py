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


@register
@dataclass(frozen=True)
class Describe(Message):
    """Supervisor -> all actors (system channel): answer with your current descriptor."""

    TYPE = "describe"
    request_id: int = 0


@register
@dataclass(frozen=True)
class Info(Message):
    """Actor -> supervisor (health channel): the answer to Describe."""

    TYPE = "info"
    actor: str
    pid: int
    request_id: int = 0
    info: dict = field(default_factory=dict)


@register
@dataclass(frozen=True)
class EpochAck(Message):
    """Actor -> supervisor (health channel): this process has dropped everything older than
    ``epoch``. The supervisor re-broadcasts a barge-in until every process has acknowledged."""

    TYPE = "epoch_ack"
    actor: str
    pid: int
    epoch: int
