"""Player actor: the frame buffer and the clock (seed 000 "Frame Buffer & Playback").

The player is a virtual sound card: its clock is CLOCK_MONOTONIC advancing at the
audio rate, and presentation tick ``n`` is due at ``t0 + n/fps``, the moment its
audio starts playing. Each tick presents the next A/V packet -- the frame and the
exact samples under it -- to the sinks (MP4 recording, the ``av_out`` PUB socket).
Playback starts once ``jitter_min_frames`` are buffered. Idle fill queued ahead of
the first speech frame is skipped when that frame arrives (it is filler; the clock
does not stop). An empty buffer at a tick is
an underflow: the last frame is held with silence and the event is on the timeline.
A barge-in cuts at the next tick: that tick carries the next old frame with its audio
faded to zero within ``BARGE_FADE_MS`` (no click), then the buffer is flushed.
Credit (frames) goes back to the driver as packets leave the buffer.
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque

import numpy as np
import zmq

from protocol import AVPacket, frame_start_sample
from protocol.transport import send

from .runtime import ActorContext
from .sinks import Mp4Recorder, Overlay

NAME = "player"
BARGE_FADE_MS = 5
#: If presentation falls this many frames behind the clock, the clock slips instead of bursting.
MAX_LATE_FRAMES = 3


def run(ctx: ActorContext) -> None:
    media, flow, cfg = ctx.config["media"], ctx.config["flow"], ctx.config["player"]
    fps, sr = int(media["fps"]), int(media["sample_rate"])
    width, height = int(media["width"]), int(media["height"])
    window, jitter_min = int(flow["player_window_frames"]), int(flow["jitter_min_frames"])
    overlay = Overlay(width, height, cfg["overlay_text"], cfg["overlay_logo"])
    recorder = Mp4Recorder(cfg["record"], width, height, fps, sr) if cfg["record"] else None
    av_out = ctx.socket(zmq.PUB, hwm=2 * fps)
    av_out.bind(ctx.endpoints["av_out"])
    frame_s = 1.0 / fps
    buffer: deque[AVPacket] = deque()  # bounded by the window granted to the driver
    playing = False
    t0 = 0.0
    tick = 0
    last_pixels = np.zeros((height, width, 3), np.uint8)
    in_speech = False  # last presented packet was speech of an unfinished utterance
    fade_next = False
    stats = {"presented": 0, "underflows": 0, "idle_starved": 0, "dropped_stale": 0, "late_slips": 0, "skipped_fill": 0}

    def start_epoch(epoch: int, cause: str, _issued_at_ns: int = 0) -> None:
        nonlocal fade_next, in_speech
        if ctx.adopt_epoch(epoch, cause):
            fade_next = bool(buffer) and buffer[0].kind == "speech"
            dropped = len(buffer) - (1 if fade_next else 0)
            stats["dropped_stale"] += dropped
            for _ in range(dropped):
                buffer.pop()
            in_speech = False
            ctx.emit("flush", data={"dropped_frames": dropped, "fade_frame": fade_next})
            ctx.grant("driver", "driver->player", window - len(buffer), "frames", depth=len(buffer), playing=playing)

    def present(now: float, due: float) -> None:
        nonlocal last_pixels, in_speech, fade_next
        spf = frame_start_sample(tick + 1, sr, fps) - frame_start_sample(tick, sr, fps)
        packet = buffer.popleft() if buffer else None
        faded = False
        if packet is None:
            pixels, pcm = last_pixels, np.zeros(spf, np.int16)
            kind = "hold"
            if in_speech:
                stats["underflows"] += 1
            else:
                stats["idle_starved"] += 1
        else:
            pixels = overlay.draw(np.frombuffer(packet.pixels, np.uint8).reshape(height, width, 3).copy())
            pcm = np.frombuffer(packet.pcm, np.int16)
            faded = fade_next
            if fade_next:  # the cut: old audio faded out inside this one frame
                pcm = fade_out(pcm, BARGE_FADE_MS * sr // 1000)
                fade_next = False
                in_speech = False
            else:
                in_speech = packet.kind == "speech" and not packet.final
            kind = packet.kind
            last_pixels = pixels
        if recorder is not None and not recorder.write(tick, pixels, pcm):
            ctx.error("present", "recorder_behind", f"recorder queue full; frame {tick} not recorded")
        if packet is not None:
            try:
                send(av_out, dataclasses.replace(packet, pixels=pixels, pcm=pcm), flags=zmq.NOBLOCK)
            except zmq.Again:
                pass
        handed_off = time.monotonic()  # the frame has left for every sink
        if packet is not None:
            ctx.grant("driver", "driver->player", 1, "frames", depth=len(buffer), playing=True)
        stats["presented"] += 1
        # Exactly one `present` event per tick; a hold mid-speech is the underflow itself.
        ctx.emit("present", "ok" if packet is not None else ("underflow" if kind == "hold" and in_speech else "warn"),
                 frame=packet.frame_index if packet else -1,
                 utterance_id=packet.utterance_id if packet else -1,
                 chunk_id=packet.sequence_id if packet else -1,
                 epoch=packet.epoch if packet else None,
                 surface="sink",
                 data={"tick": tick, "due_ns": int(due * 1e9), "kind": kind, "faded": faded,
                       "lateness_ms": round((now - due) * 1000, 2),
                       "handoff_ms": round((handed_off - due) * 1000, 2), "depth": len(buffer),
                       "final": bool(packet and packet.final), "provenance": packet.provenance if packet else None,
                       "rms": int(np.sqrt(np.mean(pcm.astype(np.float64) ** 2))) if len(pcm) else 0})
        if packet is not None and packet.final:
            ctx.emit("utterance_presented", utterance_id=packet.utterance_id, frame=packet.frame_index,
                     data={"tick": tick})

    poller = zmq.Poller()
    poller.register(ctx.system, zmq.POLLIN)
    poller.register(ctx.inbox, zmq.POLLIN)
    ctx.ready({"actor": NAME, "clock": "monotonic, advancing at the audio rate (virtual sound card)",
               "jitter_min_frames": jitter_min, "window_frames": window, "scheduling": ctx.scheduling,
               "sinks": (["mp4:" + cfg["record"]] if recorder else []) + ["zmq-pub:" + ctx.endpoints["av_out"]],
               "overlay": {"text": cfg["overlay_text"], "logo": cfg["overlay_logo"]},
               "consumes": ["av_packet <- driver"], "produces": ["av_packet -> av_out PUB", "credit -> driver (frames)"],
               "credit": {"grants": {"link": "driver->player", "unit": "frames", "window": window}}})
    ctx.grant("driver", "driver->player", window, "frames", depth=0, playing=False)

    while ctx.running:
        due = t0 + tick * frame_s if playing else time.monotonic() + frame_s
        poller.poll(ctx.poll_timeout_ms(due))
        ctx.handle_system(start_epoch)
        for msg in ctx.drain(ctx.inbox):
            if isinstance(msg, AVPacket):
                if msg.epoch > ctx.epoch:
                    start_epoch(msg.epoch, "av_packet from newer epoch")
                if msg.epoch < ctx.epoch:
                    stats["dropped_stale"] += 1
                    continue
                if msg.kind == "speech" and playing and buffer and buffer[-1].kind == "fill":
                    # Speech starts: idle frames queued ahead of it are filler, skip them now.
                    skipped = 0
                    while buffer and buffer[-1].kind == "fill":
                        buffer.pop()
                        skipped += 1
                    stats["skipped_fill"] += skipped
                    ctx.emit("skip_fill", frame=msg.frame_index, utterance_id=msg.utterance_id, data={"frames": skipped})
                    ctx.grant("driver", "driver->player", skipped, "frames", depth=len(buffer), playing=True)
                buffer.append(msg)
        now = time.monotonic()
        if playing and 0 < due - now < 0.003:
            time.sleep(due - now)  # poll's millisecond timer is too coarse for a sample clock
            now = time.monotonic()
        if not playing and len(buffer) >= jitter_min:
            playing, t0, tick = True, now, 0
            ctx.emit("playback_start", data={"buffered": len(buffer)})
            due = t0
        if playing and now >= due:
            if now - due > MAX_LATE_FRAMES * frame_s:
                stats["late_slips"] += 1
                ctx.emit("clock_slip", "late", data={"tick": tick, "behind_ms": round((now - due) * 1000, 1)})
                t0 += now - due  # slip the clock: the sinks stay continuous, wall time moves on
                due = now
            present(now, due)
            tick += 1
        ctx.heartbeat({"buffered_frames": len(buffer), "playing": playing, "tick": tick, **stats,
                       "recorder": {"frames": recorder.frames, "dropped": recorder.dropped} if recorder else None})
    if recorder is not None:
        recorder.close()
        ctx.emit("recording_closed", data={"path": cfg["record"], "frames": recorder.frames, "dropped": recorder.dropped,
                                           "error": str(recorder.error) if recorder.error else None})
    av_out.close()


def fade_out(pcm: np.ndarray, n: int) -> np.ndarray:
    """Raised-cosine fade to zero over the first ``n`` samples, silence after."""
    out = np.zeros_like(pcm)
    n = min(n, len(pcm))
    ramp = 0.5 + 0.5 * np.cos(np.linspace(0.0, np.pi, n))
    out[:n] = (pcm[:n].astype(np.float32) * ramp).astype(np.int16)
    return out
