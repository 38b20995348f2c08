"""Capture what the player presents (its av_out PUB socket), losslessly, in a thread."""

from __future__ import annotations

import threading
import time

import numpy as np
import zmq

from protocol import AVPacket, decode
from protocol.security import secure_client
from protocol.transport import make_socket


class AVCollector:
    """Subscribes to the player's av_out PUB in a thread and keeps every packet it publishes.
    With ``idle_pixels=False`` idle/fill frames keep their audio but drop their pixels, so a
    long session stays modest in memory."""

    def __init__(self, endpoint: str, idle_pixels: bool = True, curve: dict | None = None):
        self.packets: list[AVPacket] = []
        self.arrivals: list[float] = []  # time.monotonic() at which each packet arrived
        self._idle_pixels = idle_pixels
        self._stop = threading.Event()
        self._arrived = threading.Condition()
        self._ctx = zmq.Context()
        self._sock = secure_client(make_socket(self._ctx, zmq.SUB, hwm=1_000_000, linger_ms=0), curve)
        self._sock.setsockopt(zmq.SUBSCRIBE, b"")
        self._monitor = self._sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        self._sock.connect(endpoint)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._sock.poll(100):
                msg = decode(self._sock.recv_multipart())
                if isinstance(msg, AVPacket):
                    if not self._idle_pixels and msg.kind != "speech":
                        msg = AVPacket(**{**msg.__dict__, "pixels": b""})
                    with self._arrived:
                        self.packets.append(msg)
                        self.arrivals.append(time.monotonic())
                        self._arrived.notify_all()

    def wait_connected(self, timeout: float) -> bool:
        """True once the player's PUB socket has accepted our connection (the ZMTP handshake is
        done, our subscription follows at once), or a packet has arrived."""
        if self.packets or self._monitor.poll(int(timeout * 1000)):
            return True
        return bool(self.packets)

    def wait_for(self, predicate, timeout: float) -> AVPacket | None:
        """The first captured packet matching ``predicate``, waiting up to ``timeout`` s."""
        deadline = time.monotonic() + timeout
        index = 0
        with self._arrived:
            while True:
                for packet in self.packets[index:]:
                    if predicate(packet):
                        return packet
                index = len(self.packets)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._arrived.wait(min(remaining, 0.2))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sock.disable_monitor()
        self._monitor.close()
        self._sock.close()
        self._ctx.term()

    def speech(self, utterance_id: int, epoch: int) -> list[AVPacket]:
        return sorted((p for p in self.packets if p.kind == "speech" and p.utterance_id == utterance_id and p.epoch == epoch),
                      key=lambda p: p.frame_index)

    def audio(self) -> np.ndarray:
        """Everything heard, in presentation order, as int16 PCM."""
        return np.concatenate([np.frombuffer(p.pcm, np.int16) for p in self.packets]) if self.packets else np.zeros(0, np.int16)

    @staticmethod
    def image(packet: AVPacket) -> np.ndarray:
        return np.frombuffer(packet.pixels, np.uint8).reshape(packet.height, packet.width, 3)
