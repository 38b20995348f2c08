"""Helpers for the benchmarks: read a recording's A/V timing, time frame hops."""

from __future__ import annotations

import os
import tempfile
import time

import numpy as np
import zmq

from clients.ports import free_ports
from protocol import AVPacket
from protocol.transport import make_socket, recv, send


def av_skew(path) -> dict:
    import av

    with av.open(str(path)) as container:
        v, a = container.streams.video[0], container.streams.audio[0]
        v_start = float((v.start_time or 0) * v.time_base)
        a_start = float((a.start_time or 0) * a.time_base)
        v_dur = float(v.duration * v.time_base)
        a_dur = float(a.duration * a.time_base)
    return {"start_skew_ms": round((a_start - v_start) * 1000, 2), "duration_difference_ms": round((a_dur - v_dur) * 1000, 2),
            "video_s": round(v_dur, 3), "audio_s": round(a_dur, 3)}


def _packet(k: int) -> AVPacket:
    return AVPacket(epoch=0, frame_index=k, sample_rate=22050, fps=25, width=256, height=256, kind="speech",
                    pixels=np.random.default_rng(k).integers(0, 255, 256 * 256 * 3, dtype=np.uint8).tobytes(),
                    pcm=bytes(882 * 2))


def hop_receiver(endpoints: tuple[str, str], ready) -> None:  # pragma: no cover - child process
    ctx = zmq.Context()
    inbox = make_socket(ctx, zmq.PULL)
    inbox.bind(endpoints[0])
    back = make_socket(ctx, zmq.PUSH)
    back.connect(endpoints[1])
    ready.set()
    while True:
        send(back, recv(inbox))


def hop_round_trips(endpoints: tuple[str, str], n: int) -> list[float]:
    ctx = zmq.Context()
    out = make_socket(ctx, zmq.PUSH)
    out.connect(endpoints[0])
    inbox = make_socket(ctx, zmq.PULL)
    inbox.bind(endpoints[1])
    packets = [_packet(k) for k in range(8)]
    times = []
    for i in range(n + 20):
        t = time.perf_counter_ns()
        send(out, packets[i % 8])
        msg = recv(inbox)
        assert isinstance(msg, AVPacket) and len(msg.pixels) == 256 * 256 * 3
        if i >= 20:  # warm-up excluded
            times.append((time.perf_counter_ns() - t) / 1000)
    out.close()
    inbox.close()
    ctx.term()
    return times


def free_endpoints(transport: str) -> tuple[str, str]:
    if transport == "ipc":
        base = tempfile.mkdtemp(prefix="personas-hop-")
        return f"ipc://{os.path.join(base, 'a')}", f"ipc://{os.path.join(base, 'b')}"
    a, b = free_ports(2)
    return f"tcp://127.0.0.1:{a}", f"tcp://127.0.0.1:{b}"

