"""The text the parser owns until it is heard (crash recovery, see ``protocol.recovery``).

Every chunk the parser sends stays here until the player acknowledges it (Heard), with the
markers cut out of it. After a crash below the parser the recovery asks for everything from
one chunk on again (:meth:`OwnedText.resend_from`). Whatever changes is also journaled to
the supervisor's ledger once per loop turn, with the stream parser's state, so a
replacement parser starts from the same text (``Restore``).
"""

from __future__ import annotations

import dataclasses
from collections import deque
from typing import Callable

from protocol import Journal, TextChunk, VisualMarker

from .runtime import ActorContext

#: Chunks kept unheard before the oldest is let go (with an error): far more than the
#: credit windows below the parser can hold.
MAX_OWNED_CHUNKS = 512
MAX_OWNED_MARKERS = 1024
#: Text and markers per journal message (its header must stay well under the envelope's 64 KiB).
JOURNAL_TEXT_CHARS = 16_000
JOURNAL_MARKERS = 64


def as_record(msg: TextChunk | VisualMarker) -> dict:
    return {f.name: getattr(msg, f.name) for f in dataclasses.fields(msg)}


class OwnedText:
    def __init__(self, ctx: ActorContext, state_of: Callable[[], tuple[int, dict]]):
        self.ctx = ctx
        self.state_of = state_of  # () -> (utterance id, stream parser snapshot), for the journal
        self.new_chars = 0
        self.chunks: deque[TextChunk] = deque()  # sent, not yet heard, in sequence order
        self.markers: deque[VisualMarker] = deque()
        self.heard_through = -1
        self.epoch = ctx.epoch
        self.new_chunks: list[dict] = []  # closed since the last journal
        self.new_markers: list[dict] = []
        self.dirty = False

    # -- what the parser tells it ---------------------------------------------------------------
    def on_epoch(self, epoch: int) -> None:
        """A barge-in: what was owned will not be spoken."""
        self.chunks.clear(), self.markers.clear(), self.new_chunks.clear(), self.new_markers.clear()
        self.epoch, self.heard_through, self.new_chars, self.dirty = epoch, -1, 0, True

    def closed(self, chunk: TextChunk) -> None:
        """A chunk was parsed (journaled now, kept from when it is sent)."""
        self.new_chunks.append(as_record(chunk))
        self.new_chars += len(chunk.text)
        self.dirty = True

    def sent(self, chunk: TextChunk) -> None:
        if any(c.sequence_id == chunk.sequence_id for c in self.chunks):
            return  # sent again after a recovery: still the one entry
        self.chunks.append(chunk)
        if len(self.chunks) > MAX_OWNED_CHUNKS:
            lost = self.chunks.popleft()
            self.ctx.error("own", "too_many_unheard", f"chunk {lost.sequence_id} let go unheard (no player acks?)")

    def marker(self, marker: VisualMarker) -> None:
        self.markers.append(marker)
        if len(self.markers) > MAX_OWNED_MARKERS:
            self.markers.popleft()
        self.new_markers.append(as_record(marker))
        self.dirty = True

    def heard(self, epoch: int, through: int) -> None:
        if epoch != self.epoch or through <= self.heard_through:
            return
        self.heard_through = through
        while self.chunks and self.chunks[0].sequence_id <= through:
            self.chunks.popleft()
        while self.markers and self.markers[0].sequence_id <= through:
            self.markers.popleft()
        self.dirty = True

    # -- recovery -------------------------------------------------------------------------------
    def resend_from(self, sequence_id: int, skip_samples: int) -> tuple[list[TextChunk], list[VisualMarker]]:
        """What to send again after a crash below: every owned chunk from ``sequence_id`` on
        (all unheard ones for -1), the first told to skip what was already delivered."""
        first = sequence_id if sequence_id >= 0 else self.heard_through + 1
        chunks = [c for c in self.chunks if c.sequence_id >= first]
        if chunks and chunks[0].sequence_id == sequence_id and skip_samples > 0:
            chunks[0] = dataclasses.replace(chunks[0], resume_sample=skip_samples)
        markers = [m for m in self.markers if m.sequence_id >= first]
        return chunks, markers

    def touch(self) -> None:
        """The stream parser's state changed (a token came in): journal it this turn."""
        self.dirty = True

    def flush(self) -> None:
        """What changed, journaled (nothing when nothing did), in messages of bounded size;
        the stream parser's state rides on the last, so the ledger never holds a state whose
        chunks it lacks. Called after every ingress message that closed a lot, and at the
        end of each loop turn."""
        if not self.dirty:
            return
        utterance_id, parser_state = self.state_of()
        parts = bounded_parts(self.new_chunks, self.new_markers)
        for i, (chunks, markers) in enumerate(parts):
            last = i == len(parts) - 1
            self.ctx.journal(Journal(epoch=self.epoch, utterance_id=utterance_id,
                                     parser_state=parser_state if last else {}, chunks=tuple(chunks),
                                     markers=tuple(markers), heard_through=self.heard_through))
        self.new_chunks.clear(), self.new_markers.clear()
        self.new_chars, self.dirty = 0, False

    def flush_if_large(self) -> None:
        if self.new_chars > JOURNAL_TEXT_CHARS or len(self.new_markers) >= JOURNAL_MARKERS:
            self.flush()


def bounded_parts(chunks: list[dict], markers: list[dict]) -> list[tuple[list[dict], list[dict]]]:
    """Chunks and markers in groups of at most JOURNAL_TEXT_CHARS of text / JOURNAL_MARKERS
    markers (at least one group, possibly empty)."""
    parts: list[tuple[list[dict], list[dict]]] = [([], [])]
    size = 0
    for record in chunks:
        if parts[-1][0] and size + len(record["text"]) > JOURNAL_TEXT_CHARS:
            parts.append(([], []))
            size = 0
        parts[-1][0].append(record)
        size += len(record["text"])
    for record in markers:
        if len(parts[-1][1]) >= JOURNAL_MARKERS:
            parts.append(([], []))
        parts[-1][1].append(record)
    return parts
