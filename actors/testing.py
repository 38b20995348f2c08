"""Drive one actor class in-process, with no child process and no peer: a context that
records what the actor sends, grants, requests and publishes (pipecat's idea of a test
harness inside the package). The actor under test is the real class; only its
surroundings are replaced, and the message path (:meth:`ActorContext.receive`,
:meth:`ActorContext.deliver`) is the very code a process runs.

    ctx = RecordingContext("stitcher", config)
    stitcher = Stitcher(ctx)
    ctx.deliver(stitcher, Credit(...))
    stitcher.step()
    ctx.sent["driver"], ctx.grants, ctx.events_of("span")
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import zmq

from protocol import Credit, Message, TimelineEvent
from protocol.transport import make_socket

from .runtime import ActorContext


class RecordingContext(ActorContext):
    def __init__(self, name: str, config: dict, epoch: int = 0):
        super().__init__(name, config, epoch=epoch)
        self.sent: dict[str, list[Message]] = defaultdict(list)
        self.requests: list[Message] = []
        self.journaled: list[Message] = []
        self.events: list[dict] = []
        self.beats: list[dict] = []
        self.system_queue: list[Message] = []
        self.inbox_queue: list[Message] = []
        self.scheduling = None
        self.zmq = zmq.Context()  # in-process sockets only (engine wake-ups, the player's av_out)
        self._sockets: list[zmq.Socket] = []

    # -- what an actor does to its context ------------------------------------------------------
    def send_to(self, name: str, msg: Message) -> bool:
        self.sent[name].append(msg)
        return True

    def request(self, msg: Message, must_arrive: bool = False) -> None:
        self.requests.append(msg)

    def journal(self, msg: Message) -> bool:
        self.journaled.append(msg)
        return True

    def publish(self, event: TimelineEvent) -> None:
        self.events.append(event.as_record())

    def system_messages(self) -> list[Message]:
        out, self.system_queue = self.system_queue, []
        return out

    def inbox_messages(self) -> list[Message]:
        out, self.inbox_queue = self.inbox_queue, []
        return out

    def heartbeat(self, stats: dict, force: bool = False) -> None:
        self.beats.append(stats)

    def socket(self, kind: int, **kwargs: Any) -> zmq.Socket:
        kwargs.setdefault("linger_ms", 0)
        sock = make_socket(self.zmq, kind, **kwargs)
        self._sockets.append(sock)
        return sock

    def poller(self, *extra: zmq.Socket) -> zmq.Poller:
        poller = zmq.Poller()
        for sock in extra:
            poller.register(sock, zmq.POLLIN)
        return poller

    def poll_timeout_ms(self, *deadlines: float) -> int:
        nearest = min(deadlines, default=time.monotonic() + 0.05)
        return max(0, min(50, int((nearest - time.monotonic()) * 1000)))

    def close(self) -> None:
        for sock in self._sockets:
            sock.close()
        self.zmq.term()

    # -- what a test reads ----------------------------------------------------------------------
    @property
    def grants(self) -> list[Credit]:
        """Every credit this actor sent, to anyone, in order."""
        return [m for msgs in self.sent.values() for m in msgs if isinstance(m, Credit)]

    def granted(self, producer: str) -> int:
        return sum(m.amount for m in self.sent[producer] if isinstance(m, Credit) and m.epoch == self.epoch)

    def of_type(self, peer: str, cls: type) -> list:
        return [m for m in self.sent[peer] if isinstance(m, cls)]

    def events_of(self, stage: str, result: str | None = None) -> list[dict]:
        return [e for e in self.events if e["stage"] == stage and (result is None or e["result"] == result)]

    def __enter__(self) -> "RecordingContext":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
