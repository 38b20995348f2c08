"""The control endpoint's commands, circus style: one small unit per command.

Wire (``protocol.control_endpoint``): a REQ client sends ``{"cmd": NAME, ...args}`` and
gets ``{"ok": bool, ...}`` back (``"error"`` says why when ``ok`` is false). A command
that needs every actor's current descriptor returns a :class:`Pending` reply instead of
waiting: the supervisor's loop sends it when the actors' Infos are in or the wait is
over, so no command ever blocks that loop.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Callable, Protocol

from protocol.config import LIVE_KEYS, get_key
from protocol.control_endpoint import WRITE_COMMANDS, decode
from protocol.envelope import ProtocolError, brief
from protocol.ingress import turn_of


@dataclass
class Pending:
    """A reply built from fresh descriptors: ``build(descriptors)`` once they are in."""

    build: Callable[[dict], dict]


@dataclass
class Later:
    """A reply that needs a check that may take a while (a registry lookup): ``check()`` runs
    off the loop and returns "" or the refusal; ``then()`` runs on the loop if it passed."""

    check: Callable[[], str]
    then: Callable[[], dict]


@dataclass
class AtStop:
    """A reply sent once every actor has exited: ``build()`` then (what was left unspoken)."""

    build: Callable[[], dict]


Reply = dict | Pending | Later | AtStop


class Supervised(Protocol):
    """What the commands need from the supervisor (the arbiter provides it)."""

    state: str
    config: dict
    config_version: int
    token: str

    def status(self) -> dict: ...
    def new_epoch(self, reason: str, turn: int = ...) -> int: ...
    def set_config(self, items: dict) -> dict | Later: ...
    def request_stop(self, reason: str) -> None: ...
    def refused(self, cmd: str, why: str) -> None: ...
    def stop_report(self) -> dict: ...


COMMANDS: dict[str, tuple[str, Callable[[Supervised, dict], Reply]]] = {}


def command(name: str, summary: str):
    def register(fn):
        COMMANDS[name] = (summary, fn)
        return fn

    return register


@command("ping", "liveness check")
def ping(supervisor: Supervised, _args: dict) -> Reply:
    return {"state": supervisor.state}


@command("status", "per-actor pid, state, cpu, RSS, queue depths")
def status(supervisor: Supervised, _args: dict) -> Reply:
    return supervisor.status()


@command("actors", "each actor's current describe() descriptor (asked for now)")
def actors(_supervisor: Supervised, _args: dict) -> Reply:
    return Pending(lambda descriptors: {"actors": descriptors})


@command("barge_in", "start a new epoch: every actor drops older work (and the sender's tokens of `turn`)")
def barge_in(supervisor: Supervised, args: dict) -> Reply:
    try:
        turn = turn_of(args.get("turn"))
    except ProtocolError as exc:
        return {"ok": False, "error": exc.detail}
    return {"epoch": supervisor.new_epoch(str(args.get("reason", "control barge_in")), turn), "turn": turn}


@command("config_get", "the running configuration, or one section / key")
def config_get(supervisor: Supervised, args: dict) -> Reply:
    key = str(args.get("key", ""))
    value = get_key(supervisor.config, key) if key else supervisor.config
    return {"key": key, "value": value, "version": supervisor.config_version, "live_keys": sorted(LIVE_KEYS)}


@command("config_set", "change live keys; applied by each actor at its next safe boundary")
def config_set(supervisor: Supervised, args: dict) -> Reply:
    changes = args.get("changes")
    if not isinstance(changes, dict) or not changes:
        raise ValueError("config_set needs a non-empty map 'changes' of section.key -> value")
    return supervisor.set_config(changes)


@command("adapters", "every TTS adapter's capability descriptor")
def adapters(_supervisor: Supervised, _args: dict) -> Reply:
    def build(descriptors: dict) -> dict:
        tts = descriptors.get("tts", {})
        return {"active": tts.get("active"), "fallback": tts.get("fallback"), "adapters": tts.get("adapters", {}),
                "voice": tts.get("voice")}

    return Pending(build)


@command("down", "stop every actor gracefully, then the supervisor (`wait`: answer once all have exited, "
                 "with the text that will not be spoken)")
def down(supervisor: Supervised, args: dict) -> Reply:
    supervisor.request_stop(str(args.get("reason", "down")))
    if args.get("wait") is True:
        return AtStop(lambda: {"ok": True, "state": "stopped", **supervisor.stop_report()})
    return {"state": "stopping"}


def handle(supervisor: Supervised, body: bytes) -> Reply:
    """One request: a reply map now, or a Pending one."""
    try:
        request = decode(body)
    except ProtocolError as exc:
        return {"ok": False, "error": str(exc)}
    name = request.get("cmd") if isinstance(request, dict) else None
    if not isinstance(name, str) or name not in COMMANDS:
        return {"ok": False, "error": f"unknown command {brief(name)}", "commands": sorted(COMMANDS)}
    if name in WRITE_COMMANDS and not hmac.compare_digest(str(request.get("token", "")).encode(), supervisor.token.encode()):
        why = "a wrong control token" if request.get("token") else "no control token"
        supervisor.refused(name, why)
        return {"ok": False, "error": f"unauthorized: {name} needs the control token "
                                      "(in the token file `personas-supervisor up` printed, readable by its user only)"}
    try:
        reply = COMMANDS[name][1](supervisor, request)
    except Exception as exc:  # a failing command must not take the supervisor down
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return reply if isinstance(reply, (Pending, Later, AtStop)) else {"ok": True, **reply}


def finish_later(later: Later) -> dict:
    try:
        return {"ok": True, **later.then()}
    except Exception as exc:  # same rule as handle(): an error reply, never a crash
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


def finish(pending: Pending, descriptors: dict) -> dict:
    try:
        return {"ok": True, **pending.build(descriptors)}
    except Exception as exc:  # same rule as handle(): an error reply, never a crash
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
