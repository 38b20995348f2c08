"""TTS actor: TextChunks in, AudioChunks (int16 PCM + phoneme timing) out. The orchestrator.

Engines (``tts.adapters``) are loaded at start into an :class:`EnginePool`, each with its
own worker thread, so a stalled engine never blocks another; the pool picks the engine,
keeps the deadline and falls back. Config changes (engine, voice, fault injection,
controller) apply at the next chunk boundary.

Audio leaves against stitcher credit (ms), in pieces if the credit on hand is smaller
than the chunk. Chunks that have left return credit to the parser (:class:`ParserGrants`)
when the rate controller agrees; each grant carries its wish for the next chunk size.
Nothing on this path touches the disk.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from dataclasses import dataclass

import numpy as np

from protocol import AudioChunk, ConfigUpdate, Credit, Recovery, TextChunk
from protocol.flow import audio_cost_ms
from protocol.config import apply_changes

from persona.voice import VoiceSchemaError, load_voice, voice_dirs

from .adapters import Synthesis
from .adapters.fault import FaultInjector
from .engine_pool import Engine, EnginePool, Job
from .rate_controller import RateController
from .runtime import ActorContext, CreditLedger, grants_descriptor

NAME = "tts"
#: Pieces smaller than this wait for more credit (unless it is the chunk's remainder).
MIN_PIECE_MS = 120
#: How often the controller's wish is re-sent to the parser when it changed.
HINT_INTERVAL_S = 0.2
#: Synthesised chunks held in memory at once.
MAX_OUTGOING = 2
#: Audio kept after it left, so a crash rewind below sends it again instead of synthesising
#: it again (seconds; more than the stitcher, driver and player hold together).
RECENT_AUDIO_S = 60
RECENT_CHUNKS = 64


@dataclass
class Outgoing:
    """A synthesised chunk being sent in credit-sized pieces."""

    chunk: TextChunk
    synthesis: Synthesis
    adapter: str
    sent: int = 0
    piece: int = 0


class RecentSyntheses:
    """The chunks this epoch synthesised, newest last, bounded by audio length and count. A
    crash below the TTS rewinds the stream to a chunk that already left; its audio is here, so
    it is sent again at once and sample for sample (no second synthesis, which on a busy
    machine costs seconds and may not repeat an engine without a seed)."""

    def __init__(self, max_samples: int, max_chunks: int = RECENT_CHUNKS):
        self.max_samples, self.max_chunks = max_samples, max_chunks
        self.kept: OrderedDict[tuple[int, int], tuple[TextChunk, Synthesis, str, dict]] = OrderedDict()
        self.samples = 0

    def keep(self, chunk: TextChunk, synthesis: Synthesis, adapter: str, report: dict) -> None:
        key = (chunk.epoch, chunk.sequence_id)
        if key in self.kept:
            self.samples -= len(self.kept.pop(key)[1].pcm)
        self.kept[key] = (chunk, synthesis, adapter, report)
        self.samples += len(synthesis.pcm)
        while self.kept and (self.samples > self.max_samples or len(self.kept) > self.max_chunks):
            self.samples -= len(self.kept.popitem(last=False)[1][1].pcm)

    def find(self, chunk: TextChunk) -> tuple[Synthesis, str, dict] | None:
        """The audio made for this very chunk (same epoch, sequence and words), if still kept."""
        kept = self.kept.get((chunk.epoch, chunk.sequence_id))
        if kept is None or kept[0].text != chunk.text or kept[0].utterance_id != chunk.utterance_id:
            return None
        return kept[1], kept[2], kept[3]

    def clear(self) -> None:
        self.kept.clear()
        self.samples = 0


class ParserGrants:
    """Chunk credit back to the parser, in one place: what is owed goes back when the rate
    controller agrees (a *request*: the controller steps its ladder); otherwise only its
    wish is refreshed when it changed."""

    def __init__(self, ctx: ActorContext, controller: RateController):
        self.ctx, self.controller = ctx, controller
        self.owed = 0
        self.hint: tuple | None = None
        self.hint_sent_at = 0.0
        self.next_check = 0.0
        self.downstream_ms = 0.0  # audio ahead of presentation, as the stitcher last reported
        self.wait_ms = 0.0  # expected time until the synthesis under way lands (Tts.expected_wait_ms)

    def chunk_done(self) -> None:
        self.owed += 1

    def tick(self) -> None:
        """Each loop turn: return what is owed, or refresh the wish every HINT_INTERVAL_S."""
        now = time.monotonic()
        if self.owed or now >= self.next_check:
            self.next_check = now + HINT_INTERVAL_S
            self.send()

    def give_back(self, n: int) -> None:
        """Credit for chunks taken and dropped (a repeat after a recovery): back at once,
        with the current wish, without stepping the controller."""
        wish = self.controller.current(self.downstream_ms, self.wait_ms)
        self.ctx.grant("parser", n, target_tokens=wish.target_tokens, low_latency=wish.low_latency)

    def start_over(self, window: int, held: int = 0) -> None:
        """A reset grant: the parser (new, or sending again after a recovery) may send
        ``window - held`` chunks from now on; nothing is owed any more."""
        wish = self.controller.current(self.downstream_ms, self.wait_ms)
        self.owed = 0
        self.ctx.grant("parser", max(0, window - held), reset=True, target_tokens=wish.target_tokens,
                       low_latency=wish.low_latency)

    def send(self, extra: int = 0, force: bool = False) -> None:
        self.owed += extra
        now = time.monotonic()
        if self.owed:
            wish = self.controller.request(self.downstream_ms, self.wait_ms)
            amount = 0 if wish.skip and not force else self.owed
        else:
            wish, amount = self.controller.current(self.downstream_ms, self.wait_ms), 0
        hint = (wish.target_tokens, wish.low_latency)
        changed = hint != self.hint and now - self.hint_sent_at >= HINT_INTERVAL_S
        if not (amount or force or changed):
            return
        self.ctx.grant("parser", amount, target_tokens=wish.target_tokens, low_latency=wish.low_latency,
                       details={"target_tokens": wish.target_tokens, "low_latency": wish.low_latency,
                                "reason": wish.reason, "buffered_ms": self.downstream_ms,
                                "wait_ms": round(self.wait_ms)})
        self.owed -= amount
        self.hint, self.hint_sent_at = hint, now


class Tts:
    def __init__(self, ctx: ActorContext):
        self.ctx = ctx
        self.config = ctx.config
        self.window_chunks = int(self.config["flow"]["tts_window_chunks"])
        self.voice = load_voice(self.config["voice"]["persona"], voice_dirs(self.config))
        self.faults = FaultInjector(self.config["fault"])
        self.pool = EnginePool(ctx, self.voice, self.faults)
        self.controller = RateController(self.config["controller"])
        self.grants = ParserGrants(ctx, self.controller)
        self.stitcher_credit = CreditLedger(NAME, "stitcher")
        self.pending: deque[TextChunk] = deque()  # bounded by the window granted to the parser
        self.outgoing: deque[Outgoing] = deque()  # at most MAX_OUTGOING synthesised chunks in memory
        self.utterance: int | None = None
        self.first_waiting = False  # the utterance's first chunk has not started: a listener waits for it
        self.accepted_through = -1  # highest chunk taken this epoch: a repeat from a new parser is dropped
        self.paused = False  # a recovery below is under way: send no audio until it rewinds
        self.global_rate = int(self.config["media"]["sample_rate"])
        self.recent = RecentSyntheses(RECENT_AUDIO_S * self.global_rate)

    def describe(self) -> dict:
        return {
            "actor": NAME, "active": self.pool.active, "fallback": self.pool.fallback, "voice": self.voice.as_dict(),
            "adapters": self.pool.describe(self.voice), "fault": self.faults.snapshot(),
            "controller": self.controller.state(),
            "consumes": ["text_chunk <- parser", "credit <- stitcher (ms)"],
            "produces": ["audio_chunk -> stitcher", "credit -> parser (chunks, with size wish)"],
            "credit": {"grants": grants_descriptor("parser", NAME, self.window_chunks),
                       "spends": self.stitcher_credit.describe()},
        }

    def run(self) -> None:
        ctx = self.ctx
        poller = ctx.poller(*self.pool.wake_sockets())
        ctx.ready(self.describe())
        ctx.start_receiving(lambda: self.grants.start_over(self.window_chunks))
        while ctx.running:
            poller.poll(ctx.poll_timeout_ms(self.pool.deadline() or time.monotonic() + HINT_INTERVAL_S))
            ctx.receive(self)
            self.step()
            ctx.heartbeat(self.stats())
        self.pool.close()

    def stats(self) -> dict:
        job = self.pool.job
        return {"pending_chunks": len(self.pending), "outgoing_chunks": len(self.outgoing),
                "synthesizing": job.engine if job else None, "active": self.pool.active, "healthy": self.pool.health(),
                "credit": {"stitcher_ms": self.stitcher_credit.available, "owed_parser": self.grants.owed},
                "downstream_ms": self.grants.downstream_ms, "controller": self.controller.state()}

    def step(self) -> None:
        for engine, chunk, result in self.pool.results():
            self.on_result(engine, chunk, result)
        self.pool.check_deadline(self.voice)
        self.start_next()
        self.send_pieces()
        self.grants.wait_ms = self.expected_wait_ms()
        self.grants.tick()

    def expected_wait_ms(self) -> float:
        """How long until the chunk being synthesised lands, judged from the observed cost per
        token: 0 when audio is already made and waits for credit (the buffer is full)."""
        job = self.pool.job
        if job is None or self.outgoing:
            return 0.0
        elapsed_ms = (time.monotonic() - job.started) * 1000
        return max(0.0, self.controller.expected_cost_ms(job.chunk.window_tokens) - elapsed_ms)

    # -- handlers -------------------------------------------------------------------------------
    def on_epoch(self, epoch: int, cause: str, _issued_at_ns: int = 0) -> None:
        if self.ctx.adopt_epoch(epoch, cause):
            self.drop_all()
            self.recent.clear()  # a barge-in: nothing of the old epoch is spoken again
            self.accepted_through = -1
            self.stitcher_credit.enter_epoch(epoch)
            self.grants.send(self.window_chunks, force=True)

    def drop_all(self, keep_synthesis: bool = False) -> None:
        self.pending.clear()
        self.outgoing.clear()
        self.grants.owed, self.utterance = 0, None
        if not keep_synthesis:
            self.pool.cancel()
        self.controller.start_over()

    # -- crash recovery (actors.recovery) ------------------------------------------------------
    def held_chunks(self) -> int:
        job = self.pool.job
        return len(self.pending) + len(self.outgoing) + (job is not None and not job.rewound)

    def on_peer_down(self, recovery: Recovery) -> None:
        if recovery.actor == "stitcher":
            self.stitcher_credit.suspend()
        if NAME in recovery.scope and recovery.actor != NAME:
            self.paused = True  # below us: what we would send now is sent again after the rewind

    def on_peer_rejoined(self, recovery: Recovery) -> None:
        if recovery.actor == "parser":  # a new parser: it may send what we do not hold
            self.grants.start_over(self.window_chunks, self.held_chunks())

    def on_rewind(self, recovery: Recovery) -> None:
        """Drop everything; the parser sends again from the chunk the recovery names."""
        if NAME not in recovery.scope:
            return
        # The chunk being synthesised has not left yet, so the parser sends it again: let the
        # synthesis finish for it (cancelling would throw away the work the listener waits for).
        job = self.pool.job
        keep = job is not None and job.chunk.epoch == self.ctx.epoch
        if keep:
            job.rewound = True
        self.drop_all(keep_synthesis=keep)
        self.accepted_through = recovery.resume_chunk - 1 if recovery.resume_chunk >= 0 else -1
        if "stitcher" in recovery.scope:
            self.stitcher_credit.await_reset_after(recovery.recovery_id)  # it starts over too, and grants anew
        self.paused = False
        self.grants.start_over(self.window_chunks)

    def on_recovered(self, _recovery: Recovery) -> None:
        self.paused = False

    def refund(self, _producer: str, amount: int) -> None:
        """A refused chunk's credit goes back with the current wish (a bare grant would reset
        the parser's chunk size)."""
        self.grants.give_back(amount)

    def on_credit(self, credit: Credit) -> None:
        self.stitcher_credit.on_credit(credit)
        self.grants.downstream_ms = float(credit.depth)

    def on_text_chunk(self, chunk: TextChunk) -> None:
        if chunk.sequence_id <= self.accepted_through:
            # A new parser sends what its predecessor owned; this one we already have.
            self.ctx.emit("receive", "drop", utterance_id=chunk.utterance_id, chunk_id=chunk.sequence_id,
                          data={"why": "already taken", "accepted_through": self.accepted_through})
            self.grants.give_back(1)
        elif self.held_chunks() >= self.window_chunks:
            self.ctx.error("receive", "credit_exceeded", f"chunk {chunk.sequence_id} beyond the granted window; dropped",
                           chunk_id=chunk.sequence_id)
        else:
            self.accepted_through = max(self.accepted_through, chunk.sequence_id)
            self.pending.append(chunk)

    def on_config(self, update: ConfigUpdate) -> None:
        applied, refused = {}, {}
        for key, value in update.changes.items():
            if key == "tts.adapter" and value not in self.pool.engines:
                refused[key] = f"{value} is not loaded (tts.adapters)"
                continue
            if key == "voice.persona":
                try:
                    self.voice = load_voice(value, voice_dirs(self.config))
                except VoiceSchemaError as exc:
                    refused[key] = str(exc)
                    continue
            apply_changes(self.config, {key: value})
            applied[key] = value
            if key == "tts.adapter":
                self.pool.config_swap = True
        self.faults.update(self.config["fault"])
        self.controller.configure(self.config["controller"])
        self.ctx.emit("config", "ok" if not refused else "error",
                      data={"version": update.version, "applied": applied, "refused": refused, "at": "next chunk"})

    def on_result(self, engine: Engine, chunk: TextChunk, result: Synthesis | Exception) -> None:
        settled = self.pool.settle(engine, chunk, result, self.voice)
        if settled is None:
            return
        job, synthesis = settled
        self.controller.observe(synthesis.render_ms, synthesis.duration_ms, chunk.window_tokens)
        report = self.report_synthesis(engine.name, job, synthesis)
        if len(synthesis.pcm):  # swaps are about audio: an empty end-of-turn chunk changes nothing
            swap = self.pool.swap(engine.name, job)
            if swap:
                self.ctx.emit("swap", utterance_id=chunk.utterance_id, chunk_id=chunk.sequence_id,
                              data={"from": swap[0], "to": engine.name, "reason": swap[1]})
        self.recent.keep(chunk, synthesis, engine.name, report)
        if not job.rewound:  # else the chunk sent again after the rewind takes it (send_again)
            self.send_later(chunk, synthesis, engine.name)

    def send_later(self, chunk: TextChunk, synthesis: Synthesis, adapter: str) -> None:
        """Queue a chunk's audio for sending, from the sample a rewind resumes at (0 otherwise)."""
        skip = min(len(synthesis.pcm), chunk.resume_sample * synthesis.sample_rate // self.global_rate)
        self.outgoing.append(Outgoing(chunk, synthesis, adapter, sent=skip))

    # -- synthesis and sending ------------------------------------------------------------------
    def start_next(self) -> None:
        if not self.pending or len(self.outgoing) >= MAX_OUTGOING:
            return
        chunk = self.pending[0]
        if chunk.utterance_id != self.utterance:
            self.utterance = chunk.utterance_id
            self.controller.start_over()
            self.first_waiting = True
        # Kept audio goes out at once unless an earlier chunk is still being synthesised (it
        # would overtake it); a rewound synthesis is for this chunk or a later one.
        job = self.pool.job
        if (job is None or job.rewound) and self.send_again(chunk) \
                or job is None and self.pool.start(chunk, self.voice, urgent=self.first_waiting):
            self.pending.popleft()
            self.first_waiting = False

    def send_again(self, chunk: TextChunk) -> bool:
        """A chunk a crash rewind asks for again: its kept audio, if any, goes out as it was."""
        kept = self.recent.find(chunk)
        if kept is None:
            return False
        synthesis, adapter, report = kept
        self.ctx.emit("synth", "reused", utterance_id=chunk.utterance_id, chunk_id=chunk.sequence_id, surface=adapter,
                      data={**report, "resume_sample": chunk.resume_sample})
        self.send_later(chunk, synthesis, adapter)
        return True

    def report_synthesis(self, name: str, job: Job, result: Synthesis) -> dict:
        chunk = job.chunk
        data = {"chars": len(chunk.text), "audio_ms": round(result.duration_ms, 1), "adapter": name,
                "rtf": round(result.render_ms / result.duration_ms, 4) if result.duration_ms else 0.0,
                "window_tokens": chunk.window_tokens, "phonemes": len(result.phonemes), "lips": result.timing,
                "deadline_ms": round((job.deadline - job.started) * 1000, 1), "tried": job.tried,
                "voice": self.config["voice"]["persona"], "determinism": result.determinism,
                "seed": result.seed, "sample_rate": result.sample_rate, "samples": int(len(result.pcm))}
        self.ctx.emit("synth", utterance_id=chunk.utterance_id, chunk_id=chunk.sequence_id, duration_ms=result.render_ms,
                      surface=name, data=data)
        return data

    def send_pieces(self) -> None:
        while self.outgoing and not self.paused:
            out = self.outgoing[0]
            rate = out.synthesis.sample_rate
            remaining = len(out.synthesis.pcm) - out.sent
            n = min(remaining, self.stitcher_credit.available * rate // 1000)
            if remaining and n < min(remaining, MIN_PIECE_MS * rate // 1000):
                return
            self.send_piece(out, n)
            if out.sent >= len(out.synthesis.pcm):
                self.outgoing.popleft()
                self.grants.chunk_done()

    def send_piece(self, out: Outgoing, n: int) -> None:
        syn, chunk = out.synthesis, out.chunk
        spent = self.stitcher_credit.spend(audio_cost_ms(n, syn.sample_rate))
        last = out.sent + n >= len(syn.pcm)
        first = out.piece == 0
        self.ctx.send_to("stitcher", AudioChunk(
            epoch=self.ctx.epoch, utterance_id=chunk.utterance_id, sequence_id=chunk.sequence_id, piece=out.piece,
            last_piece=last, final=chunk.final and last, sample_rate=syn.sample_rate, n_samples=n, start_sample=out.sent,
            phonemes=tuple(syn.phonemes) if first else (), word_anchors=tuple(syn.word_anchors) if first else (),
            adapter=out.adapter, render_ms=round(syn.render_ms, 2), window_tokens=chunk.window_tokens,
            credit_of=self.stitcher_credit.token, pcm=np.ascontiguousarray(syn.pcm[out.sent:out.sent + n]).tobytes(),
        ))
        self.ctx.emit("send", utterance_id=chunk.utterance_id, chunk_id=chunk.sequence_id, surface=self.stitcher_credit.link,
                      data={"piece": out.piece, "samples": n, **spent, "last_piece": last, "adapter": out.adapter})
        out.sent += n
        out.piece += 1
