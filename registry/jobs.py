"""The build worker pool: a few threads taking build jobs from a bounded queue.

Builds are CPU-heavy and hold their inputs in memory, so both are bounded: at most
``workers`` run at once, at most ``queue_size`` wait, and a submission beyond that is refused
at once (QueueFull) rather than queued without limit. Closing stops the workers: a waiting job
never starts, a running one stops at its next progress report (JobCancelled)."""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from persona.pack import INPUT_KINDS
from registry.errors import BadRequest, QueueFull

log = logging.getLogger("registry.jobs")
#: How often an idle worker looks at the stop flag.
POLL_S = 0.2
JOB_STATES = ("queued", "running", "published", "blocked", "failed")
FINISHED_STATES = ("published", "blocked", "failed")


class JobCancelled(Exception):
    """Raised inside a build (from its progress callback) when the registry is closing."""


@dataclass(frozen=True)
class InputBlob:
    """One uploaded input as the registry holds it until the build reads it."""

    name: str
    data: bytes = field(repr=False)
    kind: str


@dataclass(frozen=True)
class BuildJob:
    job_id: str
    persona_id: str
    inputs: tuple[InputBlob, ...]
    options: dict


class JobPool:
    """``workers`` threads calling ``handle(job)`` for jobs from a queue of ``queue_size``."""

    def __init__(self, workers: int, queue_size: int, handle: Callable[[BuildJob], None]):
        if workers < 1 or queue_size < 0:
            raise ValueError(f"need workers >= 1 and queue_size >= 0 (got {workers}, {queue_size})")
        self.workers, self.handle = workers, handle
        # maxsize 0 would mean "unbounded" to queue.Queue; a zero-length queue is 1 slot here.
        self.queue: queue.Queue[BuildJob] = queue.Queue(maxsize=max(queue_size, 1))
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.lock = threading.Lock()
        self.unstarted: list[BuildJob] = []

    def submit(self, job: BuildJob) -> None:
        """Queue ``job``; QueueFull when the queue is at its bound."""
        if self.stopping.is_set():
            raise QueueFull("the registry is shutting down; not accepting builds")
        self._start_workers()
        try:
            self.queue.put_nowait(job)
        except queue.Full:
            raise QueueFull(f"build queue is full ({self.workers} running, {self.queue.maxsize} waiting); "
                            "try again when a build has finished") from None

    def _start_workers(self) -> None:
        # Started on the first build, so opening a registry only to read costs no threads.
        with self.lock:
            if self.threads:
                return
            for i in range(self.workers):
                thread = threading.Thread(target=self._work, name=f"registry-build-{i}", daemon=True)
                thread.start()
                self.threads.append(thread)

    def _work(self) -> None:
        while not self.stopping.is_set():
            try:
                job = self.queue.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if self.stopping.is_set():  # taken after close began: hand it back as not started
                with self.lock:
                    self.unstarted.append(job)
                return
            try:
                self.handle(job)
            except Exception:  # handle() records its own failures; this only keeps the worker alive
                log.exception("build worker: job %s", job.job_id)

    def check(self) -> None:
        """Called from a build's progress reports: ends the build when the pool is closing."""
        if self.stopping.is_set():
            raise JobCancelled("the registry closed while this build was running")

    def close(self, timeout_s: float) -> list[BuildJob]:
        """Stop the workers (waiting up to ``timeout_s`` in all); returns the jobs that never started."""
        self.stopping.set()
        deadline = time.monotonic() + timeout_s
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self.lock:
            leftover = list(self.unstarted)
        while True:
            try:
                leftover.append(self.queue.get_nowait())
            except queue.Empty:
                return leftover


def wait_for_job(read: Callable[[], dict], timeout: float, on_progress, poll_s: float) -> dict:
    """Poll ``read()`` until the job has finished; shared by the Registry and the HTTP client."""
    deadline = time.monotonic() + float(timeout)
    seen = None
    while True:
        status = read()
        if on_progress is not None and (status["progress"], status["message"]) != seen:
            seen = (status["progress"], status["message"])
            on_progress(*seen)
        if status["state"] in FINISHED_STATES:
            return status
        if time.monotonic() >= deadline:
            raise TimeoutError(f"job {status['job_id']} is still {status['state']} after {timeout:g} s")
        time.sleep(poll_s)


def as_input(item) -> InputBlob:
    """An InputFile-like object, a (name, data, kind) tuple or a dict, checked."""
    if isinstance(item, (tuple, list)) and len(item) == 3:
        name, data, kind = item
    elif isinstance(item, dict):
        name, data, kind = item.get("name"), item.get("data"), item.get("kind")
    else:
        name, data, kind = getattr(item, "name", None), getattr(item, "data", None), getattr(item, "kind", None)
    if kind not in INPUT_KINDS:
        raise BadRequest(f"input kind {kind!r} must be one of {', '.join(INPUT_KINDS)}")
    name = Path(str(name or "")).name  # a client's directory layout means nothing here
    if not name or len(name) > 255:
        raise BadRequest("every input needs a file name of 1 to 255 characters")
    if not isinstance(data, (bytes, bytearray, memoryview)) or not len(data):
        raise BadRequest(f"input {name!r} is empty or not bytes")
    return InputBlob(name, bytes(data), kind)
