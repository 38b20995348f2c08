"""TTS actor: TextChunks in, AudioChunks (int16 PCM + phoneme timing) out. The orchestrator.

Engines (``tts.adapters``) are loaded at start, each with its own worker thread, so a
stalled engine never blocks another. Chunks are synthesised strictly in order: the head
chunk goes to the active engine with a deadline from that engine's EWMA (``stall_factor``
x expected, at least ``min_deadline_ms``). A chunk that misses its deadline or fails is
synthesised again by the fallback engine, which then serves until the stalled engine
answers again -- the same words continue, nothing is repeated or skipped. Config
changes (engine, voice, fault injection, controller) apply at the next chunk boundary.

Audio leaves against stitcher credit (ms), in pieces if the credit on hand is smaller
than the chunk. Chunks that have left return credit to the parser, when the rate
controller agrees; each grant carries its wish for the next chunk size. Nothing on this
path touches the disk.
"""

from __future__ import annotations

import itertools
import math
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import zmq

from protocol import AudioChunk, ConfigUpdate, Credit, TextChunk

from .adapters import Synthesis, TTSAdapter, VoiceSchemaError, load_voice, make_adapter
from .adapters.fault import FaultInjector
from .adapters.voice import VoiceSchema
from .config import apply_changes
from .rate_controller import RateController
from .runtime import ActorContext, CreditLedger

NAME = "tts"
#: Pieces smaller than this wait for more credit (unless it is the chunk's remainder).
MIN_PIECE_MS = 120
#: How often the controller's wish is re-sent to the parser when it changed.
HINT_INTERVAL_S = 0.2
#: First guess of audio per character before an engine has been observed.
MS_PER_CHAR_GUESS = 65.0
_worker_ids = itertools.count()


class SynthesisWorker:
    """One engine's thread; results come back through a queue plus a wake-up byte."""

    def __init__(self, zctx: zmq.Context, adapter: TTSAdapter, faults: FaultInjector):
        self.adapter, self.faults = adapter, faults
        self.jobs: queue.Queue = queue.Queue(maxsize=1)
        self.results: queue.Queue = queue.Queue(maxsize=4)
        address = f"inproc://tts-worker-{next(_worker_ids)}"
        self.wake = zctx.socket(zmq.PAIR)
        self.wake.bind(address)
        self._signal = zctx.socket(zmq.PAIR)
        self._signal.connect(address)
        self.cancelled = threading.Event()
        self.busy = False
        self._thread = threading.Thread(target=self._loop, name=f"synth-{adapter.name}", daemon=True)
        self._thread.start()

    def submit(self, chunk: TextChunk, voice: VoiceSchema) -> None:
        self.busy = True
        self.cancelled.clear()
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
            self.adapter.cancel()

    def _loop(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            chunk, voice = job
            try:
                self.faults.before_call(self.adapter.name, self.cancelled)
                result: Synthesis | Exception = self.adapter.synthesize(chunk.text, voice)
                self.faults.after_call(self.adapter.name, result.duration_ms, self.cancelled)
            except Exception as exc:  # an engine failure must not kill the actor
                result = exc
            self.results.put((chunk, result), timeout=10)
            self._signal.send(b"!")

    def close(self) -> None:
        self.cancel()
        try:
            self.jobs.put_nowait(None)
        except queue.Full:
            pass
        self._thread.join(timeout=3)
        self.wake.close()
        self._signal.close()


@dataclass
class Engine:
    name: str
    adapter: TTSAdapter
    worker: SynthesisWorker
    healthy: bool = True
    rtf: float | None = None  # EWMA of synthesis ms per audio ms
    ms_per_char: float = MS_PER_CHAR_GUESS
    error: str = ""

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


@dataclass
class Outgoing:
    """A synthesised chunk being sent in credit-sized pieces."""

    chunk: TextChunk
    synthesis: Synthesis
    adapter: str
    sent: int = 0
    piece: int = 0


def run(ctx: ActorContext) -> None:
    config = ctx.config
    window_chunks = int(config["flow"]["tts_window_chunks"])
    voice = load_voice(config["voice"]["persona"])
    faults = FaultInjector(config["fault"])
    engines: dict[str, Engine] = {}
    for name in config["tts"]["adapters"]:
        adapter = make_adapter(name, config)
        try:
            adapter.load()
            adapter.warmup(voice)
        except Exception as exc:  # an optional engine may be missing; the active one may not
            ctx.error("load", "adapter_unavailable", f"{name}: {type(exc).__name__}: {exc}")
            if name == config["tts"]["adapter"]:
                raise
            continue
        engines[name] = Engine(name, adapter, SynthesisWorker(ctx.zmq, adapter, faults))
    controller = RateController(config["controller"])
    stitcher_credit = CreditLedger("tts->stitcher", "ms")
    pending: deque[TextChunk] = deque()  # bounded by the window granted to the parser
    outgoing: deque[Outgoing] = deque()  # at most two synthesised chunks in memory
    state = {"job": None, "owed": 0, "hint": None, "hint_sent_at": 0.0, "last_adapter": "",
             "downstream_ms": 0.0, "utterance": None, "config_swap": False}
    active = lambda: config["tts"]["adapter"]
    fallback = lambda: config["tts"]["fallback"] if config["tts"]["fallback"] in engines else ""

    def describe() -> dict:
        return {
            "actor": NAME, "active": active(), "fallback": fallback(), "voice": voice.as_dict(),
            "adapters": {n: {**e.adapter.describe(), "healthy": e.healthy, "projection": e.adapter.project(voice)}
                         for n, e in engines.items()},
            "fault": faults.snapshot(), "controller": controller.state(),
            "consumes": ["text_chunk <- parser", "credit <- stitcher (ms)"],
            "produces": ["audio_chunk -> stitcher", "credit -> parser (chunks, with size wish)"],
            "credit": {"grants": {"link": "parser->tts", "unit": "chunks", "window": window_chunks},
                       "spends": {"link": "tts->stitcher", "unit": "ms"}},
        }

    def start_epoch(epoch: int, cause: str, _issued_at_ns: int = 0) -> None:
        if ctx.adopt_epoch(epoch, cause):
            pending.clear()
            outgoing.clear()
            state["job"], state["owed"], state["utterance"] = None, 0, None
            for engine in engines.values():
                engine.worker.cancel()
            stitcher_credit.enter_epoch(epoch)
            controller.start_over()
            grant_parser(window_chunks, force=True)

    def apply_config(update: ConfigUpdate) -> None:
        nonlocal voice
        applied, refused = {}, {}
        for key, value in update.changes.items():
            if key == "tts.adapter" and value not in engines:
                refused[key] = f"{value} is not loaded (tts.adapters)"
                continue
            if key == "voice.persona":
                try:
                    voice = load_voice(value)
                except VoiceSchemaError as exc:
                    refused[key] = str(exc)
                    continue
            apply_changes(config, {key: value})
            applied[key] = value
            if key == "tts.adapter":
                state["config_swap"] = True
        faults.update(config["fault"])
        controller.configure(config["controller"])
        ctx.info = describe()
        ctx.emit("config", "ok" if not refused else "error",
                 data={"version": update.version, "applied": applied, "refused": refused, "at": "next chunk"})

    def submit(chunk: TextChunk, engine_name: str, tried: list[str]) -> None:
        engine = engines[engine_name]
        budget_ms = max(float(config["tts"]["min_deadline_ms"]),
                        float(config["tts"]["stall_factor"]) * engine.expected_ms(len(chunk.text)))
        now = time.monotonic()
        engine.worker.submit(chunk, voice)
        state["job"] = Job(chunk, engine_name, now, now + budget_ms / 1000, tried + [engine_name])

    def choose_engine() -> str:
        first = engines[active()]
        if first.healthy and not first.worker.busy:
            return active()
        backup = fallback()
        if backup and backup != active() and not engines[backup].worker.busy:
            return backup
        return active()

    def start_next() -> None:
        if state["job"] is not None or not pending or len(outgoing) >= 2:
            return
        name = choose_engine()
        if engines[name].worker.busy:
            return  # every usable engine is busy (e.g. the stalled one); try again next turn
        chunk = pending.popleft()
        if chunk.utterance_id != state["utterance"]:
            state["utterance"] = chunk.utterance_id
            controller.start_over()
        submit(chunk, name, [])

    def on_result(engine: Engine, chunk: TextChunk, result: Synthesis | Exception) -> None:
        job = state["job"]
        if chunk.epoch < ctx.epoch:
            ctx.emit("synth", "drop", utterance_id=chunk.utterance_id, chunk_id=chunk.sequence_id, epoch=chunk.epoch,
                     data={"adapter": engine.name, "why": "older epoch"})
            engine.healthy = True
            return
        if job is None or job.chunk is not chunk:
            # A stalled engine answering after its fallback served the chunk: it is back.
            was = engine.healthy
            engine.healthy = not isinstance(result, Exception)
            ctx.emit("synth", "drop", utterance_id=chunk.utterance_id, chunk_id=chunk.sequence_id,
                     surface=engine.name, data={"adapter": engine.name, "why": "late, already served",
                                                "recovered": engine.healthy and not was})
            return
        if isinstance(result, Exception):
            ctx.error("synth", "engine_error", f"{engine.name}: {type(result).__name__}: {result}",
                      utterance_id=chunk.utterance_id, chunk_id=chunk.sequence_id)
            if engine.adapter.describe().get("supports_seed") and job.tried.count(engine.name) < 2:
                # Idempotent retry (seed 001, invariant 6): a seeded engine gives the same PCM for
                # the same window, so the stream resumes without a seam.
                ctx.emit("retry", utterance_id=chunk.utterance_id, chunk_id=chunk.sequence_id, data={"adapter": engine.name})
                submit(chunk, engine.name, job.tried)
                return
            engine.healthy = False
            backup = fallback()
            if backup and backup not in job.tried and not engines[backup].worker.busy:
                submit(chunk, backup, job.tried)
                return
            result = Synthesis(np.zeros(0, np.int16), engine.adapter.sample_rate or 22050)  # told on the timeline
        engine.healthy = True
        engine.observe(result, len(chunk.text))
        controller.observe(result.render_ms, result.duration_ms, chunk.window_tokens)
        state["job"] = None
        ctx.emit("synth", utterance_id=chunk.utterance_id, chunk_id=chunk.sequence_id, duration_ms=result.render_ms,
                 surface=engine.name,
                 data={"chars": len(chunk.text), "audio_ms": round(result.duration_ms, 1), "adapter": engine.name,
                       "rtf": round(result.render_ms / result.duration_ms, 4) if result.duration_ms else 0.0,
                       "window_tokens": chunk.window_tokens, "phonemes": len(result.phonemes),
                       "deadline_ms": round((job.deadline - job.started) * 1000, 1), "tried": job.tried,
                       "voice": config["voice"]["persona"], "determinism": result.determinism, "seed": result.seed,
                       "sample_rate": result.sample_rate, "samples": int(len(result.pcm))})
        if len(result.pcm):  # swaps are about audio: an empty end-of-turn chunk changes nothing
            previous = state["last_adapter"]
            if previous and engine.name != previous:
                if state["config_swap"] and engine.name == active():
                    reason = "config"
                elif engine.name == active():
                    reason = "recovered"
                else:
                    reason = "stall" if len(job.tried) > 1 else "fallback"
                state["config_swap"] = False
                ctx.emit("swap", utterance_id=chunk.utterance_id, chunk_id=chunk.sequence_id,
                         data={"from": previous, "to": engine.name, "reason": reason})
            state["last_adapter"] = engine.name
        outgoing.append(Outgoing(chunk, result, engine.name))

    def check_deadline() -> None:
        job = state["job"]
        if job is None or time.monotonic() < job.deadline:
            return
        backup = fallback()
        if backup and backup not in job.tried and not engines[backup].worker.busy:
            engines[job.engine].healthy = False
            ctx.emit("stall", "warn", utterance_id=job.chunk.utterance_id, chunk_id=job.chunk.sequence_id,
                     duration_ms=(time.monotonic() - job.started) * 1000,
                     data={"adapter": job.engine, "deadline_ms": round((job.deadline - job.started) * 1000, 1),
                           "fallback": backup})
            submit(job.chunk, backup, job.tried)
        else:
            job.deadline = math.inf  # nothing to fall back to: wait for the engine

    def send_pieces() -> None:
        while outgoing:
            out = outgoing[0]
            syn, chunk = out.synthesis, out.chunk
            rate = syn.sample_rate
            remaining = len(syn.pcm) - out.sent
            n = min(remaining, stitcher_credit.available * rate // 1000)
            if remaining and n < min(remaining, MIN_PIECE_MS * rate // 1000):
                return
            cost = math.ceil(n * 1000 / rate)
            stitcher_credit.spend(cost)
            last = out.sent + n >= len(syn.pcm)
            message = AudioChunk(
                epoch=ctx.epoch, utterance_id=chunk.utterance_id, sequence_id=chunk.sequence_id,
                piece=out.piece, last_piece=last, final=chunk.final and last, sample_rate=rate,
                n_samples=n, start_sample=out.sent,
                phonemes=tuple(syn.phonemes) if out.piece == 0 else (),
                word_anchors=tuple(syn.word_anchors) if out.piece == 0 else (),
                adapter=out.adapter, render_ms=round(syn.render_ms, 2), window_tokens=chunk.window_tokens,
                pcm=np.ascontiguousarray(syn.pcm[out.sent:out.sent + n]).tobytes(),
            )
            ctx.send_to("stitcher", message)
            ctx.emit("send", utterance_id=chunk.utterance_id, chunk_id=chunk.sequence_id, surface="tts->stitcher",
                     data={"piece": out.piece, "samples": n, "cost": cost, "credit_left": stitcher_credit.available,
                           "unit": "ms", "link": "tts->stitcher", "last_piece": last, "adapter": out.adapter})
            out.sent += n
            out.piece += 1
            if last:
                outgoing.popleft()
                state["owed"] += 1

    def grant_parser(extra: int = 0, force: bool = False) -> None:
        """Return owed chunk credit when the controller agrees (a *request*: the controller
        steps its ladder); otherwise only refresh its wish when it changed."""
        state["owed"] += extra
        now = time.monotonic()
        if state["owed"]:
            wish = controller.request(state["downstream_ms"])
            amount = 0 if wish.skip and not force else state["owed"]
        else:
            wish, amount = controller.current(state["downstream_ms"]), 0
        hint = (wish.target_tokens, wish.low_latency)
        changed = hint != state["hint"] and now - state["hint_sent_at"] >= HINT_INTERVAL_S
        if amount or force or changed:
            ctx.emit("credit", surface="parser->tts",  # stamped before it is sent (see ActorContext.grant)
                     data={"link": "parser->tts", "amount": amount, "unit": "chunks", "target_tokens": wish.target_tokens,
                           "low_latency": wish.low_latency, "reason": wish.reason, "buffered_ms": state["downstream_ms"]})
            ctx.send_to("parser", Credit(link="parser->tts", epoch=ctx.epoch, amount=amount, unit="chunks",
                                         target_tokens=wish.target_tokens, low_latency=wish.low_latency))
            state["owed"] -= amount
            state["hint"], state["hint_sent_at"] = hint, now

    poller = zmq.Poller()
    poller.register(ctx.system, zmq.POLLIN)
    poller.register(ctx.inbox, zmq.POLLIN)
    for engine in engines.values():
        poller.register(engine.worker.wake, zmq.POLLIN)
    ctx.ready(describe())
    grant_parser(window_chunks, force=True)
    next_grant_check = 0.0

    while ctx.running:
        job = state["job"]
        timeout = ctx.poll_timeout_ms(job.deadline if job and math.isfinite(job.deadline) else time.monotonic() + HINT_INTERVAL_S)
        poller.poll(timeout)
        ctx.handle_system(start_epoch, apply_config)
        for msg in ctx.drain(ctx.inbox):
            if getattr(msg, "epoch", ctx.epoch) > ctx.epoch:
                start_epoch(msg.epoch, f"{msg.TYPE} from newer epoch")
            if isinstance(msg, Credit):
                stitcher_credit.on_credit(msg)
                state["downstream_ms"] = float(msg.depth)
            elif isinstance(msg, TextChunk):
                if msg.epoch < ctx.epoch:
                    ctx.emit("drop", "drop", utterance_id=msg.utterance_id, chunk_id=msg.sequence_id, epoch=msg.epoch)
                elif len(pending) + len(outgoing) + (state["job"] is not None) >= window_chunks:
                    ctx.error("receive", "credit_exceeded", f"chunk {msg.sequence_id} beyond the granted window; dropped",
                              chunk_id=msg.sequence_id)
                else:
                    pending.append(msg)
        for engine in engines.values():
            for chunk, result in engine.worker.collect():
                on_result(engine, chunk, result)
        check_deadline()
        start_next()
        send_pieces()
        now = time.monotonic()
        if state["owed"] or now >= next_grant_check:
            next_grant_check = now + HINT_INTERVAL_S
            grant_parser()
        ctx.heartbeat({"pending_chunks": len(pending), "outgoing_chunks": len(outgoing),
                       "synthesizing": state["job"].engine if state["job"] else None, "active": active(),
                       "healthy": {n: e.healthy for n, e in engines.items()},
                       "credit": {"stitcher_ms": stitcher_credit.available, "owed_parser": state["owed"]},
                       "downstream_ms": state["downstream_ms"], "controller": controller.state()})
    for engine in engines.values():
        engine.worker.close()
