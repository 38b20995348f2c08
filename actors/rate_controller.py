"""Adaptive rate controller: keep the playback buffer in a comfort band.

The controlled variable is the audio buffered ahead of presentation (ms), as reported
downstream in credit messages, less the expected wait before the synthesis under way lands
(a slowing engine is seen before the buffer has run down, not after). Each time the TTS is
about to ask the parser for more text it asks the controller what to ask for:

* below the band: halve the chunk size and go low-latency (cut at clauses);
* above the band: skip this request (let playback catch up) and step the size down;
* inside the band: step the size up, but never past what the engine sustains, judged
  from the EWMA of observed synthesis cost per token.

Sizes come from a discrete ladder of tokens; the parser treats the size as the point
past which a clause boundary closes a chunk (sentences stay the natural unit).
"""

from __future__ import annotations

from dataclasses import dataclass

LADDER = (8, 12, 16, 24, 32, 48, 64)


@dataclass(frozen=True)
class ChunkRequest:
    target_tokens: int  # 0 = no target: the sentence rule alone
    low_latency: bool
    skip: bool
    reason: str


class RateController:
    def __init__(self, cfg: dict):
        self.configure(cfg)
        self.index = 0
        self.skipping = False  # inside an overgrowth episode: one step down per episode, not per poll
        self.ms_per_token: float | None = None
        self.rtf: float | None = None

    def configure(self, cfg: dict) -> None:
        self.enabled = bool(cfg["enabled"])
        self.mode = cfg["mode"]
        self.low_ms = float(cfg["comfort_low_ms"])
        self.high_ms = float(cfg["comfort_high_ms"])
        self.alpha = float(cfg["ewma_alpha"])

    def observe(self, render_ms: float, audio_ms: float, tokens: int) -> None:
        """One finished synthesis: update the EWMAs of cost per token and real-time factor."""
        if tokens > 0:
            per_token = render_ms / tokens
            self.ms_per_token = per_token if self.ms_per_token is None else (
                self.alpha * per_token + (1 - self.alpha) * self.ms_per_token)
        if audio_ms > 0:
            rtf = render_ms / audio_ms
            self.rtf = rtf if self.rtf is None else self.alpha * rtf + (1 - self.alpha) * self.rtf

    def sustainable_index(self) -> int:
        """The largest step whose expected synthesis fits in half the band's low edge."""
        if self.ms_per_token is None:
            return 2
        budget = self.low_ms / 2
        fitting = [i for i, size in enumerate(LADDER) if size * self.ms_per_token <= budget]
        return fitting[-1] if fitting else 0

    def expected_cost_ms(self, tokens: int) -> float:
        """Synthesis time of a chunk of ``tokens``, from the observed cost per token (0 before any)."""
        return (self.ms_per_token or 0.0) * tokens

    def start_over(self) -> None:
        """New utterance or epoch: a small first window again."""
        self.index = 0

    def request(self, buffered_ms: float, wait_ms: float = 0.0) -> ChunkRequest:
        """``wait_ms``: how long until the audio being synthesised now lands; the buffer has to
        last through it, so what counts against the band is ``buffered_ms - wait_ms``."""
        if not self.enabled:
            return ChunkRequest(0, False, False, "disabled")
        if self.mode == "low_latency":
            self.index = 0
            return ChunkRequest(LADDER[0], True, False, "low_latency mode")
        if buffered_ms > self.high_ms:
            if not self.skipping:
                self.index = max(0, self.index - 1)
                self.skipping = True
            return ChunkRequest(LADDER[self.index], False, True, "buffer above the band: skip")
        self.skipping = False
        if buffered_ms - wait_ms < self.low_ms:
            half = LADDER[self.index] // 2
            self.index = max([i for i, size in enumerate(LADDER) if size <= half], default=0)
            why = "buffer below the band" if buffered_ms < self.low_ms else "buffer below the band before the next audio lands"
            return ChunkRequest(LADDER[self.index], True, False, f"{why}: halve")
        self.index = min(self.index + 1, self.sustainable_index())
        return ChunkRequest(LADDER[self.index], False, False, "in the band: expand")

    def current(self, buffered_ms: float, wait_ms: float = 0.0) -> ChunkRequest:
        """The standing wish, without taking a step (for refreshing the parser's hint)."""
        if not self.enabled:
            return ChunkRequest(0, False, False, "disabled")
        low = self.mode == "low_latency" or buffered_ms - wait_ms < self.low_ms
        return ChunkRequest(LADDER[0] if self.mode == "low_latency" else LADDER[self.index], low, False, "refresh")

    def state(self) -> dict:
        return {"target_tokens": LADDER[self.index], "ms_per_token": round(self.ms_per_token or 0, 2),
                "rtf": round(self.rtf or 0, 4), "sustainable": LADDER[self.sustainable_index()]}
