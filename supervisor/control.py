"""The control endpoint's commands (circus style: one small unit per command) and the
client that speaks to it.

Wire: a REQ client sends one msgpack map ``{"cmd": NAME, ...args}``; the reply is a
msgpack map ``{"ok": bool, ...}`` (``"error"`` says why when ``ok`` is false).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import msgpack
import zmq

from protocol.envelope import ProtocolError, unpack_header
from protocol.transport import make_socket

if TYPE_CHECKING:
    from .arbiter import Arbiter

COMMANDS: dict[str, tuple[str, Callable[["Arbiter", dict], dict]]] = {}


def command(name: str, summary: str):
    def register(fn):
        COMMANDS[name] = (summary, fn)
        return fn

    return register


@command("ping", "liveness check")
def _ping(arbiter: "Arbiter", _args: dict) -> dict:
    return {"state": arbiter.state}


@command("status", "per-actor pid, state, cpu, RSS, queue depths")
def _status(arbiter: "Arbiter", _args: dict) -> dict:
    return arbiter.status()


@command("actors", "each actor's current describe() descriptor (asked for now)")
def _actors(arbiter: "Arbiter", _args: dict) -> dict:
    return {"actors": arbiter.describe_all()}


@command("barge_in", "start a new epoch: every actor drops older work")
def _barge_in(arbiter: "Arbiter", args: dict) -> dict:
    return {"epoch": arbiter.new_epoch(str(args.get("reason", "control barge_in")))}


@command("config_get", "the running configuration, or one section / key")
def _config_get(arbiter: "Arbiter", args: dict) -> dict:
    from actors.config import LIVE_KEYS, get_key

    key = str(args.get("key", ""))
    value = get_key(arbiter.config, key) if key else arbiter.config
    return {"key": key, "value": value, "version": arbiter.config_version, "live_keys": sorted(LIVE_KEYS)}


@command("config_set", "change live keys; applied by each actor at its next safe boundary")
def _config_set(arbiter: "Arbiter", args: dict) -> dict:
    changes = args.get("changes")
    if not isinstance(changes, dict) or not changes:
        raise ValueError("config_set needs a non-empty map 'changes' of section.key -> value")
    return arbiter.set_config(changes)


@command("adapters", "every TTS adapter's capability descriptor")
def _adapters(arbiter: "Arbiter", _args: dict) -> dict:
    tts = arbiter.describe_all().get("tts", {})
    return {"active": tts.get("active"), "fallback": tts.get("fallback"), "adapters": tts.get("adapters", {}),
            "voice": tts.get("voice")}


@command("down", "stop every actor gracefully, then the supervisor")
def _down(arbiter: "Arbiter", args: dict) -> dict:
    arbiter.request_stop(str(args.get("reason", "down")))
    return {"state": "stopping"}


def handle(arbiter: "Arbiter", body: bytes) -> dict:
    try:
        request = unpack_header(body)
    except ProtocolError as exc:
        return {"ok": False, "error": str(exc)}
    name = request.get("cmd")
    if name not in COMMANDS:
        return {"ok": False, "error": f"unknown command {name!r}", "commands": sorted(COMMANDS)}
    try:
        return {"ok": True, **COMMANDS[name][1](arbiter, request)}
    except Exception as exc:  # a failing command must not take the supervisor down
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


class ControlClient:
    """A REQ client with a timeout (a fresh socket per call, so a lost reply never wedges it)."""

    def __init__(self, endpoint: str, timeout_ms: int = 2000):
        self.endpoint = endpoint
        self.timeout_ms = timeout_ms
        self.ctx = zmq.Context.instance()

    def call(self, cmd: str, **args) -> dict | None:
        """The reply map, or None if nobody answered within the timeout."""
        sock = make_socket(self.ctx, zmq.REQ, linger_ms=0)
        sock.setsockopt(zmq.RCVTIMEO, self.timeout_ms)
        sock.setsockopt(zmq.SNDTIMEO, self.timeout_ms)
        try:
            sock.connect(self.endpoint)
            sock.send(msgpack.packb({"cmd": cmd, **args}, use_bin_type=True))
            return unpack_header(sock.recv())
        except (zmq.Again, ProtocolError):
            return None
        finally:
            sock.close()
