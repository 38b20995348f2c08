"""The TTS actor's engines: one worker thread each, which one speaks, deadlines, fallback.

Chunks are synthesised strictly in order, one at a time: the head chunk goes to the
active engine with a deadline from that engine's EWMA (``stall_factor`` x expected, at
least ``min_deadline_ms``). A chunk that misses its deadline or fails is synthesised
again by the fallback engine -- the same words continue, nothing is repeated or skipped.
A stalled engine is given nothing until it answers again; one that *failed* is tried
again after a short back-off (doubling to ERROR_RETRY_MAX_S), so one bad chunk never
hands the stream to the fallback for good. A seeded engine that fails is first retried
once: it gives the same PCM for the same text, so there is no seam. Every swap says why:
stall, error, recovered or config.
"""

from __future__ import annotations

import itertools
import math
import queue
import threading
import time
from dataclasses import dataclass, field, replace

import numpy as np
import zmq

from protocol import TextChunk

from .adapters import Synthesis, SynthesisCancelled, TTSAdapter, make_adapter
from .adapters.fault import FaultInjector
from .lips import LipTiming
from persona.voice import VoiceSchema
from .runtime import ActorContext

#: First guess of audio per character before an engine has been observed.
MS_PER_CHAR_GUESS = 65.0
#: How long an idle worker waits for a job before looking again (so close() is never stuck).
IDLE_WAIT_S = 1.0
#: After an engine fails a chunk it is tried again this much later, doubling while it keeps failing.
ERROR_RETRY_S = 0.5
ERROR_RETRY_MAX_S = 10.0
#: How long the next chunk waits for the active engine to finish a cancelled synthesis (Piper:
#: a few ms, more on a busy machine) before the fallback speaks it instead: a barge-in must not
#: change the voice.
CANCEL_GRACE_S = 0.5
_worker_ids = itertools.count()


class SynthesisWorker:
    """One engine's thread; results come back through a queue plus a wake-up byte."""

    def __init__(self, zctx: zmq.Context, adapter: TTSAdapter, faults: FaultInjector, lips: LipTiming):
        self.adapter, self.faults, self.lips = adapter, faults, lips
        self.jobs: queue.Queue = queue.Queue(maxsize=1)
        self.results: queue.Queue = queue.Queue(maxsize=4)
        address = f"inproc://tts-worker-{next(_worker_ids)}"
        self.wake = zctx.socket(zmq.PAIR)
        self.wake.bind(address)
        self._signal = zctx.socket(zmq.PAIR)
        self._signal.connect(address)
        self.cancelled = threading.Event()
        self.cancelled_at = 0.0
        self.busy = False
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"synth-{adapter.name}", daemon=True)
        self._thread.start()

    def submit(self, chunk: TextChunk, voice: VoiceSchema) -> None:
        self.busy = True
        self.cancelled.clear()
        self.adapter.new_call()
        self.jobs.put_nowait((chunk, voice))

    def collect(self) -> list[tuple[TextChunk, Synthesis | Exception]]:
        while True:
            try:
                self.wake.recv(flags=zmq.NOBLOCK)
            except zmq.Again:
                break
        done = []
        while True:
            try:
                done.append(self.results.get_nowait())
            except queue.Empty:
                break
        if done:
            self.busy = False
        return done

    def cancel(self) -> None:
        if self.busy:
            self.cancelled.set()
            self.cancelled_at = time.monotonic()
            self.adapter.cancel()

    def finishing_cancel(self, now: float) -> bool:
        """Busy only with a synthesis cancelled less than CANCEL_GRACE_S ago."""
        return self.busy and self.cancelled.is_set() and now - self.cancelled_at < CANCEL_GRACE_S

    def _loop(self) -> None:
        while not self._closing.is_set():
            try:
                job = self.jobs.get(timeout=IDLE_WAIT_S)
            except queue.Empty:
                continue
            if job is None:  # close() asks the thread to end now
                return
            chunk, voice = job
            try:
                self.faults.before_call(self.adapter.name, self.cancelled)
                result: Synthesis | Exception = self.adapter.synthesize(chunk.text, voice)
                slowed_ms = self.faults.after_call(self.adapter.name, result.duration_ms, self.cancelled)
                if slowed_ms:  # a slowed engine is slow as measured, as a busy GPU's would be
                    result = replace(result, render_ms=result.render_ms + slowed_ms)
                result = self.lips.apply(result)
            except Exception as exc:  # an engine failure must not kill the actor
                result = exc
            self.results.put((chunk, result), timeout=10)
            self._signal.send(b"!")

    def close(self) -> None:
        self.cancel()
        self._closing.set()
        try:
            self.jobs.put_nowait(None)
        except queue.Full:  # a job is still queued: the thread sees _closing after it
            pass
        self._thread.join(timeout=3)
        self.wake.close()
        self._signal.close()


@dataclass
class Engine:
    name: str
    adapter: TTSAdapter
    worker: SynthesisWorker
    warmup_ms: float = 0.0  # what the warm-up before READY took (the first request does not pay it)
    healthy: bool = True
    rtf: float | None = None  # EWMA of synthesis ms per audio ms
    ms_per_char: float = MS_PER_CHAR_GUESS
    down_why: str = ""  # why it is not healthy: "stall" (answers later) or "error" (retried at retry_at)
    retry_at: float = 0.0
    backoff_s: float = ERROR_RETRY_S

    def usable(self, now: float) -> bool:
        return not self.worker.busy and (self.healthy or (self.down_why == "error" and now >= self.retry_at))

    def failed(self, now: float) -> None:
        self.healthy, self.down_why = False, "error"
        self.retry_at = now + self.backoff_s
        self.backoff_s = min(ERROR_RETRY_MAX_S, self.backoff_s * 2)

    def answered(self) -> None:
        self.healthy, self.down_why, self.backoff_s = True, "", ERROR_RETRY_S

    def expected_ms(self, chars: int) -> float:
        return (self.rtf if self.rtf is not None else 0.3) * self.ms_per_char * max(chars, 1)

    def observe(self, synthesis: Synthesis, chars: int, alpha: float = 0.3) -> None:
        if synthesis.duration_ms <= 0 or chars <= 0:
            return
        rtf = synthesis.render_ms / synthesis.duration_ms
        self.rtf = rtf if self.rtf is None else alpha * rtf + (1 - alpha) * self.rtf
        self.ms_per_char = alpha * synthesis.duration_ms / chars + (1 - alpha) * self.ms_per_char


@dataclass
class Job:
    """The head chunk while it is being synthesised (possibly by a second engine)."""

    chunk: TextChunk
    engine: str
    started: float
    deadline: float
    tried: list[str] = field(default_factory=list)
    why: str = ""  # why it is not on the active engine: stall, error (the active one's failure)
    rewound: bool = False  # a crash rewind came while it ran: the chunk is sent again, and takes this audio


class EnginePool:
    """Every loaded engine, the one chunk being synthesised, and the swap it makes."""

    def __init__(self, ctx: ActorContext, voice: VoiceSchema, faults: FaultInjector):
        self.ctx, self.tts = ctx, ctx.config["tts"]
        self.engines: dict[str, Engine] = {}
        lips = LipTiming(ctx.config)
        for name in self.tts["adapters"]:
            adapter = make_adapter(name, ctx.config)
            try:
                adapter.load()
                started = time.monotonic()
                adapter.warmup(voice)
                warmup_ms = round((time.monotonic() - started) * 1000, 1)
            except Exception as exc:  # an optional engine may be missing; the active one may not
                ctx.error("load", "adapter_unavailable", f"{name}: {type(exc).__name__}: {exc}")
                if name == self.tts["adapter"]:
                    raise
                continue
            self.engines[name] = Engine(name, adapter, SynthesisWorker(ctx.zmq, adapter, faults, lips), warmup_ms=warmup_ms)
        self.job: Job | None = None
        self.last_adapter = ""
        self.config_swap = False  # the active engine was changed by config: its next audio is a "config" swap

    @property
    def active(self) -> str:
        return self.tts["adapter"]

    @property
    def fallback(self) -> str:
        return self.tts["fallback"] if self.tts["fallback"] in self.engines else ""

    def describe(self, voice: VoiceSchema) -> dict:
        return {n: {**e.adapter.describe(), "healthy": e.healthy, "warmup_ms": e.warmup_ms, "projection": e.adapter.project(voice)}
                for n, e in self.engines.items()}

    def wake_sockets(self) -> list[zmq.Socket]:
        return [e.worker.wake for e in self.engines.values()]

    def deadline(self) -> float | None:
        return self.job.deadline if self.job and math.isfinite(self.job.deadline) else None

    def health(self) -> dict:
        return {n: e.healthy for n, e in self.engines.items()}

    def usable_fallback(self, tried: list[str]) -> str:
        backup = self.fallback
        return backup if backup and backup not in tried and not self.engines[backup].worker.busy else ""

    # -- starting and watching a synthesis -------------------------------------------------------
    def start(self, chunk: TextChunk, voice: VoiceSchema, urgent: bool = False) -> bool:
        """Give ``chunk`` to the engine that should speak it; False if every usable one is busy
        (e.g. the stalled one): try again next turn. ``urgent``: a listener is waiting for it (a
        turn's first chunk); an engine that can (Piper, voice.burst) spreads it over idle cores."""
        first = self.engines[self.active]
        name, why = self.active, ""
        if first.worker.finishing_cancel(time.monotonic()):
            return False  # it is ending the synthesis a barge-in cancelled: wait for it, same voice
        if not first.usable(time.monotonic()):
            backup = self.fallback
            if backup and backup != self.active and not self.engines[backup].worker.busy:
                name, why = backup, first.down_why or "busy"
        if self.engines[name].worker.busy:
            return False
        if hasattr(self.engines[name].adapter, "urgent"):  # read by its worker thread, after the submit below
            self.engines[name].adapter.urgent = urgent
        self.submit(chunk, name, [], voice, why)
        return True

    def submit(self, chunk: TextChunk, name: str, tried: list[str], voice: VoiceSchema, why: str = "") -> None:
        engine = self.engines[name]
        budget_ms = max(float(self.tts["min_deadline_ms"]), float(self.tts["stall_factor"]) * engine.expected_ms(len(chunk.text)))
        now = time.monotonic()
        engine.worker.submit(chunk, voice)
        rewound = self.job is not None and self.job.chunk is chunk and self.job.rewound  # a retry or fallback of it
        self.job = Job(chunk, name, now, now + budget_ms / 1000, tried + [name], why, rewound)

    def check_deadline(self, voice: VoiceSchema) -> None:
        """A late head chunk goes to the fallback; with none, we wait for the engine."""
        job = self.job
        if job is None or time.monotonic() < job.deadline:
            return
        backup = self.usable_fallback(job.tried)
        if not backup:
            job.deadline = math.inf
            return
        stalled = self.engines[job.engine]
        stalled.healthy, stalled.down_why = False, "stall"
        self.ctx.emit("stall", "warn", utterance_id=job.chunk.utterance_id, chunk_id=job.chunk.sequence_id,
                      duration_ms=(time.monotonic() - job.started) * 1000,
                      data={"adapter": job.engine, "deadline_ms": round((job.deadline - job.started) * 1000, 1),
                            "fallback": backup})
        self.submit(job.chunk, backup, job.tried, voice, "stall")

    def results(self) -> list[tuple[Engine, TextChunk, Synthesis | Exception]]:
        return [(e, chunk, result) for e in self.engines.values() for chunk, result in e.worker.collect()]

    def settle(self, engine: Engine, chunk: TextChunk, result: Synthesis | Exception,
               voice: VoiceSchema) -> tuple[Job, Synthesis] | None:
        """What an engine answered: the head chunk's synthesis, or None when the answer is
        stale, late (the fallback already served), or handed to a retry or the fallback."""
        job = self.job
        if chunk.epoch < self.ctx.epoch:
            self.ctx.emit("synth", "drop", utterance_id=chunk.utterance_id, chunk_id=chunk.sequence_id, epoch=chunk.epoch,
                          data={"adapter": engine.name, "why": "older epoch"})
            engine.answered()
            return None
        if job is None or job.chunk is not chunk:
            # A stalled engine answering after its fallback served the chunk: it is back. (Or
            # the answer to a synthesis a rewind cancelled: that is no failure of the engine.)
            was = engine.healthy
            if isinstance(result, Exception) and not isinstance(result, SynthesisCancelled):
                engine.failed(time.monotonic())
            else:
                engine.answered()
            self.ctx.emit("synth", "drop", utterance_id=chunk.utterance_id, chunk_id=chunk.sequence_id,
                          surface=engine.name, data={"adapter": engine.name, "why": "late, already served",
                                                     "recovered": engine.healthy and not was})
            return None
        if isinstance(result, Exception):
            result = self.recover(engine, job, result, voice)
            if result is None:
                return None
        else:
            engine.answered()
        engine.observe(result, len(chunk.text))
        self.job = None
        return job, result

    def recover(self, engine: Engine, job: Job, error: Exception, voice: VoiceSchema) -> Synthesis | None:
        """A failed synthesis: retry a seeded engine once, else the fallback, else silence (on
        the timeline) so the stream moves on."""
        chunk = job.chunk
        self.ctx.error("synth", "engine_error", f"{engine.name}: {type(error).__name__}: {error}",
                       utterance_id=chunk.utterance_id, chunk_id=chunk.sequence_id)
        if engine.adapter.describe().get("supports_seed") and job.tried.count(engine.name) < 2:
            # The same window gives the same PCM on a seeded engine: the stream resumes without a seam.
            self.ctx.emit("retry", utterance_id=chunk.utterance_id, chunk_id=chunk.sequence_id, data={"adapter": engine.name})
            self.submit(chunk, engine.name, job.tried, voice)
            return None
        engine.failed(time.monotonic())
        backup = self.usable_fallback(job.tried)
        if backup:
            self.submit(chunk, backup, job.tried, voice, "error")
            return None
        self.ctx.error("synth", "unspoken", f"chunk {chunk.sequence_id} could not be synthesised by any engine; "
                       "the stream goes on without it", utterance_id=chunk.utterance_id, chunk_id=chunk.sequence_id)
        return Synthesis(np.zeros(0, np.int16), engine.adapter.sample_rate or 22050)

    def swap(self, name: str, job: Job) -> tuple[str, str] | None:
        """(previous engine, why) when the engine speaking changed with this chunk's audio."""
        previous, self.last_adapter = self.last_adapter, name
        if not previous or name == previous:
            return None
        if self.config_swap and name == self.active:
            reason = "config"
        elif name == self.active:
            reason = "recovered"
        else:
            reason = job.why or "fallback"
        self.config_swap = False
        return previous, reason

    def cancel(self) -> None:
        self.job = None
        for engine in self.engines.values():
            engine.worker.cancel()

    def close(self) -> None:
        for engine in self.engines.values():
            engine.worker.close()
