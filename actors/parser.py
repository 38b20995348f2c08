"""Parser actor: LLM tokens in, TextChunks to the TTS and VisualMarkers to the driver.

Ingress (PULL, bound on ``endpoints.ingress``) accepts tokens from any language; see
protocol/ingress.py. Chunks leave only against TTS credit (unit: chunks). When
``max_buffered_chunks`` are waiting, the parser stops reading the ingress, so the
sender's PUSH socket blocks at its high-water mark: memory stays bounded and no token
is dropped. Markers skip the queue: they go to the driver the moment they close.

The parser owns the text until it is heard (:class:`~actors.owned_text.OwnedText`): after
a crash below it sends again from where the recovery says; a replacement parser starts
from the supervisor's ledger (``Restore``) before it reads the ingress again.
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque

import zmq

from protocol import (ConfigUpdate, Credit, EpochRequest, Heard, IngressBargeIn, IngressEnd, IngressToken,
                      ProtocolError, Recovery, Restore, RestoreRequest, TextChunk, VisualMarker, parse_ingress)
from protocol.config import apply_changes
from protocol.ingress import LATEST_TURN, NO_TURN
from protocol.limits import (INGRESS_KERNEL_BUFFER_BYTES, INGRESS_MAX_BYTES, INGRESS_QUEUE_MESSAGES,
                             INGRESS_SOCKET_MAX_BYTES)

from .owned_text import OwnedText
from .runtime import ActorContext, CreditLedger, now_ns
from .stream_parser import ChunkPolicy, ParsedChunk, ParsedMarker, ParseError, StreamParser
from .turns import TurnGate

NAME = "parser"
#: How long to wait for the supervisor to confirm a requested epoch before asking again.
EPOCH_REQUEST_RETRY_S = 0.5
#: Ingress messages read per loop turn, so credit and the system channel are never starved.
INGRESS_BATCH = 256
#: How often a replacement parser asks the supervisor for the text its predecessor owned.
RESTORE_RETRY_S = 0.3
#: Ingress messages still queued at shutdown that are read (and counted as unspoken), at most.
CLOSE_DRAIN_MAX = 100_000


def policy_from(config: dict, target_tokens: int = 0) -> ChunkPolicy:
    ctl = config["controller"]
    return ChunkPolicy(clause_first=ctl["first_fragment"] == "clause", min_words=int(ctl["min_first_words"]),
                       target_tokens=int(target_tokens) if ctl["enabled"] else 0)


class Parser:
    def __init__(self, ctx: ActorContext):
        self.ctx = ctx
        cfg = ctx.config["parser"]
        self.max_buffered = int(cfg["max_buffered_chunks"])
        self.ingress = ctx.public_socket(zmq.PULL, "ingress", max_bytes=INGRESS_SOCKET_MAX_BYTES,
                                         hwm=INGRESS_QUEUE_MESSAGES, kernel_buffer=INGRESS_KERNEL_BUFFER_BYTES)
        self.stream = StreamParser(max_chunk_chars=int(cfg["max_chunk_chars"]), policy=policy_from(ctx.config))
        self.tts_credit = CreditLedger(NAME, "tts")
        self.outbox: deque[TextChunk] = deque()  # bounded by max_buffered: ingress is not read past it
        self.held_markers: list[ParsedMarker] = []  # only while a barge-in awaits its new epoch
        # What left recently, with its origin (turn, arrival of its text): a barge-in from elsewhere
        # (the control endpoint) can reach us after text of the next turn; that text must survive.
        self.recent_chunks: deque[tuple[tuple[int, int], TextChunk]] = deque(maxlen=64)
        self.recent_markers: deque[tuple[tuple[int, int], ParsedMarker]] = deque(maxlen=256)
        self.origin: dict[int, tuple[int, int]] = {}  # sequence_id -> (turn, first token's arrival), outbox chunks
        self.turns = TurnGate()
        self.interrupted_turn = -1  # set by a control barge-in's turn, read when its epoch comes
        self.turn_at_epoch = -1  # the latest turn when the current epoch was adopted
        self.utterance_id = 0
        self.barge_requested_at: float | None = None
        self.owned = OwnedText(ctx, self.journal_state)
        self.paused = False  # a recovery below is under way: send nothing until it rewinds
        self.restored = not ctx.rejoining  # a replacement reads no ingress before its Restore
        self.restore_asked_at = 0.0

    def journal_state(self) -> tuple[int, dict]:
        """What a replacement parser needs to go on: the utterance, the open text, the turns."""
        return self.utterance_id, {**self.stream.snapshot(), "turns": self.turns.snapshot()}

    def describe(self) -> dict:
        cfg = self.ctx.config["parser"]
        return {
            "actor": NAME,
            "consumes": ["ingress: utf-8 token | {type: token|end|barge_in}"],
            "produces": ["text_chunk -> tts", "visual_marker -> driver"],
            "credit": {"spends": self.tts_credit.describe()},
            "limits": {"ingress_max_bytes": INGRESS_MAX_BYTES, "max_chunk_chars": cfg["max_chunk_chars"],
                       "max_buffered_chunks": cfg["max_buffered_chunks"]},
        }

    def run(self) -> None:
        ctx = self.ctx
        poller = ctx.poller(self.ingress)
        ctx.ready(self.describe())
        while ctx.running:
            poller.modify(self.ingress, zmq.POLLIN if self.has_room() else 0)
            poller.poll(ctx.poll_timeout_ms())
            ctx.receive(self)  # system first: barge-in beats queued data
            self.read_ingress()
            self.step()
            ctx.heartbeat(self.stats())
        self.report_unspoken()
        self.ingress.close()

    def report_unspoken(self) -> None:
        """At shutdown: what was sent to us and will not be heard, counted for the sender (the
        timeline, and the last heartbeat the supervisor puts in its stop event)."""
        queued = 0
        for _ in range(CLOSE_DRAIN_MAX):
            try:
                self.ingress.recv(flags=zmq.NOBLOCK)
            except zmq.Again:
                break
            queued += 1
        chunks = list(self.owned.chunks) + list(self.outbox)
        unspoken = {"chunks": len(chunks), "chars": sum(len(c.text) for c in chunks) + self.stream.buffered_chars,
                    "queued_messages": queued}
        self.ctx.emit("left_unspoken", "drop" if any(unspoken.values()) else "ok", surface="ingress",
                      utterance_id=self.utterance_id, data=unspoken)
        self.ctx.heartbeat({**self.stats(), "unspoken": unspoken}, force=True)

    def stats(self) -> dict:
        return {"queued_chunks": len(self.outbox), "buffered_chars": self.stream.buffered_chars,
                "credit": {"tts": self.tts_credit.available}, "utterance_id": self.utterance_id}

    def has_room(self) -> bool:
        return self.restored and len(self.outbox) < self.max_buffered

    def read_ingress(self) -> None:
        for _ in range(INGRESS_BATCH):
            if not self.has_room():
                return
            try:
                frames = self.ingress.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            self.on_ingress(frames)

    def step(self) -> None:
        """Ask again for what the supervisor has not answered (an epoch, the owned text);
        send chunks against credit; journal what changed."""
        now = time.monotonic()
        if self.barge_requested_at is not None and now - self.barge_requested_at > EPOCH_REQUEST_RETRY_S:
            self.barge_requested_at = now
            self.ctx.request(EpochRequest(source=NAME, reason="ingress barge_in (retry)", requested_at_ns=now_ns()))
        if not self.restored and now - self.restore_asked_at > RESTORE_RETRY_S:
            self.restore_asked_at = now
            self.ctx.request(RestoreRequest(actor=NAME, pid=self.ctx.incarnation))
        while self.outbox and self.barge_requested_at is None and not self.paused and self.tts_credit.can_send(1):
            self.send_chunk(self.outbox.popleft())
        self.owned.flush()
        for dropped in self.turns.report(now):
            self.ctx.emit("ingress", "drop", surface="ingress", utterance_id=self.utterance_id,
                          data={"code": "turn_over", **dropped})

    def send_chunk(self, chunk: TextChunk) -> None:
        spent = self.tts_credit.spend(1)
        chunk = dataclasses.replace(chunk, credit_of=self.tts_credit.token)
        self.recent_chunks.append((self.origin.pop(chunk.sequence_id, (self.turns.latest, 0)), chunk))
        self.owned.sent(chunk)
        self.ctx.send_to("tts", chunk)
        self.ctx.emit("send", utterance_id=chunk.utterance_id, chunk_id=chunk.sequence_id, surface=self.tts_credit.link,
                      data={**spent, "queued": len(self.outbox),
                            **({"resume_sample": chunk.resume_sample} if chunk.resume_sample else {})})

    # -- handlers -------------------------------------------------------------------------------
    def on_ingress(self, frames: list[bytes]) -> None:
        received = now_ns()
        try:
            item = parse_ingress(frames)
        except ProtocolError as exc:
            self.ctx.error("ingress", exc.code, exc.detail, surface="ingress", utterance_id=self.utterance_id)
            return
        if isinstance(item, IngressBargeIn):
            self.on_ingress_barge_in(item.turn, received)
        elif not self.turns.admits(item.turn, len(getattr(item, "text", ""))):
            return  # of a turn that is over: counted, reported from step()
        elif isinstance(item, IngressToken):
            if item.removed:
                self.ctx.emit("ingress", "warn", surface="ingress", utterance_id=self.utterance_id,
                              data={"code": "control_characters", "removed": item.removed})
            self.publish(self.stream.feed(item.text, received), received)
        elif isinstance(item, IngressEnd):
            self.publish(self.stream.end(received), received)
            turn = self.turns.end(item.turn)
            self.ctx.emit("turn_end", utterance_id=self.utterance_id, surface="ingress", data={"turn": turn})
            self.utterance_id += 1
        self.owned.touch()
        self.owned.flush_if_large()

    def on_ingress_barge_in(self, turn: int, received: int) -> None:
        """Drop everything now and ask the supervisor for a new epoch; chunks wait until it comes.
        A barge-in naming a turn older than the latest one is stale (the next turn has begun)."""
        if turn != LATEST_TURN and turn < self.turns.latest:
            self.ctx.emit("ingress", "warn", surface="ingress", utterance_id=self.utterance_id,
                          data={"code": "stale_barge_in", "turn": turn, "latest": self.turns.latest})
            return
        self.turns.interrupt(turn)
        self.stream.reset()
        for pending in (self.outbox, self.held_markers, self.recent_chunks, self.recent_markers):
            pending.clear()
        self.utterance_id += 1
        self.barge_requested_at = time.monotonic()
        self.ctx.request(EpochRequest(source=NAME, reason="ingress barge_in", requested_at_ns=received))

    def on_credit(self, credit: Credit) -> None:
        self.tts_credit.on_credit(credit)
        if credit.epoch == self.ctx.epoch:  # the rate controller's wish for the next chunks
            self.stream.policy = policy_from(self.ctx.config, credit.target_tokens)

    def on_config(self, update: ConfigUpdate) -> None:
        mine = {k: v for k, v in update.changes.items() if k.startswith("controller.")}
        if mine:
            apply_changes(self.ctx.config, mine)
            self.stream.policy = policy_from(self.ctx.config, self.stream.policy.target_tokens)
            self.ctx.emit("config", data={"version": update.version, "applied": mine, "at": "next character"})

    def on_heard(self, heard: Heard) -> None:
        self.owned.heard(heard.epoch, heard.through_sequence)

    def on_restore(self, restore: Restore) -> None:
        """A replacement's start: the chunks its predecessor owned go out first (the TTS
        drops those it already has), then the stream parser continues where it was."""
        if self.restored:
            return
        if restore.epoch > self.ctx.epoch:  # a barge-in came while no parser was running
            self.on_epoch(restore.epoch, "restore")
        if restore.epoch < self.ctx.epoch:  # what it held was interrupted: nothing to send again
            restore = Restore(epoch=self.ctx.epoch, utterance_id=restore.utterance_id, last=restore.last)
        try:
            chunks = [TextChunk(**record) for record in restore.chunks]
            markers = [VisualMarker(**record) for record in restore.markers]
            for chunk in chunks:
                chunk.validate()
            if restore.last and restore.parser_state:
                self.stream.restore(restore.parser_state)
                if "turns" in restore.parser_state:
                    self.turns.restore(restore.parser_state["turns"])
        except (TypeError, ValueError) as exc:  # a damaged ledger entry: start clean, say so
            self.ctx.error("restore", "bad_restore", f"{type(exc).__name__}: {exc}")
            chunks, markers = [], []
        self.outbox.extend(dataclasses.replace(c, epoch=self.ctx.epoch, credit_of=0) for c in chunks)
        for marker in markers:
            self.send_marker_again(marker)
        if restore.last:
            self.utterance_id, self.restored = restore.utterance_id, True
            self.ctx.emit("restore", data={"chunks": [c.sequence_id for c in self.outbox],
                                           "open_text": self.stream.buffered_chars, "utterance_id": self.utterance_id})

    # -- crash recovery (actors.recovery) ------------------------------------------------------
    def on_peer_down(self, recovery: Recovery) -> None:
        if recovery.actor == NAME:
            return
        self.paused = True  # what it held is sent again at the rewind; nothing in between
        if recovery.actor == "tts":
            self.tts_credit.suspend()

    def on_peer_rejoined(self, recovery: Recovery) -> bool:
        return recovery.actor != NAME or self.restored  # a replacement answers once it has its text

    def on_rewind(self, recovery: Recovery) -> None:
        """Everything from the chunk the recovery names goes out again, before the queue. A
        replacement parser's own recovery has nothing to add: its Restore queued what its
        predecessor owned, and the TTS (not in that recovery) grants no fresh start."""
        if recovery.actor == NAME:
            self.paused = False
            return
        chunks, markers = self.owned.resend_from(recovery.resume_chunk, recovery.skip_samples)
        unsent = [c for c in self.outbox if c.sequence_id not in {r.sequence_id for r in chunks}]
        self.outbox.clear()
        self.outbox.extend(chunks + unsent)
        self.tts_credit.await_reset_after(recovery.recovery_id)  # the TTS starts over and grants anew
        for marker in markers:
            self.send_marker_again(marker)
        self.paused = False
        self.ctx.emit("resend", data={"chunks": [c.sequence_id for c in chunks], "from_chunk": recovery.resume_chunk,
                                      "skip_samples": recovery.skip_samples, "recovery": recovery.recovery_id})

    def on_recovered(self, _recovery: Recovery) -> None:
        self.paused = False

    def on_turn_over(self, turn: int, adopted: bool = False) -> None:
        """A barge-in from the control endpoint (before its epoch): that turn (-1: the latest) is
        over. An epoch that interrupts no turn (a restart, our own ingress barge-in, whose turn
        is already over) names NO_TURN."""
        if turn == NO_TURN or self.barge_requested_at is not None:
            return
        if not adopted:
            self.interrupted_turn = self.turns.interrupt(turn)
            return
        # The epoch came first, with the TTS's credit, and what was queued was judged by arrival;
        # now the turn is known: it is over, and what of it is still queued or parsing goes.
        over = self.turns.interrupt(self.turn_at_epoch if turn == LATEST_TURN else turn)
        stale = [c.sequence_id for c in self.outbox if self.origin.get(c.sequence_id, (-1, 0))[0] <= over]
        if stale:
            kept = [c for c in self.outbox if c.sequence_id not in stale]
            self.outbox.clear()
            self.outbox.extend(kept)
            for sequence_id in stale:
                self.origin.pop(sequence_id, None)
        parsing = self.turns.latest <= over and self.stream.buffered_chars > 0
        if parsing:
            self.stream.reset()
        if (stale or parsing) and not self.outbox:
            self.utterance_id += 1
        if stale or parsing:
            self.ctx.emit("retag", data={"dropped": stale, "turn_over": over, "late": True})

    def on_epoch(self, epoch: int, cause: str, issued_at_ns: int = 0) -> None:
        if not self.ctx.adopt_epoch(epoch, cause):
            return
        self.turn_at_epoch = self.turns.latest  # what "the latest turn" means for its barge-in
        self.owned.on_epoch(epoch)
        self.tts_credit.enter_epoch(epoch)
        if self.barge_requested_at is None:
            self.keep_what_overtook(epoch, issued_at_ns, self.interrupted_turn)
        self.interrupted_turn = -1
        self.barge_requested_at = None
        # Chunks parsed while we waited for the epoch belong to the new one.
        for i, chunk in enumerate(self.outbox):
            self.outbox[i] = dataclasses.replace(chunk, epoch=epoch)
            self.owned.closed(self.outbox[i])
        for marker in self.held_markers:
            self.send_marker(marker)
        self.held_markers.clear()
        self.recent_chunks.clear()
        self.recent_markers.clear()

    def keep_what_overtook(self, epoch: int, issued_at_ns: int, interrupted_turn: int = -1) -> None:
        """Someone else interrupted. Text of the interrupted turn is stale, text of a later turn
        is the next utterance. A sender that names no turns is judged by arrival: before the
        barge-in was issued is stale, after it (it can overtake the broadcast) is next."""
        def fresh(origin: tuple[int, int]) -> bool:
            turn, arrived = origin
            if interrupted_turn != -1:
                return turn > interrupted_turn
            return bool(issued_at_ns) and arrived >= issued_at_ns
        resend = [c for origin, c in self.recent_chunks if fresh(origin) and c.epoch < epoch]
        kept = [c for c in self.outbox if fresh(self.origin.get(c.sequence_id, (-1, 0)))]
        self.outbox.clear()
        self.outbox.extend(sorted(resend + kept, key=lambda c: c.sequence_id))
        if not fresh((self.turns.latest, self.stream.opened_at_ns)):
            self.stream.reset()
            if not self.outbox:
                self.utterance_id += 1
        self.held_markers.extend(m for origin, m in self.recent_markers if fresh(origin))
        if resend or kept:
            self.ctx.emit("retag", data={"chunks": [c.sequence_id for c in self.outbox], "issued_at_ns": issued_at_ns})

    # -- output ---------------------------------------------------------------------------------
    def publish(self, events: list, received_ns: int) -> None:
        for event in events:
            if isinstance(event, ParsedMarker):
                self.recent_markers.append(((self.turns.latest, received_ns), event))
                if self.barge_requested_at is None:
                    self.send_marker(event)
                else:
                    self.held_markers.append(event)
            elif isinstance(event, ParsedChunk):
                self.queue_chunk(event, received_ns)
            elif isinstance(event, ParseError):
                self.ctx.error("parse", event.code, f"{event.detail}: {event.raw[:80]!r}", surface="ingress",
                               utterance_id=self.utterance_id)

    def queue_chunk(self, event: ParsedChunk, received_ns: int) -> None:
        self.origin[event.sequence_id] = (self.turns.latest, event.opened_at_ns)
        chunk = TextChunk(
            epoch=self.ctx.epoch, utterance_id=self.utterance_id, sequence_id=event.sequence_id, text=event.text,
            boundary=event.boundary, final=event.final, marker_count=event.marker_count, window_tokens=event.tokens,
            closed_at_ns=event.closed_at_ns,
        )
        self.outbox.append(chunk)
        self.owned.closed(chunk)
        self.ctx.emit("parse", utterance_id=self.utterance_id, chunk_id=event.sequence_id,
                      duration_ms=(received_ns - event.closed_at_ns) / 1e6, surface="ingress",
                      data={"text": event.text, "boundary": event.boundary, "final": event.final, "tokens": event.tokens,
                            "markers": event.marker_count, "closed_at_ns": event.closed_at_ns,
                            "opened_at_ns": event.opened_at_ns, "target_tokens": self.stream.policy.target_tokens})

    def send_marker(self, m: ParsedMarker) -> None:
        marker = VisualMarker(
            epoch=self.ctx.epoch, utterance_id=self.utterance_id, sequence_id=m.sequence_id, command=m.command,
            value=m.value, timestamp_offset=float(m.offset), index_in_chunk=m.index_in_chunk,
        )
        self.owned.marker(marker)
        self.ctx.send_to("driver", marker)
        self.ctx.emit("marker", utterance_id=self.utterance_id, chunk_id=m.sequence_id, surface="ingress",
                      data={"command": m.command, "value": m.value, "offset": m.offset})

    def send_marker_again(self, marker: VisualMarker) -> None:
        """After a recovery: the driver keeps the first of each (chunk, index) and drops repeats."""
        marker = dataclasses.replace(marker, epoch=self.ctx.epoch)
        if not any(m.sequence_id == marker.sequence_id and m.index_in_chunk == marker.index_in_chunk
                   for m in self.owned.markers):
            self.owned.marker(marker)
        self.ctx.send_to("driver", marker)
