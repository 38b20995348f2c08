"""Identity drift, measured off the hot path: a child process embeds a sampled rendered frame
with dlib's identity network and reports its distance to the persona's own embedding.

dlib holds the GIL for the ~100-350 ms an embedding takes, so a thread would stall the
driver's loop; a process does not. The driver hands over at most one frame at a time and
never waits: a frame offered while the last is still being measured is skipped.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
from dataclasses import dataclass

import numpy as np

#: Frames waiting for the measurer (one: the newest matters, older ones are skipped).
PENDING = 1
RESULTS = 16


@dataclass(frozen=True)
class DriftSample:
    frame: int
    anchor_id: str
    distance: float


def _measure(jobs: mp.Queue, results: mp.Queue, identity: np.ndarray) -> None:  # pragma: no cover - child process
    os.nice(10)  # measurement is bulk work: the render path always comes first
    import dlib

    from actors.runtime import _die_with_parent
    from persona.faces import _dlib

    _die_with_parent()
    parent = os.getppid()
    _, _, encoder = _dlib()
    while os.getppid() == parent:
        try:
            job = jobs.get(timeout=1.0)
        except queue.Empty:
            continue
        if job is None:
            return
        frame, anchor_id, image, landmarks = job
        h, w = image.shape[:2]
        points = [dlib.point(int(round(x)), int(round(y))) for x, y in landmarks]
        shape = dlib.full_object_detection(dlib.rectangle(0, 0, w - 1, h - 1), points)
        vector = np.array(encoder.compute_face_descriptor(image, shape), np.float32)
        try:
            results.put_nowait(DriftSample(frame, anchor_id, float(np.linalg.norm(vector - identity))))
        except queue.Full:
            pass


class DriftMonitor:
    """The measuring process and the driver's running view of what it measured."""

    def __init__(self, identity: np.ndarray, alpha: float = 0.3):
        ctx = mp.get_context("spawn")  # a fresh interpreter: no torch threads forked mid-flight
        self.jobs: mp.Queue = ctx.Queue(PENDING)
        self.results: mp.Queue = ctx.Queue(RESULTS)
        self.process = ctx.Process(target=_measure, args=(self.jobs, self.results, identity), daemon=True,
                                   name="drift-monitor")
        self.process.start()
        self.alpha = alpha
        # Each anchor photo sits at its own distance from the persona's mean embedding (a smile
        # is farther than a neutral face); drift is how far its renders rise above that.
        self.baseline: dict[str, float] = {}  # an anchor's first measured distance
        self.per_anchor: dict[str, float] = {}  # EWMA of each anchor's rise above its baseline
        self.trend: float | None = None  # EWMA of the rise over all samples

    def offer(self, frame: int, anchor_id: str, image: np.ndarray, landmarks: np.ndarray) -> bool:
        """Hand a rendered frame over without waiting; False if the measurer is still busy."""
        try:
            self.jobs.put_nowait((frame, anchor_id, np.ascontiguousarray(image), np.asarray(landmarks)))
            return True
        except queue.Full:
            return False

    def collect(self) -> list[DriftSample]:
        samples = []
        while True:
            try:
                sample = self.results.get_nowait()
            except queue.Empty:
                return samples
            rise = max(0.0, sample.distance - self.baseline.setdefault(sample.anchor_id, sample.distance))
            previous = self.per_anchor.get(sample.anchor_id)
            self.per_anchor[sample.anchor_id] = rise if previous is None else self.alpha * rise + (1 - self.alpha) * previous
            self.trend = rise if self.trend is None else self.alpha * rise + (1 - self.alpha) * self.trend
            samples.append(sample)

    def close(self, timeout: float = 3.0) -> None:
        try:
            self.jobs.put(None, timeout=timeout)
        except queue.Full:
            pass
        self.process.join(timeout)
        # A frame still in a queue's feeder thread must not hold this process at exit.
        self.jobs.cancel_join_thread()
        self.results.cancel_join_thread()
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout)
