"""Driver actor: AudioSpans and VisualMarkers in, rendered AVPackets out.

The driver renders exactly the frame slots the stitcher pinned to the audio clock:
mouth shapes from the span's phoneme timing and level, expressions and pose from
markers (refined from a character offset to the sample where that word is spoken),
idle life everywhere. Frames leave against player credit (unit: frames), in batches
of at most ``max_render_batch``; the first speech frame of a chunk is rendered alone
so it is out as soon as possible, and batches after the start of speech grow with the
lead the player holds (1, 1, 2, 4, ...). Between batches the loop goes back to its
sockets, so a barge-in never waits for more than one batch.

In a crash recovery the driver says where the timeline continues when the stitcher or the
player was replaced (the first frame it lacks, or the first the player has not shown), and
starts over from there when the player was. A chunk announced twice, or a marker sent
twice, is taken once.
"""

from __future__ import annotations

import bisect
import time
from collections import deque

import numpy as np

from protocol import (AudioSpan, AVPacket, ChunkStart, ConfigUpdate, Credit, Provenance, Recovery, ResumePoint,
                      VisualMarker, frame_start_sample)

from .face_host import FaceHost
from .render import FaceDriver, MarkerError, frame_rms
from .runtime import ActorContext, CreditLedger, grants_descriptor

NAME = "driver"
MAX_PENDING_MARKERS = 256
#: Chunk placements remembered for stamping frames with their provenance.
KNOWN_CHUNKS = 64
#: Render resolution (RenderGovernor): a frame's render, wall time, above this share of the
#: frame period is too slow for a 2-core machine shared with four other actors ...
DEGRADE_COST_SHARE = 0.6
#: ... and the full size comes back when it is predicted below this share (hysteresis).
RESTORE_COST_SHARE = 0.35
#: Behind: the player holds fewer frames than this while at least as many wait here.
LOW_DEPTH_FRAMES = 8
#: Seconds of continuous speech before a low player depth counts (speech after idle starts
#: with one frame buffered and the batch ramp rebuilds the lead).
SPEECH_SETTLE_S = 2.0
#: Frames measured at a level before it is judged; seconds between changes, and before the
#: full size is tried again after a drop.
JUDGE_FRAMES = 25
MIN_DWELL_S = 3.0
RESTORE_DWELL_S = 10.0
#: The cost judged is the median per-frame time of the last this many batches: one batch
#: the scheduler preempted for 300 ms (seen on the shared 2-core machine) is not a trend.
COST_BATCHES = 15


class Driver:
    def __init__(self, ctx: ActorContext, face: FaceDriver | None = None):
        self.ctx = ctx
        flow = ctx.config["flow"]
        self.window = int(flow["driver_window_frames"])
        self.max_batch = int(flow["max_render_batch"])
        self.host = FaceHost(ctx, face, warmup_batches=tuple(sorted({1, 2, 4, self.max_batch})))
        self.face.warmup(tuple(sorted({1, 2, 4, self.max_batch})))
        self.sr, self.fps = self.face.sample_rate, self.face.fps
        self.player_credit = CreditLedger(NAME, "player")
        self.spans: deque[AudioSpan] = deque()  # bounded: the stitcher never exceeds the window we grant
        self.rendered_in_head = 0
        self.chunk_starts: list[tuple[int, int, Provenance]] = []  # (start sample, sequence_id, provenance), sorted
        self.anchors: dict[int, ChunkStart] = {}
        self.pending_markers: dict[int, list[VisualMarker]] = {}
        self.first_frame_sent: set[int] = set()  # sequence ids whose first frame is out
        self.added_since_render: list[int] = []  # chunks whose phonemes arrived since the last render (for replay)
        self.sent_since_report = 0
        self.speech_streak = 0  # speech frames sent since speech (re)started: batches ramp 1, 1, 2, 4, ...
        self.depth_changed = False
        self.expected_frame = -1  # the frame after the last span received
        self.last_span: AudioSpan | None = None  # its kind, utterance and end tell where a recovery resumes
        self.applied_markers: set[tuple[int, int, int]] = set()  # (epoch, chunk, index): a repeat is dropped
        self.paused = False
        self.governor = RenderGovernor(self.fps, self.face)

    @property
    def face(self) -> FaceDriver:
        return self.host.face

    def describe(self) -> dict:
        return {"actor": NAME, "renderer": {**self.face.renderer.describe(), "warmed_batches": self.face.warmed_batches}, "persona": self.host.describe(),
                "consumes": ["audio_span <- stitcher", "visual_marker <- parser", "credit <- player (frames)"],
                "produces": ["av_packet -> player", "credit -> stitcher (frames)"],
                "credit": {"grants": grants_descriptor("stitcher", NAME, self.window),
                           "spends": self.player_credit.describe()},
                "interface": "async generate_frames(audio_buffer, visual_state) -> AsyncGenerator[np.ndarray]"}

    def run(self) -> None:
        ctx = self.ctx
        poller = ctx.poller()
        ctx.ready(self.describe())
        self.host.start()
        ctx.start_receiving(lambda: ctx.grant("stitcher", self.window, depth=0, reset=True))
        while ctx.running:
            poller.poll(0 if self.can_render() else ctx.poll_timeout_ms())
            ctx.receive(self)
            self.step()
            ctx.heartbeat(self.stats())
        self.host.close()

    def stats(self) -> dict:
        return {"queued_frames": self.queued_frames(), "next_frame": self.next_frame(),
                "pending_markers": sum(len(v) for v in self.pending_markers.values()),
                "credit": {"player_frames": self.player_credit.available}, "device": str(self.face.device),
                "render_size": self.face.render_size(), "render_level": self.face.level,
                "render_ms_per_frame": round(self.governor.cost_ms or 0.0, 2)}

    def step(self) -> None:
        self.host.step()
        if self.can_render():
            self.render_batch()
        elif self.depth_changed:
            # Idle: still tell the stitcher how deep the player is, so it can keep the idle lead.
            self.ctx.grant("stitcher", 0, depth=self.queued_frames() + self.player_credit.depth,
                           playing=self.player_credit.playing)
        self.depth_changed = False

    def can_render(self) -> bool:
        return bool(self.spans) and self.player_credit.available > 0 and not self.paused

    def queued_frames(self) -> int:
        return sum(s.n_frames for s in self.spans) - self.rendered_in_head

    def next_frame(self) -> int:
        return self.spans[0].first_frame + self.rendered_in_head if self.spans else -1

    # -- handlers -------------------------------------------------------------------------------
    def on_epoch(self, epoch: int, cause: str, _issued_at_ns: int = 0) -> None:
        if self.ctx.adopt_epoch(epoch, cause):
            self.drop_all()
            self.player_credit.enter_epoch(epoch)
            self.ctx.grant("stitcher", self.window, depth=0)

    def drop_all(self) -> None:
        self.spans.clear()
        self.rendered_in_head = self.speech_streak = self.sent_since_report = 0
        self.chunk_starts.clear(), self.anchors.clear(), self.pending_markers.clear(), self.added_since_render.clear()
        self.applied_markers.clear()
        self.face.animator.forget_speech()
        self.last_span, self.expected_frame = None, -1

    # -- crash recovery (actors.recovery) ------------------------------------------------------
    def on_peer_down(self, recovery: Recovery) -> None:
        if recovery.actor == "player":
            self.player_credit.suspend()
            self.paused = True

    def on_peer_rejoined(self, recovery: Recovery) -> None:
        """A new stitcher or player: say where the timeline continues; a new stitcher also
        gets what credit we do not hold."""
        if recovery.actor == "stitcher":
            self.report_resume(recovery, self.expected_frame)
            self.ctx.grant("stitcher", self.window - self.queued_frames(), depth=self.queued_frames(), reset=True)
        elif recovery.actor == "player":
            shown = self.player_credit.position
            self.report_resume(recovery, shown + 1 if shown >= 0 else self.first_unsent_frame())

    def report_resume(self, recovery: Recovery, frame: int) -> None:
        chunk, start = self.chunk_at(frame)
        skip = frame_start_sample(frame, self.sr, self.fps) - start if chunk >= 0 else 0
        self.ctx.request(ResumePoint(actor=NAME, pid=self.ctx.incarnation, recovery_id=recovery.recovery_id,
                                     resume_frame=frame, resume_chunk=chunk, chunk_start=start, skip_samples=skip))

    def chunk_at(self, frame: int) -> tuple[int, int]:
        """The chunk still speaking at ``frame`` and its start sample; (-1, -1) when none is
        (the utterance had ended, or nothing was said)."""
        span = self.last_span
        if frame < 0 or span is None or (span.kind == "speech" and span.final) or not self.chunk_starts:
            return -1, -1
        start, sequence_id, _ = self.chunk_starts[bisect.bisect_right(
            self.chunk_starts, (frame_start_sample(frame, self.sr, self.fps), float("inf"))) - 1]
        return sequence_id, start

    def first_unsent_frame(self) -> int:
        return self.next_frame() if self.spans else self.expected_frame

    def on_rewind(self, recovery: Recovery) -> None:
        """The player was replaced (or we were): start over at the frame it lacks."""
        if NAME not in recovery.scope:
            return
        keep = self.chunk_starts[-KNOWN_CHUNKS:]
        self.drop_all()
        self.chunk_starts = keep  # so a later recovery can still place what was said before
        if "player" in recovery.scope:
            self.player_credit.await_reset_after(recovery.recovery_id)
        self.paused = False
        self.ctx.grant("stitcher", self.window, depth=0, reset=True)

    def on_recovered(self, _recovery: Recovery) -> None:
        self.paused = False

    def on_config(self, update: ConfigUpdate) -> None:
        self.host.on_config(update)

    def on_credit(self, credit: Credit) -> None:
        self.player_credit.on_credit(credit)
        self.sent_since_report = 0
        self.depth_changed = True

    def on_audio_span(self, span: AudioSpan) -> None:
        if self.queued_frames() + span.n_frames > self.window:
            self.ctx.error("receive", "credit_exceeded", f"span of {span.n_frames} frames beyond the window",
                           frame=span.first_frame)
        self.spans.append(span)
        self.last_span, self.expected_frame = span, span.first_frame + span.n_frames
        if span.kind == "speech":
            self.host.on_speech(span.utterance_id, span.first_frame)
        # A chunk announced again after a recovery is placed already: its phonemes are in.
        new = [start for start in span.chunk_starts if start.sequence_id not in self.anchors]
        starts = sorted(s.start_sample for s in span.chunk_starts)
        for i, first in enumerate(starts):  # one call per chunk: replay rebuilds exactly these groups
            if all(s.start_sample != first for s in new):
                continue
            until = starts[i + 1] if i + 1 < len(starts) else float("inf")
            self.face.animator.add_phonemes([p for p in span.phonemes if first <= p[1] < until])
        for start in new:
            self.added_since_render.append(start.sequence_id)
            bisect.insort(self.chunk_starts, (start.start_sample, start.sequence_id, start.provenance))
            self.anchors[start.sequence_id] = start
            for marker in self.pending_markers.pop(start.sequence_id, []):
                self.apply_marker(marker)
        del self.chunk_starts[:-KNOWN_CHUNKS]

    def on_visual_marker(self, marker: VisualMarker) -> None:
        key = (marker.epoch, marker.sequence_id, marker.index_in_chunk)
        if key in self.applied_markers:
            return  # sent again after a recovery
        self.applied_markers.add(key)
        if len(self.applied_markers) > 4 * MAX_PENDING_MARKERS:
            self.applied_markers = {k for k in self.applied_markers if k[1] >= marker.sequence_id - KNOWN_CHUNKS}
        if marker.sequence_id in self.anchors:
            self.apply_marker(marker)
        elif sum(len(v) for v in self.pending_markers.values()) < MAX_PENDING_MARKERS:
            self.pending_markers.setdefault(marker.sequence_id, []).append(marker)
        else:
            self.ctx.error("marker", "too_many_markers", f"marker for chunk {marker.sequence_id} dropped")

    def apply_marker(self, marker: VisualMarker) -> None:
        """From the marker's character offset to the sample where its word is spoken, to a frame;
        a marker whose frame has already been rendered applies from the next frame."""
        chunk = self.anchors[marker.sequence_id]
        sample = chunk.start_sample
        for char_offset, anchor_sample in chunk.word_anchors:
            if char_offset <= marker.timestamp_offset:
                sample = anchor_sample
        frame = sample * self.fps // self.sr
        upcoming = self.next_frame()
        late = upcoming >= 0 and frame < upcoming
        applied_frame = max(frame, upcoming) if late else frame
        try:
            applied = self.host.apply_marker(marker, applied_frame)
        except MarkerError as exc:
            self.ctx.error("marker", "unknown_marker", str(exc), utterance_id=marker.utterance_id,
                           chunk_id=marker.sequence_id)
            return
        if applied is None:
            return  # the persona's behaviour policy dropped it (a `clamp` event says why)
        self.ctx.emit("marker", "late" if late else "ok", frame=frame, utterance_id=marker.utterance_id,
                      chunk_id=marker.sequence_id,
                      data={"command": marker.command, "value": marker.value, "char_offset": marker.timestamp_offset,
                            "sample": sample, "ms_into_chunk": round((sample - chunk.start_sample) * 1000 / self.sr, 1),
                            "applied_frame": applied_frame, "applied": list(applied),
                            "persona": self.host.face_at(applied_frame).persona.ref})

    # -- rendering ------------------------------------------------------------------------------
    def batch_size(self, head: AudioSpan) -> int:
        n = min(head.n_frames - self.rendered_in_head, self.player_credit.available, self.max_batch)
        if head.kind != "speech":
            self.speech_streak = 0
            return n
        # When speech starts the player skips its idle filler and holds one frame, so a full
        # batch (~100 ms on a loaded CPU) would underflow it: grow batches with the lead.
        n = min(n, max(1, self.speech_streak))
        if head.sequence_id not in self.first_frame_sent:
            n = 1  # the first frame of a chunk goes out alone: time-to-first-frame
        self.speech_streak += n
        return n

    def render_batch(self) -> None:
        head = self.spans[0]
        n = self.batch_size(head)
        first = head.first_frame + self.rendered_in_head
        frames = np.arange(first, first + n)
        pcm = np.frombuffer(head.pcm, np.int16)
        base = frame_start_sample(head.first_frame, self.sr, self.fps)
        bounds = [frame_start_sample(int(f), self.sr, self.fps) - base for f in range(first, first + n + 1)]
        rms = np.array([frame_rms(pcm, bounds[i], bounds[i + 1]) for i in range(n)])
        self.host.before_render(first)
        self.govern(first, head)
        started = time.perf_counter()
        images = self.face.render_frames(frames, rms)
        render_ms = (time.perf_counter() - started) * 1000
        self.governor.observe(render_ms, n)
        # On the timeline before the frames leave: the player may present one within a
        # millisecond, and replay follows the timeline in time order (render, then present).
        self.ctx.emit("render", frame=first, utterance_id=head.utterance_id, chunk_id=head.sequence_id,
                      duration_ms=render_ms, surface=self.face.renderer.name,
                      data={"frames": n, "kind": head.kind, **self.player_credit.describe(), "cost": n,
                            "credit_left": self.player_credit.available - n,
                            "queued_frames": self.queued_frames() - n, "final": head.final,
                            "added_chunks": list(self.added_since_render)})
        self.added_since_render.clear()
        for i, frame in enumerate(frames):
            final = head.final and i == n - 1 and self.rendered_in_head + n == head.n_frames
            self.send_frame(head, int(frame), images[i], pcm[bounds[i]:bounds[i + 1]], final, render_ms / n)
        self.host.after_render(int(frames[-1]), images[-1])
        self.rendered_in_head += n
        self.sent_since_report += n
        if self.rendered_in_head == head.n_frames:
            self.spans.popleft()
            self.rendered_in_head = 0
        if len(self.first_frame_sent) > 1024:
            self.first_frame_sent.clear()
        self.ctx.grant("stitcher", n, depth=self.queued_frames() + self.player_credit.depth + self.sent_since_report,
                       playing=self.player_credit.playing)

    def govern(self, first: int, head: AudioSpan) -> None:
        """Before a batch: the render level for it, on the timeline (``degrade``) when it
        changes, before the render that uses it (replay follows the timeline in order). A new
        persona's face takes over at the level in force."""
        self.governor.bind(self.face)
        speech_s = self.speech_streak / self.fps if head.kind == "speech" else 0.0
        decision = self.governor.decide(depth=self.player_credit.depth, playing=self.player_credit.playing,
                                        waiting=self.queued_frames(), speech_s=speech_s, now=time.monotonic())
        if decision is None and self.face.level == self.governor.level:
            return
        level, why = decision or (self.governor.level, "a new persona's face takes over at the level in force")
        before = self.face.render_size(self.face.level)
        self.face.set_level(level)
        self.governor.switch(level, time.monotonic())
        self.ctx.emit("degrade", "warn" if level > 0 else "ok", frame=first, utterance_id=head.utterance_id,
                      surface=self.face.renderer.name,
                      data={"level": level, "from": before, "to": self.face.render_size(),
                            "output": [self.face.renderer.width, self.face.renderer.height], "why": why,
                            "player_depth": self.player_credit.depth, "queued_frames": self.queued_frames()})

    def send_frame(self, head: AudioSpan, frame: int, image: np.ndarray, pcm: np.ndarray, final: bool,
                   frame_render_ms: float) -> None:
        provenance = self.provenance_at(frame_start_sample(frame, self.sr, self.fps)) if head.kind == "speech" else None
        if provenance is not None:
            provenance = provenance.for_frame(frame_render_ms)
        packet = AVPacket(
            epoch=self.ctx.epoch, frame_index=frame, sample_rate=self.sr, fps=self.fps,
            width=self.face.renderer.width, height=self.face.renderer.height, kind=head.kind,
            utterance_id=head.utterance_id, sequence_id=provenance.chunk_id if provenance else -1, final=final,
            provenance=provenance, credit_of=self.player_credit.token, pixels=memoryview(image).cast("B"),
            pcm=memoryview(pcm).cast("B"),
        )
        self.ctx.send_to("player", packet)
        self.player_credit.spend(1)
        if provenance and provenance.chunk_id not in self.first_frame_sent:
            self.first_frame_sent.add(provenance.chunk_id)
            self.ctx.emit("first_frame", frame=frame, utterance_id=head.utterance_id, chunk_id=provenance.chunk_id,
                          duration_ms=frame_render_ms, surface=self.player_credit.link, data={"adapter": provenance.adapter})

    def provenance_at(self, sample: int) -> Provenance | None:
        i = bisect.bisect_right(self.chunk_starts, (sample, float("inf"))) - 1
        return self.chunk_starts[i][2] if i >= 0 else None


class RenderGovernor:
    """The driver's render level: full (each anchor at the resolution its crop supports) or
    reduced (about half the side, upsampled to the same frame size). It drops when rendering
    cannot hold the frame rate: the median wall time of a frame's render (recent batches) above
    DEGRADE_COST_SHARE of the frame period, or, two seconds into speech, the player holding
    fewer than LOW_DEPTH_FRAMES frames while as many wait here to be rendered. It comes back
    when the full size, predicted from the reduced one by their pixel ratio, fits under
    RESTORE_COST_SHARE and the player is not short. Hysteresis and dwell times keep it from
    flapping; each change is the driver's ``degrade`` event."""

    def __init__(self, fps: int, face: FaceDriver):
        self.budget_ms = 1000.0 / fps
        self.level = 0
        self.costs: deque[float] = deque(maxlen=COST_BATCHES)  # ms per frame of recent batches, this level
        self.frames_seen = 0
        self.changed_at = time.monotonic()
        self.face = None
        self.bind(face)

    def bind(self, face: FaceDriver) -> None:
        """The face that renders (a new persona's has its own sizes); its level is kept."""
        if face is self.face:
            return
        self.face, self.levels = face, len(face.levels)
        full, reduced = face.render_size(0), face.render_size(self.levels - 1)
        self.area_ratio = (full[0] * full[1]) / (reduced[0] * reduced[1])
        self.level = min(self.level, self.levels - 1)

    @property
    def cost_ms(self) -> float | None:
        """The median render time of a frame over the recent batches at this level."""
        return float(np.median(self.costs)) if self.costs else None

    def observe(self, render_ms: float, frames: int) -> None:
        self.costs.append(render_ms / max(frames, 1))
        self.frames_seen += frames

    def decide(self, depth: int, playing: bool, waiting: int, speech_s: float, now: float) -> tuple[int, str] | None:
        """(the level to switch to, why), or None to stay."""
        cost = self.cost_ms
        if self.levels < 2 or cost is None or self.frames_seen < JUDGE_FRAMES:
            return None
        since = now - self.changed_at
        short = playing and speech_s >= SPEECH_SETTLE_S and depth < LOW_DEPTH_FRAMES <= waiting
        if self.level == 0 and since >= MIN_DWELL_S:
            if cost > DEGRADE_COST_SHARE * self.budget_ms:
                return 1, (f"render {cost:.1f} ms a frame (median of recent batches), over {DEGRADE_COST_SHARE:.0%} "
                           f"of the {self.budget_ms:.0f} ms frame period")
            if short:
                return 1, f"behind: the player holds {depth} frames while {waiting} wait to be rendered"
        elif self.level > 0 and since >= RESTORE_DWELL_S and not short:
            predicted = cost * self.area_ratio
            if predicted < RESTORE_COST_SHARE * self.budget_ms:
                return 0, (f"full size predicted at {predicted:.1f} ms a frame, under {RESTORE_COST_SHARE:.0%} of "
                           f"the {self.budget_ms:.0f} ms frame period")
        return None

    def switch(self, level: int, now: float) -> None:
        self.level, self.frames_seen, self.changed_at = level, 0, now
        self.costs.clear()
