"""Feed tokens to the ingress like an LLM does (any program can; this is ours)."""

from __future__ import annotations

import time
from typing import Iterable

import msgpack
import zmq

from protocol import tokenize_like_llm
from protocol.limits import INGRESS_KERNEL_BUFFER_BYTES, INGRESS_QUEUE_MESSAGES
from protocol.security import secure_client
from protocol.transport import make_socket

__all__ = ["Feeder", "tokenize_like_llm"]


class Feeder:
    """PUSH tokens to the parser's ingress. Blocks when the pipeline applies backpressure."""

    def __init__(self, endpoint: str, ctx: zmq.Context | None = None, curve: dict | None = None):
        self.ctx = ctx or zmq.Context.instance()
        self.sock = secure_client(make_socket(self.ctx, zmq.PUSH, hwm=INGRESS_QUEUE_MESSAGES, linger_ms=5000,
                                              kernel_buffer=INGRESS_KERNEL_BUFFER_BYTES), curve)
        self.sock.connect(endpoint)

    def token(self, text: str, turn: int | None = None) -> None:
        if turn is None:
            self.sock.send(text.encode("utf-8"))
        else:
            self.control("token", text=text, turn=turn)

    def raw(self, frame: bytes) -> None:
        self.sock.send(frame)

    def control(self, kind: str, **fields) -> None:
        self.sock.send(msgpack.packb({"type": kind, **fields}, use_bin_type=True))

    def feed(self, tokens: Iterable[str], rate: float = 0.0, end: bool = True, turn: int | None = None) -> int:
        """Send tokens at ``rate`` tokens/s (0 = as fast as the pipeline takes them), as
        ``turn`` when given (a barge-in of that turn drops what is still in flight)."""
        count = 0
        start = time.monotonic()
        for token in tokens:
            if rate > 0:
                delay = start + count / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            self.token(token, turn)
            count += 1
        if end:
            self.control("end", **({} if turn is None else {"turn": turn}))
        return count

    def close(self) -> None:
        self.sock.close()
