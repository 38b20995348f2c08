"""Player actor: the frame buffer and the clock.

The player is a virtual sound card: its clock is CLOCK_MONOTONIC advancing at the
audio rate, and presentation tick ``n`` is due at ``t0 + n/fps``, the moment its
audio starts playing. Each tick presents the next A/V packet -- the frame and the
exact samples under it -- to the sinks (MP4 recording, the ``av_out`` PUB socket).
Playback starts once ``jitter_min_frames`` are buffered. Idle fill queued ahead of
the first speech frame is skipped when that frame arrives (it is filler; the clock
does not stop). An empty buffer at a tick is an underflow: the last frame is held with
silence and the event is on the timeline. A barge-in cuts at the next tick: that tick
carries the next old frame with its audio faded to zero within ``BARGE_FADE_MS`` (no
click), then the buffer is flushed. Credit (frames) goes back to the driver as packets
leave the buffer, with the index of the frame just shown.

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

from .dsp import barge_cut
from .runtime import ActorContext, grants_descriptor
from .sinks import Mp4Recorder, Overlay, join_recording, part_path, recording_parts

NAME = "player"
#: If presentation falls this many frames behind the clock, the clock slips instead of bursting.
MAX_LATE_FRAMES = 3
#: Below this, poll's millisecond timer is too coarse for a sample clock: sleep to the tick.
FINE_WAIT_S = 0.003


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
        self.buffer: deque[AVPacket] = deque()  # bounded by the window granted to the driver
        self.playing = False
        self.t0 = 0.0
        self.tick = 0
        self.last_pixels = np.zeros((self.height, self.width, 3), np.uint8)
        self.in_speech = False  # last presented packet was speech of an unfinished utterance
        self.fade_next = False
        self.shown_frame = -1  # the last frame presented
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
                "sinks": (["mp4:" + cfg["record"]] if self.recorder else []) + ["zmq-pub:" + self.ctx.endpoints["av_out"]],
                "overlay": {"text": cfg["overlay_text"], "logo": cfg["overlay_logo"]},
                "consumes": ["av_packet <- driver"], "produces": ["av_packet -> av_out PUB", "credit -> driver (frames)"],
                "credit": {"grants": grants_descriptor("driver", NAME, self.window)}}

    def run(self) -> None:
        ctx = self.ctx
        poller = ctx.poller()
        ctx.ready(self.describe())
        ctx.start_receiving(lambda: ctx.grant("driver", self.window - len(self.buffer), depth=len(self.buffer),
                                              playing=self.playing, reset=True, position=self.shown_frame))
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
        """When the next tick is due (monotonic seconds); a frame from now while not playing."""
        return self.t0 + self.tick * self.frame_s if self.playing else time.monotonic() + self.frame_s

    def step(self) -> None:
        """Start the clock once the jitter buffer is full; present every tick that is due."""
        due, now = self.due(), time.monotonic()
        if self.playing and 0 < due - now < FINE_WAIT_S:
            time.sleep(due - now)
            now = time.monotonic()
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
            self.fade_next = bool(self.buffer) and self.buffer[0].kind == "speech"
            dropped = len(self.buffer) - (1 if self.fade_next else 0)
            self.counts["flushed"] += dropped
            for _ in range(dropped):
                self.buffer.pop()
            self.in_speech = False
            self.heard_through, self.last_speech = -1, None
            self.ctx.emit("flush", data={"dropped_frames": dropped, "fade_frame": self.fade_next})
            self.ctx.grant("driver", self.window - len(self.buffer), depth=len(self.buffer), playing=self.playing,
                           position=self.shown_frame)

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
                       reset=True, position=self.shown_frame)

    def on_av_packet(self, packet: AVPacket) -> None:
        if packet.kind == "speech" and self.playing and self.buffer and self.buffer[-1].kind == "fill":
            # Speech starts: idle frames queued ahead of it are filler, skip them now.
            skipped = 0
            while self.buffer and self.buffer[-1].kind == "fill":
                self.buffer.pop()
                skipped += 1
            self.counts["skipped_fill"] += skipped
            self.ctx.emit("skip_fill", frame=packet.frame_index, utterance_id=packet.utterance_id, data={"frames": skipped})
            self.ctx.grant("driver", skipped, depth=len(self.buffer), playing=True, position=self.shown_frame)
        self.buffer.append(packet)
        if packet.kind == "speech":
            self.last_speech = packet

    # -- one tick -------------------------------------------------------------------------------
    def present(self, now: float, due: float) -> None:
        packet = self.buffer.popleft() if self.buffer else None
        faded = packet is not None and self.fade_next
        if packet is None:
            pixels, kind = self.last_pixels, "hold"
            pcm = np.zeros(frame_samples(self.tick, self.sr, self.fps), np.int16)
            self.counts["underflows" if self.in_speech else "idle_starved"] += 1
        else:
            pixels, pcm, kind = self.draw(packet), np.frombuffer(packet.pcm, np.int16), packet.kind
            if faded:  # the cut: old audio faded out inside this one frame
                pcm = barge_cut(pcm, self.sr)
                self.fade_next = self.in_speech = False
            else:
                self.in_speech = packet.kind == "speech" and not packet.final
            self.last_pixels = pixels
        if self.recorder is not None and not self.recorder.write(self.tick, pixels, pcm):
            self.ctx.error("present", "recorder_behind", f"recorder queue full; frame {self.tick} not recorded")
        if packet is not None:
            try:
                send(self.av_out, dataclasses.replace(packet, pixels=pixels, pcm=pcm), flags=zmq.NOBLOCK)
            except zmq.Again:
                pass
        handed_off = time.monotonic()  # the frame has left for every sink
        if packet is not None:
            self.shown_frame = packet.frame_index
            self.ctx.grant("driver", 1, depth=len(self.buffer), playing=True, position=self.shown_frame)
            self.tell_heard(packet)
        self.counts["presented"] += 1
        self.counts["speech_presented"] += kind == "speech"  # what the supervisor's progress check watches
        self.report(packet, kind, pcm, faded, now, due, handed_off)

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

    def report(self, packet: AVPacket | None, kind: str, pcm: np.ndarray, faded: bool, now: float, due: float,
               handed_off: float) -> None:
        """Exactly one `present` event per tick; a hold mid-speech is the underflow itself."""
        result = "ok" if packet is not None else ("underflow" if self.in_speech else "warn")
        self.ctx.emit("present", result, frame=packet.frame_index if packet else -1,
                      utterance_id=packet.utterance_id if packet else -1,
                      chunk_id=packet.sequence_id if packet else -1, epoch=packet.epoch if packet else None,
                      surface="sink",
                      data={"tick": self.tick, "due_ns": int(due * 1e9), "kind": kind, "faded": faded,
                            "lateness_ms": round((now - due) * 1000, 2), "handoff_ms": round((handed_off - due) * 1000, 2),
                            "depth": len(self.buffer), "final": bool(packet and packet.final),
                            "provenance": packet.provenance.as_dict() if packet and packet.provenance else None,
                            "rms": int(np.sqrt(np.mean(pcm.astype(np.float64) ** 2))) if len(pcm) else 0})
        if packet is not None and packet.final:
            self.ctx.emit("utterance_presented", utterance_id=packet.utterance_id, frame=packet.frame_index,
                          data={"tick": self.tick})

    def close(self) -> None:
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
