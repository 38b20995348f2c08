"""Driver actor: AudioSpans and VisualMarkers in, rendered AVPackets out.

The driver renders exactly the frame slots the stitcher pinned to the audio clock:
mouth shapes from the span's phoneme timing and level, expressions and pose from
markers (refined from a character offset to the sample where that word is spoken),
idle life everywhere. Frames leave against player credit (unit: frames), in batches
of at most ``max_render_batch``; the first speech frame of a chunk is rendered alone
so it is out as soon as possible, and batches after the start of speech grow with the
lead the player holds (1, 1, 2, 4, ...). Between batches the loop goes back to its
sockets, so a barge-in never waits for more than one batch.
"""

from __future__ import annotations

import bisect
import time
from collections import deque

import numpy as np
import zmq

from protocol import AudioSpan, AVPacket, Credit, VisualMarker, frame_start_sample

from .render import FaceDriver, MarkerError, frame_rms
from .runtime import ActorContext, CreditLedger

NAME = "driver"
MAX_PENDING_MARKERS = 256


def run(ctx: ActorContext) -> None:
    flow = ctx.config["flow"]
    window = int(flow["driver_window_frames"])
    max_batch = int(flow["max_render_batch"])
    face = FaceDriver(ctx.config)
    face.warmup(tuple(sorted({1, 2, 4, max_batch})))
    sr, fps = face.sample_rate, face.fps
    width, height = face.renderer.width, face.renderer.height
    player_credit = CreditLedger("driver->player", "frames")
    spans: deque[AudioSpan] = deque()  # bounded: the stitcher never exceeds the window we grant
    rendered_in_head = 0
    chunk_starts: list[tuple[int, int, dict]] = []  # (start sample, sequence_id, provenance), sorted
    anchors: dict[int, tuple[int, tuple]] = {}  # sequence_id -> (start sample, word anchors)
    pending_markers: dict[int, list[VisualMarker]] = {}
    first_frame_sent: set[int] = set()  # sequence ids whose first frame is out
    added_since_render: list[int] = []  # chunks whose phonemes arrived since the last render (for replay)
    sent_since_report = 0
    speech_streak = 0  # speech frames sent since speech (re)started: batches ramp 1, 1, 2, 4, ... up to max_batch

    def queued_frames() -> int:
        return sum(s.n_frames for s in spans) - rendered_in_head

    def next_frame() -> int:
        return spans[0].first_frame + rendered_in_head if spans else -1

    def start_epoch(epoch: int, cause: str, _issued_at_ns: int = 0) -> None:
        nonlocal rendered_in_head, sent_since_report, speech_streak
        if ctx.adopt_epoch(epoch, cause):
            spans.clear()
            rendered_in_head = speech_streak = 0
            chunk_starts.clear(), anchors.clear(), pending_markers.clear(), added_since_render.clear()
            face.animator.forget_speech()
            player_credit.enter_epoch(epoch)
            sent_since_report = 0
            ctx.grant("stitcher", "stitcher->driver", window, "frames", depth=0)

    def apply_marker(marker: VisualMarker) -> None:
        start, word_anchors = anchors[marker.sequence_id]
        sample = start
        for char_offset, anchor_sample in word_anchors:
            if char_offset <= marker.timestamp_offset:
                sample = anchor_sample
        frame = sample * fps // sr
        upcoming = next_frame()
        late = upcoming >= 0 and frame < upcoming
        try:
            face.animator.apply_marker(marker.command, marker.value, max(frame, upcoming) if late else frame)
        except MarkerError as exc:
            ctx.error("marker", "unknown_marker", str(exc), utterance_id=marker.utterance_id, chunk_id=marker.sequence_id)
            return
        ctx.emit("marker", "late" if late else "ok", frame=frame, utterance_id=marker.utterance_id,
                 chunk_id=marker.sequence_id,
                 data={"command": marker.command, "value": marker.value, "char_offset": marker.timestamp_offset,
                       "sample": sample, "ms_into_chunk": round((sample - start) * 1000 / sr, 1),
                       "applied_frame": max(frame, upcoming) if late else frame})

    def on_span(span: AudioSpan) -> None:
        spans.append(span)
        starts = sorted(s[1] for s in span.chunk_starts)
        for i, first in enumerate(starts):  # one call per chunk: replay rebuilds exactly these groups
            until = starts[i + 1] if i + 1 < len(starts) else float("inf")
            face.animator.add_phonemes([p for p in span.phonemes if first <= p[1] < until])
        for sequence_id, start, word_anchors, provenance in span.chunk_starts:
            added_since_render.append(sequence_id)
            bisect.insort(chunk_starts, (start, sequence_id, provenance))
            anchors[sequence_id] = (start, word_anchors)
            for marker in pending_markers.pop(sequence_id, []):
                apply_marker(marker)
        del chunk_starts[:-64]

    def on_marker(marker: VisualMarker) -> None:
        if marker.sequence_id in anchors:
            apply_marker(marker)
        elif sum(len(v) for v in pending_markers.values()) < MAX_PENDING_MARKERS:
            pending_markers.setdefault(marker.sequence_id, []).append(marker)
        else:
            ctx.error("marker", "too_many_markers", f"marker for chunk {marker.sequence_id} dropped")

    def provenance_at(sample: int) -> dict | None:
        i = bisect.bisect_right(chunk_starts, (sample, float("inf"), {})) - 1
        return chunk_starts[i][2] if i >= 0 else None

    def render_batch() -> None:
        nonlocal rendered_in_head, sent_since_report, speech_streak
        head = spans[0]
        remaining = head.n_frames - rendered_in_head
        n = min(remaining, player_credit.available, max_batch)
        if head.kind == "speech":
            # When speech starts the player skips its idle filler and holds one frame, so a full
            # batch (~100 ms on a loaded CPU) would underflow it: grow batches with the lead.
            n = min(n, max(1, speech_streak))
            if head.sequence_id not in first_frame_sent:
                n = 1  # the first frame of a chunk goes out alone: time-to-first-frame
            speech_streak += n
        else:
            speech_streak = 0
        first = head.first_frame + rendered_in_head
        frames = np.arange(first, first + n)
        pcm = np.frombuffer(head.pcm, np.int16)
        base = frame_start_sample(head.first_frame, sr, fps)
        bounds = [frame_start_sample(int(f), sr, fps) - base for f in range(first, first + n + 1)]
        rms = np.array([frame_rms(pcm, bounds[i], bounds[i + 1]) for i in range(n)])
        started = time.perf_counter()
        images = face.render_frames(frames, rms)
        render_ms = (time.perf_counter() - started) * 1000
        # On the timeline before the frames leave: the player may present one within a
        # millisecond, and replay follows the timeline in time order (render, then present).
        ctx.emit("render", frame=first, utterance_id=head.utterance_id, chunk_id=head.sequence_id,
                 duration_ms=render_ms, surface=face.renderer.name,
                 data={"frames": n, "kind": head.kind, "credit_left": player_credit.available - n, "unit": "frames",
                       "link": "driver->player", "cost": n, "queued_frames": queued_frames() - n, "final": head.final,
                       "added_chunks": list(added_since_render)})
        added_since_render.clear()
        for i, frame in enumerate(frames):
            sample = frame_start_sample(int(frame), sr, fps)
            provenance = provenance_at(sample) if head.kind == "speech" else None
            if provenance is not None:
                provenance = {**provenance, "frame_render_ms": round(render_ms / n, 2)}
            final = head.final and i == n - 1 and rendered_in_head + n == head.n_frames
            packet = AVPacket(
                epoch=ctx.epoch, frame_index=int(frame), sample_rate=sr, fps=fps, width=width, height=height,
                kind=head.kind, utterance_id=head.utterance_id,
                sequence_id=provenance["chunk_id"] if provenance else -1, final=final, provenance=provenance,
                pixels=memoryview(images[i]).cast("B"), pcm=memoryview(pcm[bounds[i]:bounds[i + 1]]).cast("B"),
            )
            ctx.send_to("player", packet)
            player_credit.spend(1)
            if provenance and provenance["chunk_id"] not in first_frame_sent:
                first_frame_sent.add(provenance["chunk_id"])
                ctx.emit("first_frame", frame=int(frame), utterance_id=head.utterance_id, chunk_id=provenance["chunk_id"],
                         duration_ms=render_ms / n, surface="driver->player", data={"adapter": provenance.get("adapter")})
        rendered_in_head += n
        sent_since_report += n
        if rendered_in_head == head.n_frames:
            spans.popleft()
            rendered_in_head = 0
        if len(first_frame_sent) > 1024:
            first_frame_sent.clear()
        ctx.grant("stitcher", "stitcher->driver", n, "frames",
                  depth=queued_frames() + player_credit.depth + sent_since_report, playing=player_credit.playing)

    poller = zmq.Poller()
    poller.register(ctx.system, zmq.POLLIN)
    poller.register(ctx.inbox, zmq.POLLIN)
    info = {"actor": NAME, "renderer": face.renderer.describe(), "persona": {"name": face.pack.name, **face.pack.qc},
            "consumes": ["audio_span <- stitcher", "visual_marker <- parser", "credit <- player (frames)"],
            "produces": ["av_packet -> player", "credit -> stitcher (frames)"],
            "credit": {"grants": {"link": "stitcher->driver", "unit": "frames", "window": window},
                       "spends": {"link": "driver->player", "unit": "frames"}},
            "interface": "async generate_frames(audio_buffer, visual_state) -> AsyncGenerator[np.ndarray]"}
    ctx.ready(info)
    ctx.grant("stitcher", "stitcher->driver", window, "frames", depth=0)

    depth_changed = False
    while ctx.running:
        can_render = bool(spans) and player_credit.available > 0
        poller.poll(0 if can_render else ctx.poll_timeout_ms())
        ctx.handle_system(start_epoch)
        for msg in ctx.drain(ctx.inbox):
            if getattr(msg, "epoch", ctx.epoch) > ctx.epoch:
                start_epoch(msg.epoch, f"{msg.TYPE} from newer epoch")
            if isinstance(msg, Credit):
                player_credit.on_credit(msg)
                sent_since_report = 0
                depth_changed = True
            elif getattr(msg, "epoch", ctx.epoch) < ctx.epoch:
                ctx.emit("drop", "drop", epoch=msg.epoch, data={"type": msg.TYPE})
            elif isinstance(msg, AudioSpan):
                if queued_frames() + msg.n_frames > window:
                    ctx.error("receive", "credit_exceeded", f"span of {msg.n_frames} frames beyond the window", frame=msg.first_frame)
                on_span(msg)
            elif isinstance(msg, VisualMarker):
                on_marker(msg)
        if spans and player_credit.available > 0:
            render_batch()
        elif depth_changed:
            # Idle: still tell the stitcher how deep the player is, so it can keep the idle lead.
            ctx.grant("stitcher", "stitcher->driver", 0, "frames", depth=queued_frames() + player_credit.depth,
                      playing=player_credit.playing)
        depth_changed = False
        ctx.heartbeat({"queued_frames": queued_frames(), "next_frame": next_frame(),
                       "pending_markers": sum(len(v) for v in pending_markers.values()),
                       "credit": {"player_frames": player_credit.available}, "device": str(face.device)})
