"""Socket construction with the limits every socket must carry."""

from __future__ import annotations

import socket

import zmq

from .envelope import Message, decode, encode
from .limits import SOCKET_MAX_BYTES


#: A subscriber retries a lost publisher this often (ZMQ's default is 100 ms): a restarted
#: player presents ~0.1 s after it binds av_out, and what it publishes before a consumer is
#: back is lost to that consumer.
SUBSCRIBER_RECONNECT_MS = 10


def make_socket(
    context: zmq.Context,
    kind: int,
    *,
    max_bytes: int = SOCKET_MAX_BYTES,
    hwm: int = 1000,
    linger_ms: int = 200,
    kernel_buffer: int = 0,
) -> zmq.Socket:
    """A socket with ZMQ_MAXMSGSIZE, bounded high-water marks and bounded LINGER (and, when
    ``kernel_buffer`` is given, that SO_SNDBUF / SO_RCVBUF per connection).

    HWMs are a safety net behind credit-based flow control, never the mechanism.
    """
    sock = context.socket(kind)
    if kernel_buffer:
        sock.setsockopt(zmq.SNDBUF, kernel_buffer)
        sock.setsockopt(zmq.RCVBUF, kernel_buffer)
    sock.setsockopt(zmq.MAXMSGSIZE, max_bytes)
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.RCVHWM, hwm)
    sock.setsockopt(zmq.LINGER, linger_ms)
    if kind == zmq.SUB:
        sock.setsockopt(zmq.RECONNECT_IVL, SUBSCRIBER_RECONNECT_MS)
    return sock


def send(sock: zmq.Socket, msg: Message, *, flags: int = 0) -> None:
    """Send a message; payload frames go zero-copy when they are large."""
    frames = encode(msg)
    sock.send_multipart(frames, flags=flags, copy=not msg.PAYLOADS)


def recv(sock: zmq.Socket, *, flags: int = 0) -> Message:
    """Receive and decode one message (raises ProtocolError for bad input)."""
    return decode(sock.recv_multipart(flags=flags, copy=False))


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct ports on ``host`` that were free a moment ago (held open together)."""
    sockets, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind((host, 0))
        sockets.append(s)
        ports.append(s.getsockname()[1])
    for s in sockets:
        s.close()
    return ports
