"""Recovery family: how a crashed actor is replaced without losing or repeating a word.

Text is owned until it is heard. The parser keeps every chunk it has sent until the player
says it has been heard (:class:`Heard`, cumulative), and journals what it holds to the
supervisor (:class:`Journal`), which hands it to a replacement parser (:class:`Restore`).

When any other media actor dies, the supervisor runs one :class:`Recovery`, broadcast on
the system channel and re-sent until every actor concerned has acknowledged the phase
(:class:`RecoveryAck`):

``down``
    The actor is gone. Everything upstream of it stops sending towards it.
``rejoined``
    Its replacement is ready. The surviving actor just below the gap (the *owner*) says
    where the timeline must continue (:class:`ResumePoint`): the first frame it lacks, the
    chunk that frame belongs to and where that chunk starts on the clock.
``rewind``
    Everything upstream drops its work in flight; the parser sends again from that chunk,
    the TTS sends its audio from the first sample not yet delivered, and the stitcher puts
    it back at the same place on the clock. Synthesis is deterministic, so the frames that
    arrive are the frames that were lost: nothing is spoken twice, nothing is skipped.
``done`` / ``cancelled``
    Recovered (or overtaken by a barge-in, which drops everything anyway).

The recovery stays inside the epoch: a crash is not an interruption.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .envelope import Message, ProtocolError, brief, register

RECOVERY_PHASES = ("down", "rejoined", "rewind", "done", "cancelled")


@register
@dataclass(frozen=True)
class Recovery(Message):
    """Supervisor -> everyone (system channel): the state of the recovery ``recovery_id``.

    ``scope`` names the actors that drop their work in flight at ``rewind`` (from the parser
    to the one that died; the driver too when the player died). ``resume_*`` are set from
    the rewind phase on.
    """

    TYPE = "recovery"
    recovery_id: int
    actor: str
    phase: str
    epoch: int
    pid: int = 0  # the replacement's pid from "rejoined" on
    scope: tuple = ()
    owner: str = ""
    resume_frame: int = -1
    resume_chunk: int = -1
    chunk_start: int = -1
    skip_samples: int = 0

    def validate(self) -> None:
        if self.phase not in RECOVERY_PHASES:
            raise ProtocolError("malformed", f"recovery phase {brief(self.phase)}")


@register
@dataclass(frozen=True)
class RecoveryAck(Message):
    """Actor -> supervisor (health): this process has applied ``phase`` of ``recovery_id``."""

    TYPE = "recovery_ack"
    actor: str
    pid: int
    recovery_id: int
    phase: str


@register
@dataclass(frozen=True)
class ResumePoint(Message):
    """Owner -> supervisor (health): where the timeline continues after ``recovery_id``.

    ``resume_frame``: the first frame the owner does not hold. ``resume_chunk``: the chunk
    whose audio that frame belongs to (-1: none is in progress: send again whatever was not
    heard). ``chunk_start``: that chunk's first sample on the global clock. ``skip_samples``:
    samples of that chunk (global clock) already delivered below the gap.
    """

    TYPE = "resume_point"
    actor: str
    pid: int
    recovery_id: int
    resume_frame: int
    resume_chunk: int = -1
    chunk_start: int = -1
    skip_samples: int = 0


@register
@dataclass(frozen=True)
class Heard(Message):
    """Player -> parser: every chunk up to ``through_sequence`` of ``epoch`` has been presented."""

    TYPE = "heard"
    epoch: int
    through_sequence: int


@register
@dataclass(frozen=True)
class Journal(Message):
    """Parser -> supervisor (ledger endpoint): what changed in the text the parser owns.

    ``chunks`` and ``markers`` are the ones closed since the last journal (TextChunk and
    VisualMarker fields as maps); ``parser_state`` is the stream parser's whole state now
    (the open chunk's text, the tag being read, the sequence counter); ``heard_through`` is
    the player's latest acknowledgement.
    """

    TYPE = "journal"
    epoch: int
    utterance_id: int
    parser_state: dict
    chunks: tuple = ()
    markers: tuple = ()
    heard_through: int = -1


@register
@dataclass(frozen=True)
class RestoreRequest(Message):
    """Replacement parser -> supervisor (health): send me what the last one owned."""

    TYPE = "restore_request"
    actor: str
    pid: int


@register
@dataclass(frozen=True)
class Restore(Message):
    """Supervisor -> replacement parser (its inbox): the owned text, in parts of bounded
    size; the part with ``last`` carries the stream parser's state."""

    TYPE = "restore"
    epoch: int
    utterance_id: int
    chunks: tuple = ()
    markers: tuple = ()
    parser_state: dict = field(default_factory=dict)
    last: bool = False
