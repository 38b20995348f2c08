"""The control endpoint's wire, and the two clients that speak it (blocking and asyncio).

A REQ client sends one msgpack map ``{"cmd": NAME, ...args}``; the supervisor's ROUTER
answers with one msgpack map ``{"ok": bool, ...}`` (``"error"`` says why when ``ok`` is
false). Both directions are unpacked with the envelope's limits. Every call has a timeout
and uses a fresh socket, so a lost reply never wedges the caller.

Commands that change state (``WRITE_COMMANDS``) carry the control token: a random secret
``personas-supervisor up`` generates and stores, readable by its owner only, in the token file
of its control endpoint (``token_path``). The clients here read that file and add the token
to every call; a peer that cannot read it can still ask for status, never change anything.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

import msgpack
import zmq
import zmq.asyncio

from .envelope import ProtocolError, unpack_header
from .security import secure_client
from .transport import make_socket

#: The longest the supervisor takes to answer a command, a check it runs off its loop (a
#: registry lookup) included; a client waits one second more, so an answer is never lost to
#: a client that gave up just before it came.
ANSWER_WITHIN_S = 4.0
CLIENT_TIMEOUT_MS = int((ANSWER_WITHIN_S + 1.0) * 1000)


#: Commands that change what the system does: refused without the control token.
WRITE_COMMANDS = frozenset({"barge_in", "config_set", "down"})
#: The environment variable that hands the token to the supervisor's children (the gateway
#: uses it for its own calls and its web API), never a command line.
TOKEN_ENV = "PERSONAS_TOKEN"
#: Set to "1" by whoever starts a supervisor that must not outlive it (the session manager).
EXIT_WITH_PARENT_ENV = "PERSONAS_EXIT_WITH_PARENT"
#: Where token files live unless $PERSONAS_STATE_DIR says otherwise.
STATE_DIR = Path("~/.local/state/personas")


def token_path(endpoint: str, state_dir: str | os.PathLike | None = None) -> Path:
    """The token file of the supervisor bound at ``endpoint`` (one per control endpoint, so
    several systems on one machine do not share a secret), under ``state_dir`` (default:
    $PERSONAS_STATE_DIR, else ~/.local/state/personas)."""
    base = Path(state_dir or os.environ.get("PERSONAS_STATE_DIR") or STATE_DIR).expanduser()
    return base / f"control-{re.sub(r'[^A-Za-z0-9.-]+', '_', endpoint)}.token"


def new_token(endpoint: str) -> tuple[str, Path]:
    """A fresh token, written to ``token_path(endpoint)`` with mode 0600 (its directory 0700)."""
    token, path = secrets.token_urlsafe(32), token_path(endpoint)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.unlink(missing_ok=True)  # a file someone else made is not reused
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token)
    return token, path


def read_token(endpoint: str, state_dir: str | os.PathLike | None = None) -> str:
    """The token of the supervisor at ``endpoint`` ("" when this user cannot read it)."""
    try:
        return token_path(endpoint, state_dir).read_text().strip()[:200]
    except OSError:
        return ""


def encode_request(cmd: str, **args) -> bytes:
    return msgpack.packb({"cmd": cmd, **args}, use_bin_type=True)


def encode_reply(reply: dict) -> bytes:
    return msgpack.packb(reply, use_bin_type=True)


def decode(raw: bytes) -> dict:
    """A request or a reply map (ProtocolError if it is not a sane msgpack map)."""
    return unpack_header(raw)


class ControlClient:
    """Blocking client: ``call()`` returns the reply map, or None when nobody answered."""

    def __init__(self, endpoint: str, timeout_ms: int = CLIENT_TIMEOUT_MS, token: str | None = None,
                 curve: dict | None = None):
        self.endpoint = endpoint
        self.timeout_ms = timeout_ms
        self.token = token  # None: read the token file at each call (a supervisor may start later)
        self.curve = curve  # client keys when the endpoint is a CURVE server (protocol.security)
        self.ctx = zmq.Context.instance()

    def call(self, cmd: str, **args) -> dict | None:
        sock = make_socket(self.ctx, zmq.REQ, linger_ms=0)
        try:
            sock.setsockopt(zmq.RCVTIMEO, self.timeout_ms)
            sock.setsockopt(zmq.SNDTIMEO, self.timeout_ms)
            secure_client(sock, self.curve)
            sock.connect(self.endpoint)
            token = self.token if self.token is not None else read_token(self.endpoint)
            sock.send(encode_request(cmd, **args, **({"token": token} if cmd in WRITE_COMMANDS and token else {})))
            return decode(sock.recv())
        except (zmq.Again, ProtocolError):
            return None
        finally:
            sock.close()


class AsyncControlClient:
    """asyncio client for code that runs on an event loop (the web gateway). Calls are
    serialised: one request in flight at a time."""

    def __init__(self, ctx: zmq.asyncio.Context, endpoint: str, timeout_ms: int = CLIENT_TIMEOUT_MS, token: str = "",
                 curve: dict | None = None):
        import asyncio

        self.ctx, self.endpoint, self.timeout_ms, self.token, self.curve = ctx, endpoint, timeout_ms, token, curve
        self._lock = asyncio.Lock()

    async def call(self, cmd: str, **args) -> dict | None:
        async with self._lock:
            sock = make_socket(self.ctx, zmq.REQ, linger_ms=0)
            try:
                secure_client(sock, self.curve)
                sock.connect(self.endpoint)
                await sock.send(encode_request(cmd, **args, **({"token": self.token} if cmd in WRITE_COMMANDS else {})))
                if not await sock.poll(self.timeout_ms):
                    return None
                return decode(await sock.recv())
            except ProtocolError:
                return None
            finally:
                sock.close()
