"""Stitcher actor: one continuous audio timeline, and every frame pinned to it.

Audio is the timebase authority. The stitcher owns the frame counter ``k``; frame k
covers samples ``[k*sr//fps, (k+1)*sr//fps)``. Chunks from the TTS are placed end to
end on that timeline; joins inside an utterance are a short raised-cosine overlap-add
(no click, no gap). The last ``overlap`` samples are held back until the next chunk
arrives or the utterance ends. Audio leaves in whole-frame ``AudioSpan``s, against
driver credit (unit: frames), each carrying the phoneme timing and chunk placements
the driver needs to render exactly those frames.

When nothing is being said the timeline keeps running: silent ``fill`` frames are
emitted just ahead of presentation (``idle_lead_frames``, or ``jitter_min_frames``
until the player has started), so the face stays alive; the player skips queued fill
when speech arrives. In the middle of an utterance fill is inserted only when fewer
than ``gap_lead_frames`` remain: that is a *gap* (text or TTS fell behind), reported
on the timeline.

After a crash the clock may go back, once, to the first frame the actor below lacks
(``on_rewind``); the chunk that was speaking there is put back where it started, so the
frames sent again are the frames that were lost. Pieces the TTS sends twice (a new TTS)
are taken only for the samples not yet here.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from protocol import (AudioChunk, AudioSpan, ChunkStart, Credit, Provenance, Recovery, ResumePoint, frame_samples,
                      frame_start_sample)
from protocol.flow import audio_cost_ms
from protocol.names import link_name

from .dsp import apply_gain, crossfade_ramps, overlap_add, place_timing, resample, speech_loudness
from .runtime import ActorContext, CreditLedger, grants_descriptor

NAME = "stitcher"
#: Largest span sent in one message (frames); the driver renders in smaller batches anyway.
MAX_SPAN_FRAMES = 50
#: Chunks whose received sample count is remembered (to take a repeated piece only once).
RECEIVED_MEMORY = 256
#: After a rewind, how long the clock waits for the chunk it resumes in.
RESUME_WAIT_S = 10.0


class SampleBuffer:
    """Fixed-capacity int16 FIFO: audio placed on the timeline but not yet emitted."""

    def __init__(self, capacity: int):
        self._data = np.zeros(capacity, np.int16)
        self.size = 0

    def append(self, samples: np.ndarray) -> None:
        end = self.size + len(samples)
        if end > len(self._data):
            raise OverflowError(f"stitcher buffer full ({end} > {len(self._data)} samples): credit accounting broken")
        self._data[self.size:end] = samples
        self.size = end

    def mix_tail(self, head: np.ndarray, fade_out: np.ndarray, fade_in: np.ndarray) -> None:
        """Overlap-add ``head`` onto the last len(head) buffered samples."""
        n = len(head)
        self._data[self.size - n:self.size] = overlap_add(self._data[self.size - n:self.size], head, fade_out, fade_in)

    def take_last(self, n: int) -> np.ndarray:
        out = self._data[self.size - n:self.size].copy()
        self.size -= n
        return out

    def take(self, n: int) -> np.ndarray:
        out = self._data[:n].copy()
        self._data[: self.size - n] = self._data[n:self.size]
        self.size -= n
        return out

    def pad_to(self, n: int) -> None:
        if n > self.size:
            self.append(np.zeros(n - self.size, np.int16))

    def clear(self) -> None:
        self.size = 0


@dataclass
class PlacedChunk:
    sequence_id: int
    utterance_id: int
    start: int  # global sample of the chunk's first sample
    end: int
    provenance: Provenance


class Loudness:
    """Engine swaps keep the level: a chunk from a different engine than the previous one
    is scaled so its speech loudness matches the previous chunk's (the envelope just
    before the join); the gain then sticks to that engine until the next swap."""

    def __init__(self):
        self.gains: dict[str, float] = {}
        self.adapter = ""
        self.last_output = 0.0

    def gain_for(self, adapter: str, pcm: np.ndarray, first_piece: bool) -> float:
        if first_piece:
            level = speech_loudness(pcm)
            if adapter != self.adapter and self.adapter and self.last_output > 0 and level > 0:
                self.gains[adapter] = float(np.clip(self.last_output / level, 0.5, 2.0))
            self.adapter = adapter
            if level > 0:
                self.last_output = level * self.gains.get(adapter, 1.0)
        return self.gains.get(adapter, 1.0)


class Stitcher:
    def __init__(self, ctx: ActorContext):
        self.ctx = ctx
        media, flow = ctx.config["media"], ctx.config["flow"]
        self.sr, self.fps = int(media["sample_rate"]), int(media["fps"])
        self.window_ms = int(flow["stitcher_window_ms"])
        self.overlap = int(self.sr * flow["stitch_overlap_ms"] / 1000)
        self.idle_lead, self.jitter_min = int(flow["idle_lead_frames"]), int(flow["jitter_min_frames"])
        self.gap_lead = int(flow["gap_lead_frames"])
        self.fade_in, self.fade_out = crossfade_ramps(self.overlap)
        self.buffer = SampleBuffer(self.window_ms * self.sr // 1000 + 2 * self.sr)  # window + resampling/padding slack
        # The first resample imports scipy.signal (~2 s on a busy machine, past the heartbeat's
        # liveness): done now, before READY, so an engine at another rate (openai_speech's
        # 24 kHz) never stalls the clock on its first chunk.
        resample(np.zeros(64, np.int16), 24000, self.sr)
        self.driver_credit = CreditLedger(NAME, "driver")
        self.next_frame = 0  # first frame not yet emitted; a barge-in never sets it back (a recovery may)
        self.utterance_id = -1
        self.in_utterance = False  # speech of utterance_id started and its final piece not yet in
        self.flushing = False  # final piece in: emit everything, pad the last frame
        self.contiguous = False  # the buffer's end is speech a new chunk may overlap
        self.placed: deque[PlacedChunk] = deque()  # chunks whose audio is (partly) still buffered
        self.announce: list[tuple[ChunkStart, list]] = []  # chunk starts and phonemes not yet sent to the driver
        self.unpaid: deque[tuple[int, int]] = deque()  # (global end sample, ms) to return to the TTS once emitted
        self.emitted_since_report = 0
        self.gaps = 0
        self.depth_told = 0  # last depth told to the TTS (its rate controller steers by it)
        self.loudness = Loudness()
        self.received: dict[int, tuple[int, int]] = {}  # chunk -> (samples received, their rate), this epoch
        self.incomplete = -1  # the chunk whose pieces are arriving (its last one not yet in)
        self.resume: tuple[int, int] | None = None  # after a rewind: (chunk, its start sample) to place first
        self.resume_deadline = 0.0
        self.paused = False  # a recovery below is under way: emit nothing until it rewinds

    def describe(self) -> dict:
        flow = self.ctx.config["flow"]
        return {
            "actor": NAME,
            "clock": {"sample_rate": self.sr, "fps": self.fps, "frame_k_starts_at_sample": "k*sample_rate//fps"},
            "overlap_ms": flow["stitch_overlap_ms"],
            "consumes": ["audio_chunk <- tts", "credit <- driver (frames)"],
            "produces": ["audio_span -> driver", "credit -> tts (ms)"],
            "credit": {"grants": grants_descriptor("tts", NAME, self.window_ms), "spends": self.driver_credit.describe()},
        }

    def run(self) -> None:
        ctx = self.ctx
        poller = ctx.poller()
        ctx.ready(self.describe())
        ctx.start_receiving(lambda: self.grant_tts(self.window_ms, reset=True))
        half_frame_ms = int(500 / self.fps)
        while ctx.running:
            poller.poll(max(1, min(ctx.poll_timeout_ms(), half_frame_ms)))
            ctx.receive(self)
            self.step()
            ctx.heartbeat(self.stats())

    def stats(self) -> dict:
        return {"next_frame": self.next_frame, "buffered_ms": self.buffered_ms(), "in_utterance": self.in_utterance,
                "lead_frames": self.lead(), "gaps": self.gaps, "credit": {"driver_frames": self.driver_credit.available}}

    # -- handlers -------------------------------------------------------------------------------
    def on_epoch(self, epoch: int, cause: str, _issued_at_ns: int = 0) -> None:
        if self.ctx.adopt_epoch(epoch, cause):
            self.drop_all()
            self.driver_credit.enter_epoch(epoch)
            self.grant_tts(self.window_ms)

    def drop_all(self) -> None:
        self.buffer.clear()
        self.placed.clear(), self.announce.clear(), self.unpaid.clear(), self.received.clear()
        self.in_utterance = self.flushing = self.contiguous = False
        self.incomplete, self.resume = -1, None

    # -- crash recovery (actors.recovery) ------------------------------------------------------
    def on_peer_down(self, recovery: Recovery) -> None:
        if recovery.actor == "driver":
            self.driver_credit.suspend()
        if NAME in recovery.scope and recovery.actor != NAME:
            self.paused = True

    def on_peer_rejoined(self, recovery: Recovery) -> None:
        """A new TTS: say which chunk it must send again, from which sample; grant it what
        we do not hold."""
        if recovery.actor != "tts":
            return
        chunk, skip = self.resume_chunk()
        self.ctx.request(ResumePoint(actor=NAME, pid=self.ctx.incarnation, recovery_id=recovery.recovery_id,
                                     resume_frame=-1, resume_chunk=chunk, skip_samples=skip))
        self.grant_tts(self.window_ms - sum(ms for _, ms in self.unpaid), reset=True)

    def resume_chunk(self) -> tuple[int, int]:
        """(chunk to send again, samples of it already here on our clock); (-1, 0): none."""
        if self.incomplete >= 0:
            have, rate = self.received[self.incomplete]
            return self.incomplete, have * self.sr // rate
        return (max(self.received) + 1, 0) if self.received else (-1, 0)

    def on_rewind(self, recovery: Recovery) -> None:
        """Back to the frame the actor below lacks; the chunk speaking there goes back where it started."""
        if NAME not in recovery.scope:
            return
        self.drop_all()
        if recovery.resume_frame >= 0:
            self.next_frame = recovery.resume_frame
        if recovery.resume_chunk >= 0 and recovery.chunk_start >= 0:
            self.resume = (recovery.resume_chunk, recovery.chunk_start)
            self.resume_deadline = time.monotonic() + RESUME_WAIT_S
        if "driver" in recovery.scope:
            self.driver_credit.await_reset_after(recovery.recovery_id)  # it starts over and grants anew
        self.paused = False
        self.grant_tts(self.window_ms, reset=True)

    def on_recovered(self, _recovery: Recovery) -> None:
        self.paused = False

    def awaiting_resume(self) -> bool:
        """After a rewind the clock waits for the chunk that was speaking (filling the wait
        with idle frames would move the clock past where it must resume); not forever."""
        if self.resume is None:
            return False
        if time.monotonic() < self.resume_deadline:
            return True
        self.ctx.error("resume", "chunk_not_resent", f"chunk {self.resume[0]} was not sent again within "
                       f"{RESUME_WAIT_S:.0f} s; the clock goes on without it", chunk_id=self.resume[0])
        self.resume = None
        return False

    def on_credit(self, credit: Credit) -> None:
        self.driver_credit.on_credit(credit)
        self.emitted_since_report = 0

    def on_audio_chunk(self, chunk: AudioChunk) -> None:
        pcm = np.frombuffer(chunk.pcm, np.int16)
        first_time = chunk.sequence_id not in self.received
        have = 0 if first_time else self.received[chunk.sequence_id][0]
        repeated = min(max(0, have - chunk.start_sample), len(pcm))
        cost = audio_cost_ms(chunk.n_samples, chunk.sample_rate)
        if repeated:  # a new TTS sends what we already have: take only the rest, repay the repeat now
            pcm = pcm[repeated:]
            kept = audio_cost_ms(len(pcm), chunk.sample_rate)
            self.grant_tts(cost - kept)
            cost = kept
        self.remember(chunk, max(have, chunk.start_sample + chunk.n_samples))
        if not len(pcm) and not chunk.last_piece:
            return
        scale = 1.0
        if chunk.sample_rate != self.sr:
            pcm, scale = resample(pcm, chunk.sample_rate, self.sr), self.sr / chunk.sample_rate
        gain = self.loudness.gain_for(chunk.adapter, pcm, first_piece=first_time)
        pcm = apply_gain(pcm, gain)
        if chunk.utterance_id != self.utterance_id or not self.in_utterance:
            self.utterance_id, self.in_utterance, self.flushing = chunk.utterance_id, True, False
        overlap_used, start = self.place(chunk, pcm, scale) if first_time else (0, -1)
        self.buffer.append(pcm[overlap_used:])
        end = self.buffer_start() + self.buffer.size
        if self.placed and self.placed[-1].sequence_id == chunk.sequence_id:
            self.placed[-1].end = end
        self.unpaid.append((end, cost))
        self.contiguous = True
        if chunk.final and chunk.last_piece:
            self.flushing = True
            frames_needed = self.frames_covering(self.buffer.size)
            self.buffer.pad_to(frame_start_sample(self.next_frame + frames_needed, self.sr, self.fps) - self.buffer_start())
        self.ctx.emit("stitch", utterance_id=chunk.utterance_id, chunk_id=chunk.sequence_id, surface=link_name("tts", NAME),
                      data={"piece": chunk.piece, "samples": len(pcm), "overlap": overlap_used, "start": start,
                            "buffered_ms": self.buffered_ms(), "final": chunk.final and chunk.last_piece,
                            "adapter": chunk.adapter, "gain": gain, "loudness": round(self.loudness.last_output, 1)})

    def remember(self, chunk: AudioChunk, received: int) -> None:
        self.received[chunk.sequence_id] = (received, chunk.sample_rate)
        if len(self.received) > RECEIVED_MEMORY:
            del self.received[next(iter(self.received))]
        self.incomplete = -1 if chunk.last_piece else chunk.sequence_id

    def place(self, chunk: AudioChunk, pcm: np.ndarray, scale: float) -> tuple[int, int]:
        """A chunk's first piece: join it to what is buffered (overlap-add within an utterance)
        and note where it starts, for the driver. Returns (samples of ``pcm`` not to append,
        start sample). After a rewind the chunk that was speaking goes back to its old start."""
        if self.resume is not None and self.resume[0] == chunk.sequence_id:
            return self.place_again(chunk, pcm, scale)
        overlap_used = 0
        if self.contiguous and self.buffer.size >= self.overlap and len(pcm) >= self.overlap:
            self.buffer.mix_tail(pcm[:self.overlap], self.fade_out, self.fade_in)
            overlap_used = self.overlap
        start = self.buffer_start() + self.buffer.size - overlap_used
        self.announce_chunk(chunk, start, scale)
        return overlap_used, start

    def place_again(self, chunk: AudioChunk, pcm: np.ndarray, scale: float) -> tuple[int, int]:
        """The chunk a rewind resumes: it starts where it started before; its first piece
        begins ``start_sample`` into it (what was heard), which is where our clock now is."""
        start = self.resume[1]
        self.resume = None
        late = self.buffer_start() + self.buffer.size - (start + round(chunk.start_sample * scale))
        if late < 0:
            self.buffer.pad_to(self.buffer.size - late)
        self.announce_chunk(chunk, start, scale)
        return max(0, min(late, len(pcm))), start

    def announce_chunk(self, chunk: AudioChunk, start: int, scale: float) -> None:
        provenance = Provenance(adapter=chunk.adapter, chunk_id=chunk.sequence_id, window_tokens=chunk.window_tokens,
                                render_ms=chunk.render_ms, epoch=chunk.epoch, chunk_start=start)
        self.placed.append(PlacedChunk(chunk.sequence_id, chunk.utterance_id, start, start, provenance))
        phonemes, anchors = place_timing(start, scale, chunk.phonemes, chunk.word_anchors)
        self.announce.append((ChunkStart(chunk.sequence_id, start, anchors, provenance), phonemes))

    # -- the clock ------------------------------------------------------------------------------
    def step(self) -> None:
        """Speech first: whatever whole frames are ready, as far as credit goes; else keep the
        timeline running with fill (idle) or report a gap (mid-utterance)."""
        if self.paused or self.awaiting_resume():
            return
        held = 0 if self.flushing or not self.in_utterance else self.overlap
        ready = self.whole_frames(max(0, self.buffer.size - held))
        n = min(ready, self.driver_credit.available, MAX_SPAN_FRAMES)
        if n > 0:
            end = frame_start_sample(self.next_frame + n, self.sr, self.fps) - self.buffer_start()
            self.emit_span(n, "speech", final=self.flushing and end >= self.buffer.size)
        elif self.driver_credit.available > 0:
            self.keep_lead()
        if abs(self.depth_ms() - self.depth_told) >= 1000 / self.fps:
            self.grant_tts(0)  # depth changed by a frame or more: keep the controller's view current

    def keep_lead(self) -> None:
        """Idle: a deep lead (skipped for free when speech comes). Mid-utterance: wait for the
        late chunk as long as is safe, since every fill frame there is an audible gap."""
        if self.in_utterance:
            target = self.gap_lead
        else:
            target = self.idle_lead if self.driver_credit.playing else max(self.idle_lead, self.jitter_min)
        if self.lead() >= target:
            return
        if self.in_utterance:
            self.gaps += 1
            data = {"gaps": self.gaps}
            # The TTS fell behind mid-utterance: play what is buffered now, all but the overlap
            # tail, which waits behind the pause for the late chunk to be crossfaded into as it
            # would have been on time (a pause changes when the words come, never the words).
            tail = min(self.overlap, self.buffer.size) if self.contiguous else 0
            if self.buffer.size > tail:
                data = {"held_samples": self.buffer.size - tail, **data}
            self.ctx.emit("stitch", "gap", utterance_id=self.utterance_id, frame=self.next_frame, data=data)
            if self.buffer.size > tail:
                self.emit_before_tail(tail)
                return
        self.emit_span(1, "fill")  # (the tail, if any, stays buffered: it moves on with the clock)

    def emit_before_tail(self, tail: int) -> None:
        """One speech frame of what is buffered ahead of the last ``tail`` samples, padded with
        silence; the tail is buffered again after it."""
        kept = self.buffer.take_last(tail)
        if len(kept):
            self.buffer.pad_to(frame_samples(self.next_frame, self.sr, self.fps, 1))
        self.emit_span(1, "speech")
        self.buffer.append(kept)

    def emit_span(self, n_frames: int, kind: str, final: bool = False) -> None:
        first = self.next_frame
        n_samples = frame_samples(first, self.sr, self.fps, n_frames)
        if kind == "fill":
            pcm = np.zeros(n_samples, np.int16)
        else:
            self.buffer.pad_to(n_samples)
            pcm = self.buffer.take(n_samples)
        spent = self.driver_credit.spend(n_frames)
        self.next_frame += n_frames
        self.emitted_since_report += n_frames
        span_end = frame_start_sample(self.next_frame, self.sr, self.fps)
        first_sample = frame_start_sample(first, self.sr, self.fps)
        covering = next((p for p in self.placed if p.start <= first_sample < p.end), None) if kind == "speech" else None
        due = [item for item in self.announce if item[0].start_sample < span_end]
        del self.announce[: len(due)]
        span = AudioSpan(
            epoch=self.ctx.epoch, first_frame=first, n_frames=n_frames, sample_rate=self.sr, fps=self.fps, kind=kind,
            utterance_id=self.utterance_id if kind == "speech" else -1,
            sequence_id=covering.sequence_id if covering else -1, final=final,
            phonemes=tuple(p for _, phonemes in due for p in phonemes), chunk_starts=tuple(start for start, _ in due),
            provenance=covering.provenance if covering else None, credit_of=self.driver_credit.token, pcm=pcm.tobytes(),
        )
        self.ctx.send_to("driver", span)
        self.settle(span_end, pay_all=final and kind == "speech")
        if final:
            self.in_utterance = self.flushing = self.contiguous = False
            self.placed.clear()
        self.ctx.emit("span", "ok", frame=first, utterance_id=span.utterance_id, chunk_id=span.sequence_id,
                      surface=self.driver_credit.link,
                      data={"frames": n_frames, "kind": kind, "final": final, **spent, "lead": self.lead(),
                            "buffered_ms": self.buffered_ms()})

    def settle(self, span_end: int, pay_all: bool) -> None:
        """Forget chunks that have left, and return the TTS the credit for audio that has."""
        while len(self.placed) > 1 and self.placed[0].end <= span_end:
            self.placed.popleft()
        paid = 0
        while self.unpaid and (self.unpaid[0][0] <= span_end or pay_all):
            paid += self.unpaid.popleft()[1]
        if paid:
            self.grant_tts(paid)

    # -- arithmetic on the clock ----------------------------------------------------------------
    def buffer_start(self) -> int:
        return frame_start_sample(self.next_frame, self.sr, self.fps)

    def buffered_ms(self) -> float:
        return round(self.buffer.size * 1000 / self.sr, 1)

    def frames_covering(self, n_samples: int) -> int:
        """Frames from next_frame needed to hold n_samples (the last one may be partial)."""
        k = 0
        while frame_start_sample(self.next_frame + k, self.sr, self.fps) - self.buffer_start() < n_samples:
            k += 1
        return k

    def whole_frames(self, n_samples: int) -> int:
        k = 0
        while frame_start_sample(self.next_frame + k + 1, self.sr, self.fps) - self.buffer_start() <= n_samples:
            k += 1
        return k

    def depth_ms(self) -> int:
        """Audio ahead of presentation: buffered here plus the frames already sent down."""
        return int(self.buffer.size * 1000 / self.sr + self.lead() * 1000 / self.fps)

    def lead(self) -> int:
        """Frames emitted and not yet presented (as last reported, plus what we sent since)."""
        return self.driver_credit.depth + self.emitted_since_report

    def grant_tts(self, amount: int, reset: bool = False) -> None:
        self.ctx.grant("tts", max(0, amount), depth=self.depth_ms(), reset=reset)
        self.depth_told = self.depth_ms()
