"""Audio family: synthesised speech, as the TTS actor emits it."""

from __future__ import annotations

from dataclasses import dataclass

from .envelope import Buffer, Message, ProtocolError, register


@register
@dataclass(frozen=True)
class AudioChunk(Message):
    """A piece of one TextChunk's audio: mono int16 PCM plus its timing.

    A chunk's audio may be sent in several pieces (the TTS never sends more audio than
    the stitcher granted). Piece 0 carries the whole chunk's timing: ``phonemes`` as
    ``(symbol, start_sample, n_samples)`` and ``word_anchors`` as
    ``(char_offset, start_sample)``, both relative to the chunk's first sample.
    """

    TYPE = "audio_chunk"
    PAYLOADS = ("pcm",)
    epoch: int
    utterance_id: int
    sequence_id: int
    piece: int
    last_piece: bool
    final: bool
    sample_rate: int
    n_samples: int
    start_sample: int = 0
    phonemes: tuple = ()
    word_anchors: tuple = ()
    adapter: str = ""
    render_ms: float = 0.0
    window_tokens: int = 0
    credit_of: int = 0
    pcm: Buffer = b""

    def validate(self) -> None:
        if not 4000 <= self.sample_rate <= 96000:
            raise ProtocolError("malformed", f"audio_chunk sample_rate {self.sample_rate}")
        if self.n_samples < 0 or len(self.pcm) != 2 * self.n_samples:
            raise ProtocolError("malformed", f"audio_chunk pcm is {len(self.pcm)} bytes for {self.n_samples} samples")
