"""Media family: audio spans pinned to frame slots, and finished A/V packets.

Frame ``k`` covers samples ``[k*sr//fps, (k+1)*sr//fps)`` of the one audio timeline
the stitcher owns; that mapping is the system's only clock.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .envelope import Buffer, Message, ProtocolError, brief, register
from .provenance import Provenance, is_integer

FRAME_KINDS = ("speech", "fill")


def frame_start_sample(frame_index: int, sample_rate: int, fps: int) -> int:
    """First sample of frame ``frame_index`` on the audio clock."""
    return frame_index * sample_rate // fps


def frame_samples(first_frame: int, sample_rate: int, fps: int, n_frames: int = 1) -> int:
    """How many samples frames ``[first_frame, first_frame + n_frames)`` cover (882 a frame at
    22050 Hz, 25 fps)."""
    return frame_start_sample(first_frame + n_frames, sample_rate, fps) - frame_start_sample(first_frame, sample_rate, fps)


@dataclass(frozen=True)
class ChunkStart:
    """Where a chunk's audio begins on the clock, its words' anchors and its provenance."""

    sequence_id: int
    start_sample: int
    #: ``(char_offset, start_sample)`` per word, on the global clock.
    word_anchors: tuple
    provenance: Provenance

    def as_dict(self) -> dict:
        return {"sequence_id": self.sequence_id, "start_sample": self.start_sample,
                "word_anchors": self.word_anchors, "provenance": self.provenance.as_dict()}

    @classmethod
    def from_dict(cls, record: dict) -> "ChunkStart":
        if set(record) != {f.name for f in dataclasses.fields(cls)}:
            raise ProtocolError("malformed", f"chunk_start needs sequence_id, start_sample, word_anchors, provenance; got {sorted(record)}")
        if not all(is_integer(record[k]) for k in ("sequence_id", "start_sample")):
            raise ProtocolError("malformed", "chunk_start ids and samples must be integers")
        anchors = record["word_anchors"]
        if not isinstance(anchors, (tuple, list)) or not all(
                isinstance(a, (tuple, list)) and len(a) == 2 and all(is_integer(x) for x in a) for a in anchors):
            raise ProtocolError("malformed", "chunk_start word_anchors must be (char_offset, sample) pairs")
        if not isinstance(record["provenance"], dict):
            raise ProtocolError("malformed", "chunk_start provenance must be a map")
        return cls(record["sequence_id"], record["start_sample"], tuple(tuple(a) for a in anchors),
                   Provenance.from_dict(dict(record["provenance"])))


@register
@dataclass(frozen=True)
class AudioSpan(Message):
    """Stitched audio for frames ``[first_frame, first_frame + n_frames)``.

    ``phonemes`` are ``(symbol, start_sample, n_samples)`` on the global clock;
    ``chunk_starts`` are the :class:`ChunkStart` of every chunk whose audio begins in this
    span (global sample positions).
    """

    TYPE = "audio_span"
    PAYLOADS = ("pcm",)
    epoch: int
    first_frame: int
    n_frames: int
    sample_rate: int
    fps: int
    kind: str
    utterance_id: int = -1
    sequence_id: int = -1
    final: bool = False
    phonemes: tuple = ()
    chunk_starts: tuple[ChunkStart, ...] = ()
    provenance: Provenance | None = None
    credit_of: int = 0
    pcm: Buffer = b""

    def validate(self) -> None:
        if self.kind not in FRAME_KINDS:
            raise ProtocolError("malformed", f"audio_span kind {brief(self.kind)}")
        if self.n_frames <= 0 or self.fps <= 0 or self.sample_rate <= 0:
            raise ProtocolError("malformed", "audio_span needs positive n_frames, fps and sample_rate")
        needed = frame_samples(self.first_frame, self.sample_rate, self.fps, self.n_frames)
        if len(self.pcm) != 2 * needed:
            raise ProtocolError("malformed", f"audio_span pcm is {len(self.pcm)} bytes, frames need {2 * needed}")


@register
@dataclass(frozen=True)
class AVPacket(Message):
    """One presented unit: a rendered RGB frame and the audio that plays under it."""

    TYPE = "av_packet"
    PAYLOADS = ("pixels", "pcm")
    epoch: int
    frame_index: int
    sample_rate: int
    fps: int
    width: int
    height: int
    kind: str
    utterance_id: int = -1
    sequence_id: int = -1
    final: bool = False
    provenance: Provenance | None = None
    credit_of: int = 0
    pixels: Buffer = b""
    pcm: Buffer = b""

    @property
    def pts_sample(self) -> int:
        return frame_start_sample(self.frame_index, self.sample_rate, self.fps)

    def validate(self) -> None:
        if self.kind not in FRAME_KINDS:
            raise ProtocolError("malformed", f"av_packet kind {brief(self.kind)}")
        if len(self.pixels) != self.width * self.height * 3:
            raise ProtocolError("malformed", f"av_packet pixels are {len(self.pixels)} bytes for {self.width}x{self.height} RGB")
        n = frame_samples(self.frame_index, self.sample_rate, self.fps)
        if len(self.pcm) != 2 * n:
            raise ProtocolError("malformed", f"av_packet pcm is {len(self.pcm)} bytes, frame needs {2 * n}")
