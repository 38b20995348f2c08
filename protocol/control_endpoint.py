"""The control endpoint's wire, and the two clients that speak it (blocking and asyncio).

A REQ client sends one msgpack map ``{"cmd": NAME, ...args}``; the supervisor's ROUTER
answers with one msgpack map ``{"ok": bool, ...}`` (``"error"`` says why when ``ok`` is
false). Both directions are unpacked with the envelope's limits. Every call has a timeout
and uses a fresh socket, so a lost reply never wedges the caller.
"""

from __future__ import annotations

import msgpack
import zmq
import zmq.asyncio

from .envelope import ProtocolError, unpack_header
from .transport import make_socket

#: The longest the supervisor takes to answer a command, a check it runs off its loop (a
#: registry lookup) included; a client waits one second more, so an answer is never lost to
#: a client that gave up just before it came.
ANSWER_WITHIN_S = 4.0
CLIENT_TIMEOUT_MS = int((ANSWER_WITHIN_S + 1.0) * 1000)


def encode_request(cmd: str, **args) -> bytes:
    return msgpack.packb({"cmd": cmd, **args}, use_bin_type=True)


def encode_reply(reply: dict) -> bytes:
    return msgpack.packb(reply, use_bin_type=True)


def decode(raw: bytes) -> dict:
    """A request or a reply map (ProtocolError if it is not a sane msgpack map)."""
    return unpack_header(raw)


class ControlClient:
    """Blocking client: ``call()`` returns the reply map, or None when nobody answered."""

    def __init__(self, endpoint: str, timeout_ms: int = CLIENT_TIMEOUT_MS):
        self.endpoint = endpoint
        self.timeout_ms = timeout_ms
        self.ctx = zmq.Context.instance()

    def call(self, cmd: str, **args) -> dict | None:
        sock = make_socket(self.ctx, zmq.REQ, linger_ms=0)
        try:
            sock.setsockopt(zmq.RCVTIMEO, self.timeout_ms)
            sock.setsockopt(zmq.SNDTIMEO, self.timeout_ms)
            sock.connect(self.endpoint)
            sock.send(encode_request(cmd, **args))
            return decode(sock.recv())
        except (zmq.Again, ProtocolError):
            return None
        finally:
            sock.close()


class AsyncControlClient:
    """asyncio client for code that runs on an event loop (the web gateway). Calls are
    serialised: one request in flight at a time."""

    def __init__(self, ctx: zmq.asyncio.Context, endpoint: str, timeout_ms: int = CLIENT_TIMEOUT_MS):
        import asyncio

        self.ctx, self.endpoint, self.timeout_ms = ctx, endpoint, timeout_ms
        self._lock = asyncio.Lock()

    async def call(self, cmd: str, **args) -> dict | None:
        async with self._lock:
            sock = make_socket(self.ctx, zmq.REQ, linger_ms=0)
            try:
                sock.connect(self.endpoint)
                await sock.send(encode_request(cmd, **args))
                if not await sock.poll(self.timeout_ms):
                    return None
                return decode(await sock.recv())
            except ProtocolError:
                return None
            finally:
                sock.close()
