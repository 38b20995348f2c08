"""Client-side helpers: feed tokens, record the timeline, analyse a session.

These are what `personas feed`, `personas timeline`, `personas run` and the benchmarks
are built from; tests use them too (they are clients, not our actors).
"""

from __future__ import annotations

import json
import random
import re
import statistics
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Iterable

import msgpack
import numpy as np
import zmq

from protocol import AVPacket, ProtocolError, TimelineEvent, decode
from protocol.transport import make_socket

_PIECE = re.compile(r"<v:[^>]*>|\n|\s*[^\s<]+|\s+|<")


def tokenize_like_llm(text: str, seed: int = 0) -> list[str]:
    """Split text the way an LLM streams it: word pieces of 1-6 characters with the
    leading space attached, newlines alone, and markers cut into several tokens."""
    rng = random.Random(seed)
    tokens: list[str] = []
    for match in _PIECE.finditer(text):
        piece = match.group()
        if piece.startswith("<v:"):
            cuts = sorted(rng.sample(range(1, len(piece)), k=min(3, len(piece) - 1)))
            tokens += [piece[a:b] for a, b in zip([0, *cuts], [*cuts, len(piece)])]
            continue
        while piece:
            n = len(piece) if len(piece) <= 3 else rng.randint(2, 6)
            tokens.append(piece[:n])
            piece = piece[n:]
    return tokens


class Feeder:
    """PUSH tokens to the parser's ingress. Blocks when the pipeline applies backpressure."""

    def __init__(self, endpoint: str, ctx: zmq.Context | None = None):
        self.ctx = ctx or zmq.Context.instance()
        self.sock = make_socket(self.ctx, zmq.PUSH, hwm=1000, linger_ms=5000)
        self.sock.connect(endpoint)

    def token(self, text: str) -> None:
        self.sock.send(text.encode("utf-8"))

    def raw(self, frame: bytes) -> None:
        self.sock.send(frame)

    def control(self, kind: str, **fields) -> None:
        self.sock.send(msgpack.packb({"type": kind, **fields}, use_bin_type=True))

    def feed(self, tokens: Iterable[str], rate: float = 0.0, end: bool = True) -> int:
        """Send tokens at ``rate`` tokens/s (0 = as fast as the pipeline takes them)."""
        count = 0
        start = time.monotonic()
        for token in tokens:
            if rate > 0:
                delay = start + count / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            self.token(token)
            count += 1
        if end:
            self.control("end")
        return count

    def close(self) -> None:
        self.sock.close()


class TimelineRecorder:
    """Subscribes to the timeline in a thread; keeps events in memory and/or appends JSONL."""

    def __init__(self, endpoint: str, jsonl: str | Path | None = None, keep: bool = True):
        self.endpoint = endpoint
        self.events: list[dict] = []
        self.keep = keep
        self.errors = 0
        self._jsonl = open(jsonl, "a", encoding="utf-8") if jsonl else None
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._connected = threading.Event()
        self._thread = threading.Thread(target=self._run, name="timeline", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        ctx = zmq.Context.instance()
        sock = make_socket(ctx, zmq.SUB, hwm=1_000_000, linger_ms=0)
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

    def _record(self, record: dict) -> None:
        self._connected.set()
        if self._jsonl:
            self._jsonl.write(json.dumps(record, separators=(",", ":")) + "\n")
        with self._cond:
            if self.keep:
                self.events.append(record)
            self._cond.notify_all()

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
        if self._jsonl:
            self._jsonl.close()


class AVCollector:
    """Subscribes to the player's av_out PUB in a thread and keeps every packet it publishes.
    With ``idle_pixels=False`` idle/fill frames keep their audio but drop their pixels, so a
    long session stays modest in memory."""

    def __init__(self, endpoint: str, idle_pixels: bool = True):
        self.packets: list[AVPacket] = []
        self._idle_pixels = idle_pixels
        self._stop = threading.Event()
        self._ctx = zmq.Context()
        self._sock = make_socket(self._ctx, zmq.SUB, hwm=1_000_000, linger_ms=0)
        self._sock.setsockopt(zmq.SUBSCRIBE, b"")
        self._sock.connect(endpoint)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._sock.poll(100):
                msg = decode(self._sock.recv_multipart())
                if isinstance(msg, AVPacket):
                    if not self._idle_pixels and msg.kind != "speech":
                        msg = AVPacket(**{**msg.__dict__, "pixels": b""})
                    self.packets.append(msg)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sock.close()
        self._ctx.term()

    def speech(self, utterance_id: int, epoch: int) -> list[AVPacket]:
        return sorted((p for p in self.packets if p.kind == "speech" and p.utterance_id == utterance_id and p.epoch == epoch),
                      key=lambda p: p.frame_index)

    def audio(self) -> np.ndarray:
        """Everything heard, in presentation order, as int16 PCM."""
        return np.concatenate([np.frombuffer(p.pcm, np.int16) for p in self.packets]) if self.packets else np.zeros(0, np.int16)

    @staticmethod
    def image(packet: AVPacket) -> np.ndarray:
        return np.frombuffer(packet.pixels, np.uint8).reshape(packet.height, packet.width, 3)


def load_jsonl(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# -- analysis ---------------------------------------------------------------------------------------
SENTENCE_BOUNDARIES = (".", "?", "!", "\n", "clause", "limit")


def ttff_by_chunk(events: list[dict]) -> list[dict]:
    """Per chunk closed by a sentence boundary: closing token -> first frame generated by the
    driver, and -> first frame presented by the player (ms). Keyed by (epoch, chunk id)."""
    closed: dict[tuple, dict] = {}
    generated: dict[tuple, int] = {}
    presented: dict[tuple, int] = {}
    for e in events:
        key = (e["epoch"], e["chunk_id"])
        if e["actor"] == "parser" and e["stage"] == "parse" and e["result"] == "ok":
            closed[key] = e
        elif e["actor"] == "driver" and e["stage"] == "first_frame":
            generated.setdefault(key, e["ts_ns"])
        elif e["actor"] == "player" and e["stage"] == "present" and e["result"] == "ok" and e["chunk_id"] >= 0:
            presented.setdefault((e["epoch"], e["chunk_id"]), e["ts_ns"])
    rows = []
    for key, e in closed.items():
        data = e["data"]
        if data.get("boundary") not in SENTENCE_BOUNDARIES or not data.get("text", "").strip():
            continue
        origin = data["closed_at_ns"]
        rows.append({
            "epoch": key[0], "chunk_id": key[1], "utterance_id": e["utterance_id"], "text": data["text"].strip(),
            "generated_ms": round((generated[key] - origin) / 1e6, 1) if key in generated else None,
            "presented_ms": round((presented[key] - origin) / 1e6, 1) if key in presented else None,
        })
    return sorted(rows, key=lambda r: (r["epoch"], r["chunk_id"]))


def utterance_ttff(events: list[dict], utterance_id: int, epoch: int) -> dict:
    """One utterance: its first token, its first sentence end, its first speech frame generated
    by the driver and presented by the player (CLOCK_MONOTONIC ns, and ms between them)."""
    mine = [e for e in events if e["utterance_id"] == utterance_id and e["epoch"] == epoch]
    chunks = sorted((e for e in mine if e["actor"] == "parser" and e["stage"] == "parse" and e["result"] == "ok"
                     and e["data"]["text"].strip()), key=lambda e: e["chunk_id"])
    if not chunks:
        return {}
    first_token = min(e["data"].get("opened_at_ns") or e["data"]["closed_at_ns"] for e in chunks)
    sentence = next((e for e in chunks if e["data"]["boundary"] in (".", "?", "!", "\n", "end")), chunks[-1])
    generated = min((e["ts_ns"] for e in mine if e["actor"] == "driver" and e["stage"] == "first_frame"), default=None)
    presented = min((e["ts_ns"] for e in mine if e["actor"] == "player" and e["stage"] == "present"
                     and e["result"] == "ok" and e["data"].get("kind") == "speech"), default=None)
    ms = lambda a, b: round((a - b) / 1e6, 1) if a is not None and b is not None else None
    return {
        "generated_from_first_chunk_ms": ms(generated, chunks[0]["data"]["closed_at_ns"]),
        "first_chunk": chunks[0]["data"]["text"].strip(), "first_chunk_boundary": chunks[0]["data"]["boundary"],
        "first_sentence_end_ns": sentence["data"]["closed_at_ns"], "first_token_ns": first_token,
        "generated_ms": ms(generated, sentence["data"]["closed_at_ns"]),
        "presented_ms": ms(presented, sentence["data"]["closed_at_ns"]),
        "generated_from_first_token_ms": ms(generated, first_token),
        "presented_from_first_token_ms": ms(presented, first_token),
    }


def stage_durations(events: list[dict]) -> dict[tuple, dict[str, float]]:
    """For each (epoch, chunk): every stage from parser to player with its duration (ms)."""
    stages: dict[tuple, dict[str, float]] = defaultdict(dict)
    for e in events:
        if e["chunk_id"] < 0 or e["result"] != "ok":
            continue
        key = (e["epoch"], e["chunk_id"])
        name = f'{e["actor"]}.{e["stage"]}'
        if name in ("parser.parse", "tts.synth", "stitcher.stitch", "driver.first_frame", "driver.render", "player.present"):
            stages[key].setdefault(name, e["duration_ms"])
    return dict(stages)


def summarize(values: list[float]) -> dict:
    values = sorted(v for v in values if v is not None)
    if not values:
        return {"n": 0}
    p95 = values[min(len(values) - 1, int(round(0.95 * (len(values) - 1))))]
    return {"n": len(values), "median": round(statistics.median(values), 1), "p95": round(p95, 1),
            "min": round(values[0], 1), "max": round(values[-1], 1)}


def credit_audit(events: list[dict]) -> dict[tuple[str, int], dict]:
    """Replay every credit link from the timeline: per (link, epoch), at every send the
    cumulative cost must not exceed the cumulative grants seen before it.
    Returns {(link, epoch): {"granted", "spent", "overdrafts": [...]}}."""
    ledgers: dict[tuple[str, int], dict] = defaultdict(lambda: {"granted": 0, "spent": 0, "overdrafts": []})
    for e in sorted(events, key=lambda e: e["ts_ns"]):
        data = e["data"] or {}
        link = data.get("link")
        if not link or e["result"] != "ok":
            continue
        ledger = ledgers[(link, e["epoch"])]
        if e["stage"] == "credit":
            ledger["granted"] += int(data.get("amount", 0))
        elif "cost" in data:
            ledger["spent"] += int(data["cost"])
            if ledger["spent"] > ledger["granted"]:
                ledger["overdrafts"].append({"ts_ns": e["ts_ns"], "spent": ledger["spent"], "granted": ledger["granted"]})
    return dict(ledgers)
