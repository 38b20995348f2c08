"""Flow family: credit-based backpressure (ZeroMQ Guide, chapter 7).

A consumer grants credit to its producer in media units; the producer never sends
without it. Credit is scoped to an epoch: after a barge-in or restart everyone starts
the new epoch at zero and consumers re-grant their windows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .envelope import Message, ProtocolError, register

CREDIT_UNITS = ("chunks", "ms", "frames")


def audio_cost_ms(n_samples: int, sample_rate: int) -> int:
    """What ``n_samples`` of audio cost on the tts->stitcher link: whole milliseconds, rounded up."""
    return math.ceil(n_samples * 1000 / sample_rate)


@register
@dataclass(frozen=True)
class Credit(Message):
    """``amount`` more units may be sent on ``link``. ``depth`` reports what the consumer
    and everything below it holds (frames for the video links, ms for audio). A grant may
    also say what the consumer would like next: ``target_tokens`` (0 = no preference)
    and ``low_latency`` (the rate controller's request, TTS -> parser)."""

    TYPE = "credit"
    link: str
    epoch: int
    amount: int
    unit: str
    depth: int = 0
    playing: bool = False
    target_tokens: int = 0
    low_latency: bool = False

    def validate(self) -> None:
        if self.unit not in CREDIT_UNITS:
            raise ProtocolError("malformed", f"credit unit {self.unit!r}")
        if self.amount < 0:
            raise ProtocolError("malformed", "credit amount must be >= 0")
