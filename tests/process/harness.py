"""Run ONE real actor process on real sockets, play its neighbours from the test, and
collect what it emits (the process tier; ``actors.testing`` is the in-process one).

The harness binds what the supervisor and the neighbouring actors would bind: the
system PUB, the health PULL, the timeline (a SUB at ``timeline_in``) and an inbox PULL
for every peer. Tests send scripted messages to the actor's inbox and read the peers'.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import zmq

from protocol import Describe, Info, Message, Ready, TimelineEvent, decode
from protocol.config import ENV_VAR, load_config
from protocol.names import ACTOR_NAMES
from protocol.transport import make_socket, send


class ActorHarness:
    def __init__(self, name: str, config_path: Path, epoch: int = 0):
        self.name = name
        self.config = load_config(config_path)
        self.endpoints = self.config["endpoints"]
        self.ctx = zmq.Context()
        sock = lambda kind: make_socket(self.ctx, kind, hwm=100_000, linger_ms=0)
        self.system = sock(zmq.PUB)
        self.system.bind(self.endpoints["system"])
        self.health = sock(zmq.PULL)
        self.health.bind(self.endpoints["health"])
        self.timeline_sock = sock(zmq.SUB)
        self.timeline_sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.timeline_sock.bind(self.endpoints["timeline_in"])
        self.peer_inboxes = {}
        for peer in ACTOR_NAMES:
            if peer != name:
                inbox = sock(zmq.PULL)
                inbox.bind(self.endpoints[peer])
                self.peer_inboxes[peer] = inbox
        self.to_actor = sock(zmq.PUSH)
        self.to_actor.connect(self.endpoints[name])
        env = dict(os.environ, **{ENV_VAR: json.dumps(self.config), "PERSONAS_EPOCH": str(epoch)})
        self.proc = subprocess.Popen([sys.executable, "-m", "actors", name], env=env)
        self.events: list[dict] = []
        self.received: dict[str, list[Message]] = {peer: [] for peer in self.peer_inboxes}
        try:
            self.info = self._wait_ready()
            self._wait_subscribed()
        except BaseException:
            self.close()
            raise

    def _wait_ready(self, timeout: float = 120.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} before READY")
            if self.health.poll(100):
                msg = decode(self.health.recv_multipart())
                if isinstance(msg, Ready):
                    return msg.info
        raise RuntimeError(f"{self.name} not ready after {timeout}s")

    def _wait_subscribed(self, timeout: float = 30.0) -> None:
        """Until the actor answers a Describe on the system channel: from then on it hears
        every broadcast (a PUB drops what it sends before the subscription is in)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            send(self.system, Describe(request_id=1))
            if self.health.poll(100):
                if isinstance(decode(self.health.recv_multipart()), Info):
                    return
        raise RuntimeError(f"{self.name} never answered on the system channel")

    def send(self, msg: Message) -> None:
        send(self.to_actor, msg)

    def broadcast(self, msg: Message) -> None:
        send(self.system, msg)

    def pump(self, seconds: float) -> None:
        """Collect everything the actor emits for ``seconds``."""
        deadline = time.monotonic() + seconds
        socks = [self.timeline_sock, self.health, *self.peer_inboxes.values()]
        poller = zmq.Poller()
        for s in socks:
            poller.register(s, zmq.POLLIN)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            for s, _ in poller.poll(max(1, int(remaining * 1000))):
                while True:
                    try:
                        frames = s.recv_multipart(flags=zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    msg = decode(frames)
                    if s is self.timeline_sock and isinstance(msg, TimelineEvent):
                        self.events.append(msg.as_record())
                    elif s is not self.health:
                        peer = next(p for p, inbox in self.peer_inboxes.items() if inbox is s)
                        self.received[peer].append(_detach(msg))

    def pump_until(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pump(0.05)
            if predicate():
                return True
        return False

    def events_of(self, stage: str, result: str | None = None) -> list[dict]:
        return [e for e in self.events if e["stage"] == stage and (result is None or e["result"] == result)]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for s in [self.system, self.health, self.timeline_sock, self.to_actor, *self.peer_inboxes.values()]:
            s.close()
        self.ctx.term()

    def __enter__(self) -> "ActorHarness":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _detach(msg: Message) -> Message:
    """Copy payload buffers out of ZMQ frames so messages outlive the receive."""
    import dataclasses

    if not msg.PAYLOADS:
        return msg
    return dataclasses.replace(msg, **{name: bytes(getattr(msg, name)) for name in msg.PAYLOADS})
