"""Provenance: where a piece of audio or a frame came from, carried with it to the sinks."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .envelope import ProtocolError


def is_integer(value) -> bool:
    """An int that is not a bool (msgpack's true would otherwise pass as 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Provenance:
    """The engine and chunk behind a span of audio or a frame, and what it cost.

    On the wire it is a msgpack map with these keys (see :meth:`as_dict`); timeline events
    carry the same map.
    """

    adapter: str
    chunk_id: int
    window_tokens: int = 0
    render_ms: float = 0.0
    epoch: int = 0
    #: The chunk's first sample on the global clock (the stitcher's placement); -1 unknown.
    chunk_start: int = -1
    #: Set by the driver on frames: its batch's render time divided by the frames in it.
    frame_render_ms: float | None = None

    def as_dict(self) -> dict:
        record = dataclasses.asdict(self)
        if self.frame_render_ms is None:
            del record["frame_render_ms"]
        return record

    @classmethod
    def from_dict(cls, record: dict) -> "Provenance":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(record) - known
        if unknown:
            raise ProtocolError("malformed", f"provenance has unknown keys {sorted(unknown)}")
        try:
            value = cls(**record)
        except TypeError as exc:
            raise ProtocolError("malformed", f"provenance: {exc}") from None
        if not isinstance(value.adapter, str):
            raise ProtocolError("malformed", "provenance needs a string adapter")
        for name in ("chunk_id", "window_tokens", "epoch", "chunk_start"):
            if not is_integer(getattr(value, name)):
                raise ProtocolError("malformed", f"provenance.{name} must be an integer")
        for name in ("render_ms", "frame_render_ms"):
            field = getattr(value, name)
            if field is not None and (not isinstance(field, (int, float)) or isinstance(field, bool)):
                raise ProtocolError("malformed", f"provenance.{name} must be a number")
        return value

    def for_frame(self, frame_render_ms: float) -> "Provenance":
        return dataclasses.replace(self, frame_render_ms=round(frame_render_ms, 2))
