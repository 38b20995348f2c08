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
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np
import zmq

from protocol import AudioChunk, AudioSpan, Credit, frame_start_sample

from .runtime import ActorContext, CreditLedger

NAME = "stitcher"
#: Largest span sent in one message (frames); the driver renders in smaller batches anyway.
MAX_SPAN_FRAMES = 50


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
        tail = self._data[self.size - n:self.size].astype(np.float32)
        mixed = tail * fade_out[:n] + head.astype(np.float32) * fade_in[:n]
        self._data[self.size - n:self.size] = np.clip(np.rint(mixed), -32768, 32767).astype(np.int16)

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
    provenance: dict


def run(ctx: ActorContext) -> None:
    media, flow = ctx.config["media"], ctx.config["flow"]
    sr, fps = int(media["sample_rate"]), int(media["fps"])
    window_ms = int(flow["stitcher_window_ms"])
    overlap = int(sr * flow["stitch_overlap_ms"] / 1000)
    idle_lead, jitter_min = int(flow["idle_lead_frames"]), int(flow["jitter_min_frames"])
    gap_lead = int(flow["gap_lead_frames"])
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0.0, math.pi, max(overlap, 1), dtype=np.float32))
    fade_in, fade_out = ramp, ramp[::-1].copy()
    buffer = SampleBuffer(window_ms * sr // 1000 + 2 * sr)  # window + resampling/padding slack
    driver_credit = CreditLedger("stitcher->driver", "frames")
    next_frame = 0  # first frame not yet emitted; never rewinds, not even on barge-in
    utterance_id = -1
    in_utterance = False  # speech of utterance_id started and its final piece not yet in
    flushing = False  # final piece in: emit everything, pad the last frame
    contiguous = False  # the buffer's end is speech a new chunk may overlap
    placed: deque[PlacedChunk] = deque()  # chunks whose audio is (partly) still buffered
    announce: list[tuple[tuple, list]] = []  # (chunk start, its phonemes) not yet sent to the driver
    unpaid: deque[tuple[int, int]] = deque()  # (global end sample, ms) to return to the TTS once emitted
    emitted_since_report = 0
    gaps = 0
    depth_sent = [0]  # last depth told to the TTS (its rate controller steers by it)
    loudness = Loudness()

    def buffer_start() -> int:
        return frame_start_sample(next_frame, sr, fps)

    def start_epoch(epoch: int, cause: str, _issued_at_ns: int = 0) -> None:
        nonlocal in_utterance, flushing, contiguous
        if ctx.adopt_epoch(epoch, cause):
            buffer.clear()
            placed.clear(), announce.clear(), unpaid.clear()
            in_utterance = flushing = contiguous = False
            driver_credit.enter_epoch(epoch)
            grant_tts(window_ms)

    def on_audio(chunk: AudioChunk) -> None:
        nonlocal utterance_id, in_utterance, flushing, contiguous
        pcm = np.frombuffer(chunk.pcm, np.int16)
        scale = 1.0
        if chunk.sample_rate != sr:
            pcm, scale = resample(pcm, chunk.sample_rate, sr), sr / chunk.sample_rate
        gain = loudness.gain_for(chunk.adapter, pcm, first_piece=chunk.piece == 0)
        if gain != 1.0:
            pcm = np.clip(np.rint(pcm.astype(np.float32) * gain), -32768, 32767).astype(np.int16)
        if chunk.utterance_id != utterance_id or not in_utterance:
            utterance_id, in_utterance, flushing = chunk.utterance_id, True, False
        overlap_used = 0
        start = -1
        if chunk.piece == 0:
            if contiguous and buffer.size >= overlap and len(pcm) >= overlap:
                buffer.mix_tail(pcm[:overlap], fade_out, fade_in)
                overlap_used = overlap
            start = buffer_start() + buffer.size - overlap_used
            provenance = {"adapter": chunk.adapter, "chunk_id": chunk.sequence_id,
                          "window_tokens": chunk.window_tokens, "render_ms": chunk.render_ms, "epoch": chunk.epoch}
            placed.append(PlacedChunk(chunk.sequence_id, chunk.utterance_id, start, start, provenance))
            anchors = tuple((c, start + int(s * scale)) for c, s in chunk.word_anchors)
            phonemes = [(p, start + int(s * scale), int(n * scale)) for p, s, n in chunk.phonemes]
            announce.append(((chunk.sequence_id, start, anchors, provenance), phonemes))
        buffer.append(pcm[overlap_used:])
        end = buffer_start() + buffer.size
        if placed and placed[-1].sequence_id == chunk.sequence_id:
            placed[-1].end = end
        unpaid.append((end, math.ceil(chunk.n_samples * 1000 / chunk.sample_rate)))
        contiguous = True
        if chunk.final and chunk.last_piece:
            flushing = True
            frames_needed = frames_covering(buffer.size)
            buffer.pad_to(frame_start_sample(next_frame + frames_needed, sr, fps) - buffer_start())
        ctx.emit("stitch", utterance_id=chunk.utterance_id, chunk_id=chunk.sequence_id, surface="tts->stitcher",
                 data={"piece": chunk.piece, "samples": len(pcm), "overlap": overlap_used, "start": start,
                       "buffered_ms": round(buffer.size * 1000 / sr, 1), "final": chunk.final and chunk.last_piece,
                       "adapter": chunk.adapter, "gain": gain, "loudness": round(loudness.last_output, 1)})

    def frames_covering(n_samples: int) -> int:
        """Frames from next_frame needed to hold n_samples (the last one may be partial)."""
        k = 0
        while frame_start_sample(next_frame + k, sr, fps) - buffer_start() < n_samples:
            k += 1
        return k

    def whole_frames(n_samples: int) -> int:
        k = 0
        while frame_start_sample(next_frame + k + 1, sr, fps) - buffer_start() <= n_samples:
            k += 1
        return k

    def emit_span(n_frames: int, kind: str, final: bool = False) -> None:
        nonlocal next_frame, emitted_since_report, in_utterance, flushing, contiguous
        first = next_frame
        n_samples = frame_start_sample(first + n_frames, sr, fps) - frame_start_sample(first, sr, fps)
        if kind == "fill":
            pcm = np.zeros(n_samples, np.int16)
        else:
            buffer.pad_to(n_samples)
            pcm = buffer.take(n_samples)
        driver_credit.spend(n_frames)
        next_frame += n_frames
        emitted_since_report += n_frames
        span_end = frame_start_sample(next_frame, sr, fps)
        covering = next((p for p in placed if p.start <= frame_start_sample(first, sr, fps) < p.end), None)
        due = [item for item in announce if item[0][1] < span_end]
        del announce[: len(due)]
        span = AudioSpan(
            epoch=ctx.epoch, first_frame=first, n_frames=n_frames, sample_rate=sr, fps=fps, kind=kind,
            utterance_id=utterance_id if kind == "speech" else -1,
            sequence_id=covering.sequence_id if covering and kind == "speech" else -1,
            final=final, phonemes=tuple(p for _, phonemes in due for p in phonemes),
            chunk_starts=tuple(start for start, _ in due),
            provenance=covering.provenance if covering and kind == "speech" else None,
            pcm=pcm.tobytes(),
        )
        ctx.send_to("driver", span)
        while len(placed) > 1 and placed[0].end <= span_end:
            placed.popleft()
        paid = 0
        while unpaid and (unpaid[0][0] <= span_end or (final and kind == "speech")):
            paid += unpaid.popleft()[1]
        if paid:
            grant_tts(paid)
        if final:
            in_utterance = flushing = contiguous = False
            placed.clear()
        ctx.emit("span", "ok", frame=first, utterance_id=span.utterance_id, chunk_id=span.sequence_id,
                 surface="stitcher->driver",
                 data={"frames": n_frames, "kind": kind, "final": final, "credit_left": driver_credit.available,
                       "unit": "frames", "link": "stitcher->driver", "cost": n_frames, "lead": lead(),
                       "buffered_ms": round(buffer.size * 1000 / sr, 1)})

    def depth_ms() -> int:
        """Audio ahead of presentation: buffered here plus the frames already sent down."""
        return int(buffer.size * 1000 / sr + lead() * 1000 / fps)

    def grant_tts(amount: int) -> None:
        ctx.grant("tts", "tts->stitcher", amount, "ms", depth=depth_ms())
        depth_sent[0] = depth_ms()

    def lead() -> int:
        """Frames emitted and not yet presented (as last reported, plus what we sent since)."""
        return driver_credit.depth + emitted_since_report

    poller = zmq.Poller()
    poller.register(ctx.system, zmq.POLLIN)
    poller.register(ctx.inbox, zmq.POLLIN)
    ctx.ready(describe(ctx.config))
    grant_tts(window_ms)
    frame_s = 1.0 / fps

    while ctx.running:
        poller.poll(max(1, min(ctx.poll_timeout_ms(), int(frame_s * 500))))
        ctx.handle_system(start_epoch)
        for msg in ctx.drain(ctx.inbox):
            if getattr(msg, "epoch", ctx.epoch) > ctx.epoch:
                start_epoch(msg.epoch, f"{msg.TYPE} from newer epoch")
            if isinstance(msg, Credit):
                driver_credit.on_credit(msg)
                emitted_since_report = 0
            elif isinstance(msg, AudioChunk):
                if msg.epoch < ctx.epoch:
                    ctx.emit("stitch", "drop", utterance_id=msg.utterance_id, chunk_id=msg.sequence_id, epoch=msg.epoch)
                else:
                    on_audio(msg)
        # Speech first: whatever whole frames are ready, as far as credit goes.
        held = 0 if flushing or not in_utterance else overlap
        ready = whole_frames(max(0, buffer.size - held))
        n = min(ready, driver_credit.available, MAX_SPAN_FRAMES)
        if n > 0:
            final = flushing and frame_start_sample(next_frame + n, sr, fps) - buffer_start() >= buffer.size
            emit_span(n, "speech", final=final)
        elif driver_credit.available > 0:
            # Idle: a deep lead (skipped for free when speech comes). Mid-utterance: wait for the
            # late chunk as long as is safe, since every fill frame there is an audible gap.
            if in_utterance:
                target = gap_lead
            else:
                target = idle_lead if driver_credit.playing else max(idle_lead, jitter_min)
            if lead() < target:
                if in_utterance and buffer.size > 0:
                    # The TTS fell behind mid-utterance: play out the held tail now.
                    gaps += 1
                    contiguous = False
                    ctx.emit("stitch", "gap", utterance_id=utterance_id, frame=next_frame,
                             data={"held_samples": buffer.size, "gaps": gaps})
                    emit_span(1, "speech")
                else:
                    if in_utterance:
                        gaps += 1
                        ctx.emit("stitch", "gap", utterance_id=utterance_id, frame=next_frame, data={"gaps": gaps})
                    emit_span(1, "fill")
        if abs(depth_ms() - depth_sent[0]) >= 1000 / fps:
            grant_tts(0)  # depth changed by a frame or more: keep the controller's view current
        ctx.heartbeat({"next_frame": next_frame, "buffered_ms": round(buffer.size * 1000 / sr, 1),
                       "in_utterance": in_utterance, "lead_frames": lead(), "gaps": gaps,
                       "credit": {"driver_frames": driver_credit.available}})


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


def speech_loudness(pcm: np.ndarray, block: int = 220) -> float:
    """RMS over the louder half of 10 ms blocks: the level of the speech, not the pauses."""
    n = len(pcm) // block
    if n == 0:
        return 0.0
    rms = np.sqrt(np.mean(pcm[: n * block].astype(np.float64).reshape(n, block) ** 2, axis=1))
    loud = np.sort(rms)[n // 2:]
    return float(loud.mean()) if loud.size and loud.mean() > 50 else 0.0


def resample(pcm: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    from scipy.signal import resample_poly

    g = math.gcd(from_rate, to_rate)
    out = resample_poly(pcm.astype(np.float32), to_rate // g, from_rate // g)
    return np.clip(np.rint(out), -32768, 32767).astype(np.int16)


def describe(config: dict) -> dict:
    flow = config["flow"]
    return {
        "actor": NAME,
        "clock": {"sample_rate": config["media"]["sample_rate"], "fps": config["media"]["fps"],
                  "frame_k_starts_at_sample": "k*sample_rate//fps"},
        "overlap_ms": flow["stitch_overlap_ms"],
        "consumes": ["audio_chunk <- tts", "credit <- driver (frames)"],
        "produces": ["audio_span -> driver", "credit -> tts (ms)"],
        "credit": {"grants": {"link": "tts->stitcher", "unit": "ms", "window": flow["stitcher_window_ms"]},
                   "spends": {"link": "stitcher->driver", "unit": "frames"}},
    }
