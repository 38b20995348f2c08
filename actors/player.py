"""Player actor: the frame buffer and the clock.

The player is a virtual sound card: its clock is CLOCK_MONOTONIC advancing at the
audio rate, and presentation tick ``n`` is due at ``t0 + n/fps``, the moment its
audio starts playing. Each tick puts the next A/V packet -- the frame and the exact
samples under it -- on air: the picture changes only on ticks, and the audio leaves
in ``AUDIO_BLOCK_MS`` blocks, block ``j`` when its first sample is due. Once its last
block has started, nothing can change the tick any more: it is sealed, and the packet,
as it played, goes to the sinks (MP4 recording, the ``av_out`` PUB socket) and on the
timeline (``present``, stamped with the moment the tick went on air).
Playback starts once ``jitter_min_frames`` are buffered. Idle fill queued ahead of
the first speech frame is skipped when that frame arrives (it is filler; the clock
does not stop). An empty buffer at a tick is an underflow: the last frame is held with
silence and the event is on the timeline. A barge-in cuts at the next block: the first
block of the frame on air that has not started carries the fade to zero within
``BARGE_FADE_MS`` (no click), the rest of the frame is silent, its picture holds, and
the buffer is flushed. When every block of the frame on air has started, the cut falls on
the boundary: the next old frame's audio fades from its first sample under the held
picture. Credit (frames) goes back to the driver as packets leave the buffer, with the
index of the frame just shown.

What has been shown is what has been heard: the parser learns it (``Heard``) and lets that
text go. When the driver is replaced, the player says where the timeline continues: the
first frame it does not hold, in the chunk that was speaking there.
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque

import numpy as np
import zmq

from protocol import AVPacket, Heard, Recovery, ResumePoint, frame_samples, frame_start_sample
from protocol.transport import send

from .dsp import barge_cut, block_start, blocks_per_frame
from .runtime import ActorContext, grants_descriptor
from .sinks import Mp4Recorder, Overlay, join_recording, part_path, recording_parts

NAME = "player"
#: If presentation falls this many frames behind the clock, the clock slips instead of bursting.
MAX_LATE_FRAMES = 3
#: Below this, poll's millisecond timer is too coarse for a sample clock: sleep to the tick.
FINE_WAIT_S = 0.003
#: The poll's timer is whole milliseconds, rounded down: it is asked for the seal this much after
#: the last block starts, so that it never wakes (and commits the block) before.
SEAL_SLACK_S = 0.001


@dataclasses.dataclass
class OnAir:
    """The tick being played: its audio may still be cut until its last block has started."""

    tick: int
    due: float  # the tick's time on the audio clock (monotonic s)
    started_ns: int  # when it went on air: the picture up, its first block out
    packet: AVPacket | None  # None: a hold (the last picture, silence)
    pixels: np.ndarray
    pcm: np.ndarray
    kind: str
    result: str  # ok / warn (idle hold) / underflow (hold mid-speech)
    lateness_ms: float
    handoff_ms: float
    depth: int
    last_block_due: float  # when its last block starts: from then on it cannot change
    cut_at: int = -1  # the sample of this tick's audio where the barge-in fade starts
    held: bool = False  # the picture of the tick before stays (a cut on the frame boundary)


class Player:
    def __init__(self, ctx: ActorContext):
        self.ctx = ctx
        media, flow, cfg = ctx.config["media"], ctx.config["flow"], ctx.config["player"]
        self.fps, self.sr = int(media["fps"]), int(media["sample_rate"])
        self.width, self.height = int(media["width"]), int(media["height"])
        self.window, self.jitter_min = int(flow["player_window_frames"]), int(flow["jitter_min_frames"])
        self.overlay = Overlay(self.width, self.height, cfg["overlay_text"], cfg["overlay_logo"])
        self.recorder = self.open_recording(cfg["record"]) if cfg["record"] else None
        self.av_out = ctx.public_socket(zmq.PUB, "av_out", hwm=2 * self.fps)
        self.frame_s = 1.0 / self.fps
        self.blocks = blocks_per_frame(self.fps)
        self.buffer: deque[AVPacket] = deque()  # bounded by the window granted to the driver
        self.playing = False
        self.t0 = 0.0
        self.tick = 0
        self.last_pixels = np.zeros((self.height, self.width, 3), np.uint8)
        self.in_speech = False  # last presented packet was speech of an unfinished utterance
        self.fade_next = False  # the next tick is the cut: its audio fades from its first sample
        self.on_air: OnAir | None = None  # the tick playing, not sealed yet
        self.shown_frame = -1  # the last frame presented
        # The last frame sealed (in the recording and on av_out): what credit reports as the
        # position, so a new player after a crash starts with the frame that was on air.
        self.sealed_frame = -1
        self.heard_through = -1  # the last chunk told to the parser as heard, this epoch
        self.last_speech: AVPacket | None = None  # the newest speech packet received (where speech stands)
        self.counts = {"presented": 0, "speech_presented": 0, "underflows": 0, "idle_starved": 0, "flushed": 0,
                       "late_slips": 0, "skipped_fill": 0}

    def open_recording(self, record: str) -> Mp4Recorder:
        """Each player process records its own part (a replacement never overwrites what its
        predecessor recorded); the one that closes joins them into ``record``."""
        parts = recording_parts(record)
        if not self.ctx.rejoining:  # a new session: parts left by an earlier one are not ours
            for stale in parts:
                stale.unlink(missing_ok=True)
            parts = []
        path = part_path(record, len(parts))  # parts are numbered from 0 without gaps
        return Mp4Recorder(str(path), self.width, self.height, self.fps, self.sr, survives_crash=True)

    def describe(self) -> dict:
        cfg = self.ctx.config["player"]
        return {"actor": NAME, "clock": "monotonic, advancing at the audio rate (virtual sound card)",
                "jitter_min_frames": self.jitter_min, "window_frames": self.window, "scheduling": self.ctx.scheduling,
                "audio_blocks_per_frame": self.blocks,
                "sinks": (["mp4:" + cfg["record"]] if self.recorder else []) + ["zmq-pub:" + self.ctx.endpoints["av_out"]],
                "overlay": {"text": cfg["overlay_text"], "logo": cfg["overlay_logo"]},
                "consumes": ["av_packet <- driver"], "produces": ["av_packet -> av_out PUB", "credit -> driver (frames)"],
                "credit": {"grants": grants_descriptor("driver", NAME, self.window)}}

    def run(self) -> None:
        ctx = self.ctx
        poller = ctx.poller()
        ctx.ready(self.describe())
        ctx.start_receiving(lambda: ctx.grant("driver", self.window - len(self.buffer), depth=len(self.buffer),
                                              playing=self.playing, reset=True, position=self.sealed_frame))
        while ctx.running:
            poller.poll(ctx.poll_timeout_ms(self.due()))
            ctx.receive(self)
            self.step()
            ctx.heartbeat(self.stats())
        self.close()

    def stats(self) -> dict:
        recorder = {"frames": self.recorder.frames, "dropped": self.recorder.dropped} if self.recorder else None
        return {"buffered_frames": len(self.buffer), "playing": self.playing, "tick": self.tick, **self.counts,
                "recorder": recorder}

    def due(self) -> float:
        """The next deadline (monotonic seconds): sealing the tick on air, or the next tick."""
        tick = self.next_tick_due()
        return min(tick, self.on_air.last_block_due + SEAL_SLACK_S) if self.on_air is not None else tick

    def next_tick_due(self) -> float:
        """When the next tick is due; a frame from now while not playing."""
        return self.t0 + self.tick * self.frame_s if self.playing else time.monotonic() + self.frame_s

    def step(self) -> None:
        """Start the clock once the jitter buffer is full; seal the tick on air once its last
        block has started; present every tick that is due."""
        now = time.monotonic()
        if self.on_air is not None and now >= self.on_air.last_block_due:
            self.seal()
        due = self.next_tick_due()
        if self.playing and 0 < due - now < FINE_WAIT_S:
            time.sleep(due - now)
            now = time.monotonic()
            for msg in self.ctx.system_messages():  # a barge-in that came while we slept cuts on this boundary
                self.ctx.on_system(self, msg)
        if not self.playing and len(self.buffer) >= self.jitter_min:
            self.playing, self.t0, self.tick = True, now, 0
            self.ctx.emit("playback_start", data={"buffered": len(self.buffer)})
            due = self.t0
        if self.playing and now >= due:
            if now - due > MAX_LATE_FRAMES * self.frame_s:
                self.counts["late_slips"] += 1
                self.ctx.emit("clock_slip", "late", data={"tick": self.tick, "behind_ms": round((now - due) * 1000, 1)})
                self.t0 += now - due  # slip the clock: the sinks stay continuous, wall time moves on
                due = now
            self.present(now, due)
            self.tick += 1

    # -- handlers -------------------------------------------------------------------------------
    def on_epoch(self, epoch: int, cause: str, _issued_at_ns: int = 0) -> None:
        if self.ctx.adopt_epoch(epoch, cause):
            air_tick = self.on_air.tick if self.on_air is not None else -1
            cut = self.cut_on_air(time.monotonic())
            # Every block of the speech on air has started: it goes on into the next old frame,
            # whose first block carries the fade under the held picture.
            self.fade_next = cut is None and self.in_speech and bool(self.buffer) and self.buffer[0].kind == "speech"
            dropped = len(self.buffer) - (1 if self.fade_next else 0)
            self.counts["flushed"] += dropped
            for _ in range(dropped):
                self.buffer.pop()
            self.in_speech = False
            self.heard_through, self.last_speech = -1, None
            cut_tick, cut_at = (air_tick, cut) if cut is not None else (self.tick, 0) if self.fade_next else (-1, -1)
            self.ctx.emit("flush", data={"dropped_frames": dropped, "fade_frame": self.fade_next,
                                         "cut_tick": cut_tick, "cut_at": cut_at})
            self.ctx.grant("driver", self.window - len(self.buffer), depth=len(self.buffer), playing=self.playing,
                           position=self.sealed_frame)

    def cut_on_air(self, now: float) -> int | None:
        """Cut the speech on air at the first block that has not started: fade from there, then
        silence; the tick is sealed at once. Returns where the fade starts in the tick's audio,
        or None when nothing was cut (no speech on air, or all of its blocks have started)."""
        air = self.on_air
        if air is None or air.kind != "speech" or air.cut_at >= 0:
            return None
        n = len(air.pcm)
        block = int(max(0.0, now - air.due) * self.sr * self.blocks / n) + 1  # the one playing now, + 1
        if block >= self.blocks:
            self.seal()  # every block has started: the frame plays out whole
            return None
        air.cut_at = block_start(block, n, self.blocks)
        air.pcm = barge_cut(air.pcm, self.sr, air.cut_at)
        self.seal()
        return air.cut_at

    # -- crash recovery (actors.recovery) ------------------------------------------------------
    def on_peer_rejoined(self, recovery: Recovery) -> None:
        """A new driver: it must render from the first frame we do not hold; grant it the rest of our window."""
        if recovery.actor != "driver":
            return
        held = self.buffer[-1].frame_index if self.buffer else self.shown_frame
        frame, chunk, start = held + 1, -1, -1
        speech = self.last_speech
        if speech is not None and not speech.final and speech.provenance is not None:
            chunk, start = speech.provenance.chunk_id, speech.provenance.chunk_start
        skip = frame_start_sample(frame, self.sr, self.fps) - start if chunk >= 0 and start >= 0 else 0
        self.ctx.request(ResumePoint(actor=NAME, pid=self.ctx.incarnation, recovery_id=recovery.recovery_id,
                                     resume_frame=frame, resume_chunk=chunk if start >= 0 else -1,
                                     chunk_start=start, skip_samples=max(0, skip)))
        self.ctx.grant("driver", self.window - len(self.buffer), depth=len(self.buffer), playing=self.playing,
                       reset=True, position=self.sealed_frame)

    def on_av_packet(self, packet: AVPacket) -> None:
        if packet.kind == "speech" and self.playing and self.buffer and self.buffer[-1].kind == "fill":
            # Speech starts: idle frames queued ahead of it are filler, skip them now.
            skipped = 0
            while self.buffer and self.buffer[-1].kind == "fill":
                self.buffer.pop()
                skipped += 1
            self.counts["skipped_fill"] += skipped
            self.ctx.emit("skip_fill", frame=packet.frame_index, utterance_id=packet.utterance_id, data={"frames": skipped})
            self.ctx.grant("driver", skipped, depth=len(self.buffer), playing=True, position=self.sealed_frame)
        self.buffer.append(packet)
        if packet.kind == "speech":
            self.last_speech = packet

    # -- one tick -------------------------------------------------------------------------------
    def present(self, now: float, due: float) -> None:
        """Tick: the next frame goes on air (its picture up, its first audio block out); the
        tick before is sealed first if it is not yet."""
        if self.on_air is not None:
            self.seal()
        packet = self.buffer.popleft() if self.buffer else None
        n = frame_samples(self.tick, self.sr, self.fps)
        cut_at, held = -1, False
        if packet is None:
            pixels, kind, pcm = self.last_pixels, "hold", np.zeros(n, np.int16)
            result = "underflow" if self.in_speech else "warn"
            self.counts["underflows" if self.in_speech else "idle_starved"] += 1
        elif self.fade_next:  # the cut on the boundary: old audio fades from the first sample, the picture holds
            pixels, kind, result = self.last_pixels, packet.kind, "ok"
            pcm, cut_at, held = barge_cut(np.frombuffer(packet.pcm, np.int16), self.sr, 0), 0, True
            self.fade_next = self.in_speech = False
        else:
            pixels, pcm, kind, result = self.draw(packet), np.frombuffer(packet.pcm, np.int16), packet.kind, "ok"
            self.in_speech = packet.kind == "speech" and not packet.final
        self.last_pixels = pixels
        on_air = time.monotonic()
        self.on_air = OnAir(self.tick, due, int(on_air * 1e9), packet, pixels, pcm, kind, result,
                            round((now - due) * 1000, 2), round((on_air - due) * 1000, 2), len(self.buffer),
                            due + block_start(self.blocks - 1, n, self.blocks) / self.sr, cut_at, held)
        if packet is not None:
            self.shown_frame = packet.frame_index
            self.ctx.grant("driver", 1, depth=len(self.buffer), playing=True, position=self.sealed_frame)
            self.tell_heard(packet)
        self.counts["presented"] += 1
        self.counts["speech_presented"] += kind == "speech"  # what the supervisor's progress check watches
        if kind != "speech" or cut_at >= 0:
            self.seal()  # silence or already cut: nothing can change it

    def seal(self) -> None:
        """The tick on air can no longer change: the packet as it played goes to the sinks and
        on the timeline."""
        air, self.on_air = self.on_air, None
        if air.packet is not None:
            self.sealed_frame = air.packet.frame_index
        if self.recorder is not None and not self.recorder.write(air.tick, air.pixels, air.pcm):
            self.ctx.error("present", "recorder_behind", f"recorder queue full; frame {air.tick} not recorded")
        if air.packet is not None:
            # The position goes first, at once: a player killed after its consumers had the frame
            # but before the driver had the position made its replacement show the frame again.
            # ZMQ's one I/O thread writes the small grant before the frame it queued after it.
            self.ctx.grant("driver", 0, depth=len(self.buffer), playing=True, position=self.sealed_frame)
            try:
                send(self.av_out, dataclasses.replace(air.packet, pixels=air.pixels, pcm=air.pcm), flags=zmq.NOBLOCK)
            except zmq.Again:
                pass
        self.report(air)

    def tell_heard(self, packet: AVPacket) -> None:
        """A frame of chunk n shown: every chunk before it has been heard (n itself too at the
        end of an utterance). The parser can let that text go."""
        if packet.kind != "speech" or packet.sequence_id < 0:
            return
        through = packet.sequence_id if packet.final else packet.sequence_id - 1
        if through > self.heard_through:
            self.heard_through = through
            self.ctx.send_to("parser", Heard(epoch=packet.epoch, through_sequence=through))

    def draw(self, packet: AVPacket) -> np.ndarray:
        return self.overlay.draw(np.frombuffer(packet.pixels, np.uint8).reshape(self.height, self.width, 3).copy())

    def report(self, air: OnAir) -> None:
        """Exactly one `present` event per tick, stamped when the tick went on air; a hold
        mid-speech is the underflow itself."""
        packet, pcm = air.packet, air.pcm
        self.ctx.emit("present", air.result, frame=packet.frame_index if packet else -1,
                      utterance_id=packet.utterance_id if packet else -1,
                      chunk_id=packet.sequence_id if packet else -1, epoch=packet.epoch if packet else None,
                      surface="sink", ts_ns=air.started_ns,
                      data={"tick": air.tick, "due_ns": int(air.due * 1e9), "kind": air.kind,
                            "faded": air.cut_at == 0, "cut_at": air.cut_at, "held": air.held,
                            "lateness_ms": air.lateness_ms, "handoff_ms": air.handoff_ms,
                            "depth": air.depth, "final": bool(packet and packet.final),
                            "provenance": packet.provenance.as_dict() if packet and packet.provenance else None,
                            "rms": int(np.sqrt(np.mean(pcm.astype(np.float64) ** 2))) if len(pcm) else 0})
        if packet is not None and packet.final:
            self.ctx.emit("utterance_presented", utterance_id=packet.utterance_id, frame=packet.frame_index,
                          data={"tick": air.tick})

    def close(self) -> None:
        if self.on_air is not None:
            self.seal()
        if self.recorder is not None:
            self.recorder.close()
            record = self.ctx.config["player"]["record"]
            parts, error = recording_parts(record), self.recorder.error
            frames = 0
            try:
                frames = join_recording(parts, record)
                for part in parts:
                    part.unlink()
            except Exception as exc:  # the parts stay on disk: nothing recorded is thrown away
                error = error or exc
            self.ctx.emit("recording_closed", data={"path": record, "frames": frames, "parts": len(parts),
                                                    "dropped": self.recorder.dropped,
                                                    "error": str(error) if error else None})
        self.av_out.close()
