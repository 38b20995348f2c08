"""TTS actor: TextChunks in, AudioChunks (int16 PCM + phoneme timing) out.

Synthesis runs on one worker thread so the loop keeps answering barge-ins, credits and
heartbeats while the engine works (onnxruntime releases the GIL). Audio leaves only
against stitcher credit (unit: ms); a chunk larger than the credit on hand goes out in
pieces. Each chunk that has fully left returns one chunk of credit to the parser.
Nothing on this path touches the disk.
"""

from __future__ import annotations

import itertools
import math
import queue
import threading
from collections import deque
from dataclasses import dataclass

import numpy as np
import zmq

from protocol import AudioChunk, BargeIn, Credit, Shutdown, TextChunk

from .adapters import Synthesis, TTSAdapter, make_adapter
from .runtime import ActorContext, CreditLedger, setup_logging

NAME = "tts"
#: Pieces smaller than this wait for more credit (unless it is the chunk's remainder).
MIN_PIECE_MS = 120
_worker_ids = itertools.count()


@dataclass
class Outgoing:
    """A synthesised chunk being sent in credit-sized pieces."""

    chunk: TextChunk
    synthesis: Synthesis
    sent: int = 0
    piece: int = 0


class SynthesisWorker:
    """One background thread; results come back through a queue plus a wake-up byte."""

    def __init__(self, zctx: zmq.Context, adapter: TTSAdapter):
        self.adapter = adapter
        self.jobs: queue.Queue[TextChunk | None] = queue.Queue(maxsize=1)
        self.results: queue.Queue[tuple[TextChunk, Synthesis | Exception]] = queue.Queue(maxsize=2)
        address = f"inproc://tts-worker-{next(_worker_ids)}"
        self.wake = zctx.socket(zmq.PAIR)
        self.wake.bind(address)
        self._signal = zctx.socket(zmq.PAIR)
        self._signal.connect(address)
        self.busy = False
        self._thread = threading.Thread(target=self._loop, name="synthesis", daemon=True)
        self._thread.start()

    def submit(self, chunk: TextChunk) -> None:
        self.busy = True
        self.jobs.put_nowait(chunk)

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

    def _loop(self) -> None:
        while True:
            chunk = self.jobs.get()
            if chunk is None:
                return
            try:
                result: Synthesis | Exception = self.adapter.synthesize(chunk.text)
            except Exception as exc:  # an engine failure must not kill the actor
                result = exc
            self.results.put((chunk, result), timeout=10)
            self._signal.send(b"!")

    def close(self) -> None:
        self.adapter.cancel()
        try:
            self.jobs.put_nowait(None)
        except queue.Full:
            pass
        self._thread.join(timeout=5)
        self.wake.close()
        self._signal.close()


def run(ctx: ActorContext) -> None:
    flow = ctx.config["flow"]
    window_chunks = int(flow["tts_window_chunks"])
    adapter = make_adapter(ctx.config["voice"]["engine"], ctx.config)
    adapter.load()
    adapter.warmup()
    sample_rate = adapter.sample_rate
    worker = SynthesisWorker(ctx.zmq, adapter)
    stitcher_credit = CreditLedger("tts->stitcher", "ms")
    pending: deque[TextChunk] = deque()  # bounded by the window we grant the parser
    outgoing: deque[Outgoing] = deque()  # at most two synthesised chunks in memory

    def start_epoch(epoch: int, cause: str) -> None:
        if ctx.adopt_epoch(epoch, cause):
            pending.clear()
            outgoing.clear()
            adapter.cancel()
            stitcher_credit.enter_epoch(epoch)
            ctx.grant("parser", "parser->tts", window_chunks, "chunks")

    def send_pieces() -> None:
        while outgoing:
            out = outgoing[0]
            remaining = len(out.synthesis.pcm) - out.sent
            budget = stitcher_credit.available * sample_rate // 1000
            n = min(remaining, budget)
            if remaining and n < min(remaining, MIN_PIECE_MS * sample_rate // 1000):
                return
            cost = math.ceil(n * 1000 / sample_rate)
            stitcher_credit.spend(cost)
            last = out.sent + n >= len(out.synthesis.pcm)
            syn, chunk = out.synthesis, out.chunk
            message = AudioChunk(
                epoch=ctx.epoch, utterance_id=chunk.utterance_id, sequence_id=chunk.sequence_id,
                piece=out.piece, last_piece=last, final=chunk.final and last, sample_rate=sample_rate,
                n_samples=n, start_sample=out.sent,
                phonemes=tuple(syn.phonemes) if out.piece == 0 else (),
                word_anchors=tuple(syn.word_anchors) if out.piece == 0 else (),
                adapter=adapter.name, render_ms=round(syn.render_ms, 2), window_tokens=chunk.window_tokens,
                pcm=np.ascontiguousarray(syn.pcm[out.sent:out.sent + n]).tobytes(),
            )
            ctx.send_to("stitcher", message)
            ctx.emit("send", utterance_id=chunk.utterance_id, chunk_id=chunk.sequence_id, surface="tts->stitcher",
                     data={"piece": out.piece, "samples": n, "cost_ms": cost, "credit_left": stitcher_credit.available,
                           "unit": "ms", "last_piece": last})
            out.sent += n
            out.piece += 1
            if last:
                outgoing.popleft()
                ctx.grant("parser", "parser->tts", 1, "chunks")

    poller = zmq.Poller()
    poller.register(ctx.system, zmq.POLLIN)
    poller.register(ctx.inbox, zmq.POLLIN)
    poller.register(worker.wake, zmq.POLLIN)
    ctx.ready(describe(adapter, window_chunks))
    ctx.grant("parser", "parser->tts", window_chunks, "chunks")

    while ctx.running:
        poller.poll(ctx.poll_timeout_ms())
        for msg in ctx.system_messages():
            if isinstance(msg, BargeIn):
                start_epoch(msg.epoch, msg.reason)
            elif isinstance(msg, Shutdown):
                ctx.running = False
        for msg in ctx.drain(ctx.inbox):
            if getattr(msg, "epoch", ctx.epoch) > ctx.epoch:
                start_epoch(msg.epoch, f"{msg.TYPE} from newer epoch")
            if isinstance(msg, Credit):
                stitcher_credit.on_credit(msg)
            elif isinstance(msg, TextChunk):
                if msg.epoch < ctx.epoch:
                    ctx.emit("drop", "drop", utterance_id=msg.utterance_id, chunk_id=msg.sequence_id, epoch=msg.epoch)
                elif len(pending) + len(outgoing) + worker.busy >= window_chunks:
                    ctx.error("receive", "credit_exceeded", f"chunk {msg.sequence_id} beyond the granted window; dropped",
                              chunk_id=msg.sequence_id)
                else:
                    pending.append(msg)
        for chunk, result in worker.collect():
            if chunk.epoch < ctx.epoch:
                ctx.emit("synth", "drop", utterance_id=chunk.utterance_id, chunk_id=chunk.sequence_id, epoch=chunk.epoch)
                continue
            if isinstance(result, Exception):
                ctx.error("synth", "engine_error", f"{type(result).__name__}: {result}", utterance_id=chunk.utterance_id,
                          chunk_id=chunk.sequence_id)
                result = Synthesis(pcm=np.zeros(0, np.int16), sample_rate=sample_rate)
            audio_ms = result.duration_ms
            ctx.emit("synth", utterance_id=chunk.utterance_id, chunk_id=chunk.sequence_id, duration_ms=result.render_ms,
                     surface=adapter.name,
                     data={"chars": len(chunk.text), "audio_ms": round(audio_ms, 1), "adapter": adapter.name,
                           "rtf": round(result.render_ms / audio_ms, 4) if audio_ms else 0.0,
                           "window_tokens": chunk.window_tokens, "phonemes": len(result.phonemes)})
            outgoing.append(Outgoing(chunk, result))
        if not worker.busy and pending and len(outgoing) < 2:
            worker.submit(pending.popleft())
        send_pieces()
        ctx.heartbeat({"pending_chunks": len(pending), "outgoing_chunks": len(outgoing), "synthesizing": worker.busy,
                       "credit": {"stitcher_ms": stitcher_credit.available}})
    worker.close()


def describe(adapter: TTSAdapter, window_chunks: int) -> dict:
    return {
        "actor": NAME,
        "adapter": adapter.describe(),
        "consumes": ["text_chunk <- parser", "credit <- stitcher (ms)"],
        "produces": ["audio_chunk -> stitcher", "credit -> parser (chunks)"],
        "credit": {"grants": {"link": "parser->tts", "unit": "chunks", "window": window_chunks},
                   "spends": {"link": "tts->stitcher", "unit": "ms"}},
    }


def main() -> None:
    setup_logging(NAME)
    ctx = ActorContext(NAME)
    try:
        run(ctx)
    finally:
        ctx.close()
