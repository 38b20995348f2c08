"""The supervisor's copy of the text the parser owns, so a parser that dies loses nothing.

The parser journals every chunk it closes, every marker, the player's latest "heard" and
the stream parser's state (``Journal`` on the ledger endpoint). A replacement parser asks
for it (``RestoreRequest``) and gets it back in parts of bounded size (``Restore``). Only
this epoch's unheard text is kept, with a hard bound.
"""

from __future__ import annotations

import logging

from protocol import Journal, Restore

LOG = logging.getLogger("personas.supervisor")
#: Unheard chunks kept at most (the parser's own bound is lower; this one only guards memory).
MAX_CHUNKS = 1024
MAX_MARKERS = 2048
#: Text per Restore part (its header must stay under the envelope's 64 KiB).
RESTORE_TEXT_CHARS = 16_000
RESTORE_MARKERS = 64


class TextLedger:
    def __init__(self):
        self.epoch = 0
        self.utterance_id = 0
        self.parser_state: dict = {}
        self.chunks: dict[int, dict] = {}  # sequence id -> TextChunk fields, in sequence order
        self.markers: list[dict] = []
        self.heard_through = -1
        self.journals = 0

    def on_journal(self, journal: Journal) -> None:
        if journal.epoch < self.epoch:
            return
        if journal.epoch > self.epoch:
            self.on_epoch(journal.epoch)
        self.journals += 1
        for record in journal.chunks:
            if isinstance(record, dict) and isinstance(record.get("sequence_id"), int):
                self.chunks[record["sequence_id"]] = dict(record)
        self.markers.extend(dict(m) for m in journal.markers if isinstance(m, dict))
        if journal.parser_state:
            self.parser_state, self.utterance_id = dict(journal.parser_state), journal.utterance_id
        self.heard(journal.heard_through)
        self.bound()

    def on_epoch(self, epoch: int) -> None:
        """A barge-in: nothing owned before it will be spoken."""
        if epoch > self.epoch:
            self.epoch, self.heard_through = epoch, -1
            self.chunks.clear(), self.markers.clear()

    def heard(self, through: int) -> None:
        if through <= self.heard_through:
            return
        self.heard_through = through
        self.chunks = {k: v for k, v in self.chunks.items() if k > through}
        self.markers = [m for m in self.markers if m.get("sequence_id", -1) > through]

    def bound(self) -> None:
        if len(self.chunks) > MAX_CHUNKS:
            LOG.error("ledger holds %d unheard chunks; the oldest are let go", len(self.chunks))
            for key in sorted(self.chunks)[: len(self.chunks) - MAX_CHUNKS]:
                del self.chunks[key]
        if len(self.markers) > MAX_MARKERS:
            del self.markers[: len(self.markers) - MAX_MARKERS]

    def restore_parts(self) -> list[Restore]:
        """What the replacement parser gets, in order; the last part carries the parser state."""
        parts: list[Restore] = []
        chunks, markers, size = [], [], 0
        for key in sorted(self.chunks):
            record = self.chunks[key]
            if chunks and size + len(record.get("text", "")) > RESTORE_TEXT_CHARS:
                parts.append(self.part(chunks, []))
                chunks, size = [], 0
            chunks.append(record)
            size += len(record.get("text", ""))
        for marker in self.markers:
            if len(markers) >= RESTORE_MARKERS:
                parts.append(self.part(chunks, markers))
                chunks, markers = [], []
            markers.append(marker)
        parts.append(Restore(epoch=self.epoch, utterance_id=self.utterance_id, chunks=tuple(chunks),
                             markers=tuple(markers), parser_state=self.parser_state, last=True))
        return parts

    def part(self, chunks: list[dict], markers: list[dict]) -> Restore:
        return Restore(epoch=self.epoch, utterance_id=self.utterance_id, chunks=tuple(chunks), markers=tuple(markers))

    def describe(self) -> dict:
        return {"epoch": self.epoch, "unheard_chunks": len(self.chunks), "markers": len(self.markers),
                "heard_through": self.heard_through, "journals": self.journals,
                "open_chars": len(self.parser_state.get("text", "")) if self.parser_state else 0}
