"""Timeline family: the structured event every stage publishes.

``{stage, duration_ms, result, surface}`` plus the ids that tie it to the media
(epoch, utterance, chunk, frame) and a CLOCK_MONOTONIC timestamp shared by all
processes on the host. ``data`` holds stage-specific figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .envelope import Message, register

RESULTS = ("ok", "error", "drop", "warn", "gap", "underflow", "late", "reused")


@register
@dataclass(frozen=True)
class TimelineEvent(Message):
    TYPE = "timeline"
    stage: str
    actor: str
    result: str
    ts_ns: int
    duration_ms: float = 0.0
    surface: str = ""
    epoch: int = 0
    utterance_id: int = -1
    chunk_id: int = -1
    frame: int = -1
    data: dict = field(default_factory=dict)

    def as_record(self) -> dict:
        """The JSONL form (one line per event)."""
        return {
            "ts_ns": self.ts_ns,
            "actor": self.actor,
            "stage": self.stage,
            "result": self.result,
            "duration_ms": round(self.duration_ms, 3),
            "surface": self.surface,
            "epoch": self.epoch,
            "utterance_id": self.utterance_id,
            "chunk_id": self.chunk_id,
            "frame": self.frame,
            "data": self.data,
        }
