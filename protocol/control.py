"""Control family: the system broadcast channel (barge-in epochs, shutdown) and the
requests actors send to the supervisor. System messages skip ahead of data: every actor
polls its system socket before its inbox."""

from __future__ import annotations

from dataclasses import dataclass

from .envelope import Message, register


@register
@dataclass(frozen=True)
class BargeIn(Message):
    """Everything older than ``epoch`` is stale: drop it now. ``turn``: the sender's turn it
    interrupts (protocol/ingress.py; -1 = the latest named, -2 = none: a restart, or an
    ingress barge-in whose turn the parser has already ended), whose tokens in flight are dropped."""

    TYPE = "barge_in"
    epoch: int
    reason: str = ""
    issued_at_ns: int = 0
    turn: int = -2


@register
@dataclass(frozen=True)
class EpochRequest(Message):
    """An actor asks the supervisor to start a new epoch (e.g. ingress barge-in)."""

    TYPE = "epoch_request"
    source: str
    reason: str
    requested_at_ns: int = 0


@register
@dataclass(frozen=True)
class Shutdown(Message):
    """Finish the current frame, flush sinks, exit."""

    TYPE = "shutdown"
    reason: str = ""


@register
@dataclass(frozen=True)
class ConfigUpdate(Message):
    """Live configuration: ``changes`` maps "section.key" to the new value. Actors apply
    it at their next safe boundary (the TTS: the next chunk), never mid-chunk."""

    TYPE = "config_update"
    version: int
    changes: dict


@register
@dataclass(frozen=True)
class TakeOver(Message):
    """Supervisor -> a warm spare (system channel): the process ``pid`` takes ``actor``'s
    place now (binds its inbox, says READY, and is placed by the recovery under way)."""

    TYPE = "take_over"
    actor: str
    pid: int
