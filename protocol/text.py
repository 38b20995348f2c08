"""Text family: what the parser emits: speakable chunks and the markers cut out of them."""

from __future__ import annotations

from dataclasses import dataclass

from .envelope import Message, ProtocolError, brief, register

#: The parser never lets a chunk grow beyond this many characters (it splits at a space).
MAX_CHUNK_CHARS = 2000
#: Upper bound for a marker's command and value.
MAX_MARKER_FIELD_CHARS = 64

#: Why a chunk was closed: sentence punctuation, newline, end of turn, size limit, clause.
BOUNDARIES = (".", "?", "!", "\n", "end", "limit", "clause")


@register
@dataclass(frozen=True)
class TextChunk(Message):
    """A span of speakable text with its markers already stripped."""

    TYPE = "text_chunk"
    epoch: int
    utterance_id: int
    sequence_id: int
    text: str
    boundary: str
    final: bool = False
    marker_count: int = 0
    window_tokens: int = 0
    closed_at_ns: int = 0
    #: Resent after a crash: the TTS sends this chunk's audio from this sample on (what
    #: is before it has already reached the stitcher or been heard).
    resume_sample: int = 0
    credit_of: int = 0

    def validate(self) -> None:
        if len(self.text) > MAX_CHUNK_CHARS:
            raise ProtocolError("oversized", f"text_chunk of {len(self.text)} chars, limit {MAX_CHUNK_CHARS}")
        if self.boundary not in BOUNDARIES:
            raise ProtocolError("malformed", f"text_chunk boundary {brief(self.boundary)}")


@register
@dataclass(frozen=True)
class VisualMarker(Message):
    """A ``<v:COMMAND:VALUE>`` tag, emitted the moment its closing ``>`` arrives.

    ``timestamp_offset`` is the character position inside the chunk ``sequence_id``
    where the tag stood; the driver refines it to a sample position from the phoneme
    timing of that chunk's audio.
    """

    TYPE = "visual_marker"
    epoch: int
    utterance_id: int
    sequence_id: int
    command: str
    value: str
    timestamp_offset: float
    index_in_chunk: int = 0

    def validate(self) -> None:
        if len(self.command) > MAX_MARKER_FIELD_CHARS or len(self.value) > MAX_MARKER_FIELD_CHARS:
            raise ProtocolError("oversized", "visual_marker command/value too long")
