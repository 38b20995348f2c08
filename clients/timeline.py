"""Subscribe to the timeline: keep the events in memory, append them to JSONL, wait for one."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import zmq

from protocol import ProtocolError, TimelineEvent, decode
from protocol.security import secure_client
from protocol.transport import make_socket

class TimelineRecorder:
    """Subscribes to the timeline in a thread; keeps events in memory and/or appends JSONL.

    With ``keep=True`` every event stays in ``events``; with ``keep=False`` only the ones
    not yet taken by :meth:`drain` do (a long-running watcher stays small)."""

    def __init__(self, endpoint: str, jsonl: str | Path | None = None, keep: bool = True, curve: dict | None = None):
        self.endpoint = endpoint
        self.curve = curve
        self.events: list[dict] = []
        self.keep = keep
        self.errors = 0
        self._drained = 0
        self._jsonl = open(jsonl, "a", encoding="utf-8", buffering=1) if jsonl else None  # a line at a time: tail -f works
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._connected = threading.Event()
        self._thread = threading.Thread(target=self._run, name="timeline", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        ctx = zmq.Context()
        sock = secure_client(make_socket(ctx, zmq.SUB, hwm=1_000_000, linger_ms=0), self.curve)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.connect(self.endpoint)
        try:
            while not self._stop.is_set():
                if not sock.poll(100):
                    continue
                while True:
                    try:
                        frames = sock.recv_multipart(flags=zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    try:
                        msg = decode(frames)
                    except ProtocolError:
                        self.errors += 1
                        continue
                    if isinstance(msg, TimelineEvent):
                        self._record(msg.as_record())
        finally:
            sock.close()
            ctx.term()

    def _record(self, record: dict) -> None:
        self._connected.set()
        with self._cond:
            if self._jsonl:
                self._jsonl.write(json.dumps(record, separators=(",", ":")) + "\n")
            self.events.append(record)
            self._cond.notify_all()

    def drain(self) -> list[dict]:
        """The events that arrived since the last drain(), in arrival order."""
        with self._cond:
            fresh = self.events[self._drained:]
            if self.keep:
                self._drained = len(self.events)
            else:
                self.events, self._drained = [], 0
            return fresh

    def wait_connected(self, timeout: float) -> bool:
        """True once any event arrived (actors beat every second, so this is quick)."""
        return self._connected.wait(timeout)

    def wait_for(self, predicate, timeout: float, start: int = 0) -> dict | None:
        """First event (from index ``start``) matching ``predicate``, waiting up to ``timeout`` s."""
        deadline = time.monotonic() + timeout
        index = start
        with self._cond:
            while True:
                while index < len(self.events):
                    if predicate(self.events[index]):
                        return self.events[index]
                    index += 1
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(min(remaining, 0.2))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        with self._cond:
            if self._jsonl:
                self._jsonl.close()
                self._jsonl = None


def load_jsonl(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
