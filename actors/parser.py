"""Parser actor: LLM tokens in, TextChunks to the TTS and VisualMarkers to the driver.

Ingress (PULL, bound on ``endpoints.ingress``) accepts tokens from any language; see
protocol/ingress.py. Chunks leave only against TTS credit (unit: chunks). When
``max_buffered_chunks`` are waiting, the parser stops reading the ingress, so the
sender's PUSH socket blocks at its high-water mark: memory stays bounded and no token
is dropped. Markers skip the queue: they go to the driver the moment they close.
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque

import zmq

from protocol import (
    ConfigUpdate,
    Credit,
    EpochRequest,
    IngressBargeIn,
    IngressEnd,
    IngressToken,
    ProtocolError,
    TextChunk,
    VisualMarker,
    parse_ingress,
)
from protocol.limits import INGRESS_MAX_BYTES, INGRESS_SOCKET_MAX_BYTES

from .runtime import ActorContext, CreditLedger, now_ns
from .config import apply_changes
from .stream_parser import ChunkPolicy, ParsedChunk, ParsedMarker, ParseError, StreamParser

NAME = "parser"
#: How long to wait for the supervisor to confirm a requested epoch before asking again.
EPOCH_REQUEST_RETRY_S = 0.5


def policy_from(config: dict, target_tokens: int = 0) -> ChunkPolicy:
    ctl = config["controller"]
    return ChunkPolicy(clause_first=ctl["first_fragment"] == "clause", min_words=int(ctl["min_first_words"]),
                       target_tokens=int(target_tokens) if ctl["enabled"] else 0)


def describe(config: dict) -> dict:
    return {
        "actor": NAME,
        "consumes": ["ingress: utf-8 token | {type: token|end|barge_in}"],
        "produces": ["text_chunk -> tts", "visual_marker -> driver"],
        "credit": {"link": "parser->tts", "unit": "chunks"},
        "limits": {
            "ingress_max_bytes": INGRESS_MAX_BYTES,
            "max_chunk_chars": config["parser"]["max_chunk_chars"],
            "max_buffered_chunks": config["parser"]["max_buffered_chunks"],
        },
    }


def run(ctx: ActorContext) -> None:
    cfg = ctx.config["parser"]
    max_buffered = int(cfg["max_buffered_chunks"])
    ingress = ctx.socket(zmq.PULL, max_bytes=INGRESS_SOCKET_MAX_BYTES, hwm=1000)
    ingress.bind(ctx.endpoints["ingress"])
    parser = StreamParser(max_chunk_chars=int(cfg["max_chunk_chars"]), policy=policy_from(ctx.config))
    tts_credit = CreditLedger("parser->tts", "chunks")
    outbox: deque[TextChunk] = deque()  # bounded by max_buffered: ingress is not read past it
    held_markers: list[ParsedMarker] = []  # only while a barge-in awaits its new epoch
    # What left recently, with when its text arrived: a barge-in from elsewhere (the control
    # endpoint) can reach us after text that was sent after it; that text must survive.
    recent_chunks: deque[tuple[int, TextChunk]] = deque(maxlen=64)
    recent_markers: deque[tuple[int, ParsedMarker]] = deque(maxlen=256)
    opened_at = {}  # sequence_id -> arrival of the chunk's first token, for chunks in the outbox
    utterance_id = 0
    barge_requested_at: float | None = None

    def publish(events: list, received_ns: int) -> None:
        for event in events:
            if isinstance(event, ParsedMarker):
                recent_markers.append((received_ns, event))
                if barge_requested_at is None:
                    send_marker(event)
                else:
                    held_markers.append(event)
            elif isinstance(event, ParsedChunk):
                opened_at[event.sequence_id] = event.opened_at_ns
                outbox.append(
                    TextChunk(
                        epoch=ctx.epoch, utterance_id=utterance_id, sequence_id=event.sequence_id,
                        text=event.text, boundary=event.boundary, final=event.final,
                        marker_count=event.marker_count, window_tokens=event.tokens,
                        closed_at_ns=event.closed_at_ns,
                    )
                )
                ctx.emit(
                    "parse", utterance_id=utterance_id, chunk_id=event.sequence_id,
                    duration_ms=(received_ns - event.closed_at_ns) / 1e6, surface="ingress",
                    data={"text": event.text, "boundary": event.boundary, "final": event.final,
                          "tokens": event.tokens, "markers": event.marker_count, "closed_at_ns": event.closed_at_ns,
                          "opened_at_ns": event.opened_at_ns,
                          "target_tokens": parser.policy.target_tokens},
                )
            elif isinstance(event, ParseError):
                ctx.error("parse", event.code, f"{event.detail}: {event.raw[:80]!r}", surface="ingress", utterance_id=utterance_id)

    def send_marker(m: ParsedMarker) -> None:
        marker = VisualMarker(
            epoch=ctx.epoch, utterance_id=utterance_id, sequence_id=m.sequence_id, command=m.command,
            value=m.value, timestamp_offset=float(m.offset), index_in_chunk=m.index_in_chunk,
        )
        ctx.send_to("driver", marker)
        ctx.emit("marker", utterance_id=utterance_id, chunk_id=m.sequence_id, surface="ingress",
                 data={"command": m.command, "value": m.value, "offset": m.offset})

    def on_ingress(frames: list[bytes]) -> None:
        nonlocal utterance_id, barge_requested_at
        received = now_ns()
        try:
            item = parse_ingress(frames)
        except ProtocolError as exc:
            ctx.error("ingress", exc.code, exc.detail, surface="ingress", utterance_id=utterance_id)
            return
        if isinstance(item, IngressToken):
            publish(parser.feed(item.text, received), received)
        elif isinstance(item, IngressEnd):
            publish(parser.end(received), received)
            ctx.emit("turn_end", utterance_id=utterance_id, surface="ingress")
            utterance_id += 1
        elif isinstance(item, IngressBargeIn):
            parser.reset()
            outbox.clear()
            held_markers.clear()
            recent_chunks.clear()
            recent_markers.clear()
            utterance_id += 1
            barge_requested_at = time.monotonic()
            ctx.request(EpochRequest(source=NAME, reason="ingress barge_in", requested_at_ns=received))

    def apply_config(update: ConfigUpdate) -> None:
        mine = {k: v for k, v in update.changes.items() if k.startswith("controller.")}
        if mine:
            apply_changes(ctx.config, mine)
            parser.policy = policy_from(ctx.config, parser.policy.target_tokens)
            ctx.emit("config", data={"version": update.version, "applied": mine, "at": "next character"})

    def enter_epoch(epoch: int, cause: str, issued_at_ns: int = 0) -> None:
        nonlocal barge_requested_at, utterance_id
        if not ctx.adopt_epoch(epoch, cause):
            return
        tts_credit.enter_epoch(epoch)
        if barge_requested_at is None:
            # Someone else interrupted. What arrived before the barge-in was issued is stale;
            # what arrived after it (it can overtake the broadcast) is the next utterance.
            fresh = lambda arrived: issued_at_ns and arrived >= issued_at_ns
            resend = [c for arrived, c in recent_chunks if fresh(arrived) and c.epoch < epoch]
            kept = [c for c in outbox if fresh(opened_at.get(c.sequence_id, 0))]
            outbox.clear()
            outbox.extend(sorted(resend + kept, key=lambda c: c.sequence_id))
            if not fresh(parser.opened_at_ns):
                parser.reset()
                if not outbox:
                    utterance_id += 1
            held_markers.extend(m for arrived, m in recent_markers if fresh(arrived))
            if resend or kept:
                ctx.emit("retag", data={"chunks": [c.sequence_id for c in outbox], "issued_at_ns": issued_at_ns})
        barge_requested_at = None
        # Chunks parsed while we waited for the epoch belong to the new one.
        for i, chunk in enumerate(outbox):
            outbox[i] = dataclasses.replace(chunk, epoch=epoch)
        for m in held_markers:
            send_marker(m)
        held_markers.clear()
        recent_chunks.clear()
        recent_markers.clear()

    poller = zmq.Poller()
    poller.register(ctx.system, zmq.POLLIN)
    poller.register(ctx.inbox, zmq.POLLIN)
    poller.register(ingress, zmq.POLLIN)
    ctx.ready(describe(ctx.config))

    while ctx.running:
        poller.modify(ingress, zmq.POLLIN if len(outbox) < max_buffered else 0)
        events = dict(poller.poll(ctx.poll_timeout_ms()))
        ctx.handle_system(enter_epoch, apply_config)  # system first: barge-in beats queued data
        for msg in ctx.drain(ctx.inbox):
            if isinstance(msg, Credit):
                if msg.epoch > ctx.epoch:
                    enter_epoch(msg.epoch, "credit from newer epoch", now_ns())
                tts_credit.on_credit(msg)
                if msg.epoch == ctx.epoch:  # the rate controller's wish for the next chunks
                    parser.policy = policy_from(ctx.config, msg.target_tokens)
        if events.get(ingress):
            for _ in range(256):
                if len(outbox) >= max_buffered:
                    break
                try:
                    frames = ingress.recv_multipart(flags=zmq.NOBLOCK)
                except zmq.Again:
                    break
                on_ingress(frames)
        if barge_requested_at is not None and time.monotonic() - barge_requested_at > EPOCH_REQUEST_RETRY_S:
            barge_requested_at = time.monotonic()
            ctx.request(EpochRequest(source=NAME, reason="ingress barge_in (retry)", requested_at_ns=now_ns()))
        while outbox and barge_requested_at is None and tts_credit.can_send(1):
            tts_credit.spend(1)
            chunk = outbox.popleft()
            recent_chunks.append((opened_at.pop(chunk.sequence_id, 0), chunk))
            ctx.send_to("tts", chunk)
            ctx.emit("send", utterance_id=chunk.utterance_id, chunk_id=chunk.sequence_id, surface="parser->tts",
                     data={"credit_left": tts_credit.available, "unit": "chunks", "cost": 1, "link": "parser->tts",
                           "queued": len(outbox)})
        ctx.heartbeat({"queued_chunks": len(outbox), "buffered_chars": parser.buffered_chars,
                       "credit": {"tts": tts_credit.available}, "utterance_id": utterance_id})
    ingress.close()
