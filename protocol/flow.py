"""Flow family: credit-based backpressure (ZeroMQ Guide, chapter 7).

A consumer grants credit to its producer in media units; the producer never sends
without it. Credit is scoped to an epoch: after a barge-in everyone starts the new epoch
at zero and consumers re-grant their windows. It is also scoped to one *incarnation* of
the consumer (its pid, ``grantor``): a ``reset`` grant states the whole credit the
producer now has from that process (a consumer's first grant, or its answer to a producer
that restarted), and every data message names the incarnation whose credit it spent
(``credit_of``), so what was sent to a process that died is never counted against its
replacement.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .envelope import Message, ProtocolError, brief, register
from .names import CREDIT_LINKS



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
    reset: bool = False
    grantor: int = 0
    #: The last frame the consumer has presented (the player; -1 elsewhere): after a player
    #: crash the driver knows where the new one must start.
    position: int = -1
    #: The last recovery whose rewind the consumer has applied: after a rewind a producer
    #: sends nothing until it holds a reset grant from after it (``protocol.recovery``).
    recovery_id: int = 0

    def validate(self) -> None:
        if self.link not in CREDIT_LINKS:
            raise ProtocolError("malformed", f"credit for unknown link {brief(self.link)}")
        if self.unit != CREDIT_LINKS[self.link][0]:
            raise ProtocolError("malformed", f"credit unit {brief(self.unit)} on {self.link} (it counts {CREDIT_LINKS[self.link][0]})")
        if self.amount < 0:
            raise ProtocolError("malformed", "credit amount must be >= 0")


def refund_of(header: dict) -> int:
    """What a refused data message spent on its link (its header as unpacked), so the
    consumer can give it back: 1 chunk, its audio in ms, its frames; 0 when the header
    does not say (garbage no producer sent against credit)."""
    def number(key: str) -> int:
        value = header.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**31 else -1

    kind = header.get("type")
    if kind in ("text_chunk", "av_packet"):
        return 1
    if kind == "audio_span":
        return max(0, number("n_frames"))
    if kind == "audio_chunk" and number("n_samples") >= 0 and 4000 <= number("sample_rate") <= 96000:
        return audio_cost_ms(number("n_samples"), number("sample_rate"))
    return 0
