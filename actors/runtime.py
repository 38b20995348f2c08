"""What every actor shares: the epoch, the timeline, credit, and the path a message takes
before its handler sees it. Each actor's own module holds one class with its loop; this
module keeps the plumbing out of it.

:class:`ActorContext` is that shared part, with no sockets. :class:`ProcessContext` adds
the sockets of a real actor process; ``actors.testing.RecordingContext`` records instead,
so an actor class can be driven in-process by a unit test. Socket layout of a process:

    inbox     PULL bind   data and credits addressed to this actor
    system    SUB  conn   barge-in epochs, config, describe and shutdown (polled first)
    timeline  XPUB conn   TimelineEvent, to the supervisor's XSUB proxy
    health    PUSH conn   Ready, Heartbeat, Info, EpochAck, EpochRequest to the supervisor
    peers     PUSH conn   one per actor this one sends to

An actor object provides ``describe()`` and ``on_epoch(epoch, cause, issued_at_ns)``, a
handler ``on_<message type>`` for each message it takes (``on_credit``,
``on_audio_chunk``, ...) and, if it takes live config, ``on_config(update)``. For crash
recovery (``actors.recovery``) it may provide ``on_peer_down``, ``on_peer_rejoined``,
``on_rewind`` and ``on_recovered``, each given the supervisor's Recovery message.
"""

from __future__ import annotations

import ctypes
import logging
import os
import secrets
import signal
import sys
import time
from abc import ABC, abstractmethod
from typing import Any

import zmq

from protocol import (BargeIn, ConfigUpdate, Credit, Describe, EpochAck, Heartbeat, Info, Message, ProtocolError,
                      Ready, Recovery, Shutdown, TakeOver, TimelineEvent)
from protocol.config import from_env
from protocol.envelope import brief
from protocol.flow import refund_of
from protocol.names import CREDIT_LINKS, EPOCH_CARRIERS, LINK_MESSAGES, credit_unit, link_name
from protocol.security import CurveServer, curve_dir
from protocol.transport import make_socket, recv, send

from .recovery import RecoveryRole

#: Hard bound on messages drained from one socket per loop turn, so no socket starves the others.
DRAIN_LIMIT = 256
#: Log lines per error code and second; the timeline still gets every refusal.
LOG_BURST = 5
#: How long an actor waits at start for the timeline proxy's subscription.
SUBSCRIPTION_WAIT_MS = 5000
#: How long READY may wait for room on the health channel (it must not be lost).
READY_SEND_TIMEOUT_MS = 5000
#: Journal messages queued for the supervisor's ledger before one is refused (with an error).
LEDGER_HWM = 10_000
#: How long a spare keeps trying to bind the inbox of the process it replaces.
TAKE_OVER_BIND_S = 2.0


def now_ns() -> int:
    """CLOCK_MONOTONIC in ns: comparable across every process on the host."""
    return time.monotonic_ns()


class CreditLedger:
    """Producer side of one credit link: how much we may still send this epoch, granted by
    which incarnation of the consumer (``token``, carried as ``credit_of`` by what we send)."""

    def __init__(self, producer: str, consumer: str):
        self.link = link_name(producer, consumer)
        self.unit = credit_unit(producer, consumer)
        self.epoch = 0
        self.available = 0
        self.depth = 0
        self.playing = False
        self.position = -1
        self.spent_total = 0
        self.token = 0  # the consumer's grant token; 0 until its first reset grant
        self.suspended = False  # the consumer died: nothing until its replacement's reset grant
        self.reset_recovery = 0  # the consumer's recovery_id on the last reset taken
        self.min_reset = 0  # resets from before this recovery's rewind are not taken

    def on_credit(self, credit: Credit) -> None:
        if credit.reset:
            if credit.epoch >= self.epoch and credit.recovery_id >= self.min_reset:
                self.epoch, self.available, self.token, self.suspended = credit.epoch, credit.amount, credit.grantor, False
                self.depth, self.playing, self.position = credit.depth, credit.playing, credit.position
                self.reset_recovery = credit.recovery_id
            return
        if self.suspended or credit.grantor != self.token:
            return  # granted by a consumer process that has since been replaced
        if credit.epoch > self.epoch:
            self.epoch, self.available = credit.epoch, 0
        if credit.epoch == self.epoch:
            self.available += credit.amount
            self.depth, self.playing = credit.depth, credit.playing
            if credit.position >= 0:
                self.position = credit.position

    def enter_epoch(self, epoch: int) -> None:
        if epoch > self.epoch:
            self.epoch, self.available = epoch, 0

    def suspend(self) -> None:
        """The consumer is gone: spend nothing until it (its replacement) grants anew."""
        self.available, self.suspended = 0, True

    def await_reset_after(self, recovery_id: int) -> None:
        """The consumer starts over in this recovery's rewind: spend only a grant made after
        it (it may have come already: messages on two channels race)."""
        self.min_reset = recovery_id
        if self.reset_recovery < recovery_id:
            self.suspend()

    def can_send(self, cost: int) -> bool:
        return self.available >= cost

    def spend(self, cost: int) -> dict:
        """Take ``cost`` off the credit; returns the figures every send event carries (the
        credit audit replays links from them)."""
        if cost > self.available:
            raise RuntimeError(f"{self.link}: sending {cost} {self.unit} with only {self.available} credit")
        self.available -= cost
        self.spent_total += cost
        return {"link": self.link, "unit": self.unit, "cost": cost, "credit_left": self.available}

    def describe(self) -> dict:
        return {"link": self.link, "unit": self.unit}


def grants_descriptor(producer: str, consumer: str, window: int) -> dict:
    """What a consumer's describe() says about the credit it grants."""
    return {"link": link_name(producer, consumer), "unit": credit_unit(producer, consumer), "window": window}

class ActorContext(ABC):
    """Identity, epoch, timeline and message delivery of one actor, without sockets."""

    def __init__(self, name: str, config: dict, epoch: int = 0, config_version: int = 0):
        self.name = name
        self.config = config
        self.endpoints = config["endpoints"]
        self.log = logging.getLogger(f"personas.{name}")
        self.epoch = epoch  # a restarted actor joins the current epoch
        self.turn_over_epoch = epoch  # the last barge-in whose turn the actor was told (on_turn_over)
        self.config_version = config_version
        self.running = True
        self.info: dict = {"actor": name, "state": "starting"}
        self.dropped_stale = 0
        self._stale_reported: set[tuple[str, int]] = set()
        self.incarnation = os.getpid()
        # A replacement for a process that died takes no data until the recovery has told
        # it where the timeline continues (then it grants its producer, see start_receiving).
        self.rejoining = os.environ.get("PERSONAS_RESTART") == "1"
        self.dropped_rejoining = 0
        self._on_receiving: list = []
        self._granted_while_rejoining = False
        self._grant_tokens: dict[str, int] = {}  # producer -> the token of our current grant to it
        self.refused: list[dict] = []  # headers of data messages refused this turn (their credit goes back)
        self._log_budget: dict[str, tuple[float, int, int]] = {}  # error code -> (second, logged, skipped)
        self.curve: CurveServer | None = None  # created with the first public socket, if CURVE is on
        self.recovery = RecoveryRole(self)

    # -- what a subclass provides ----------------------------------------------------------------
    @abstractmethod
    def send_to(self, name: str, msg: Message) -> bool:
        """Non-blocking send to a peer's inbox; False if it could not be queued."""

    @abstractmethod
    def request(self, msg: Message, must_arrive: bool = False) -> None:
        """A message to the supervisor (health channel); with ``must_arrive`` it may wait
        (bounded) for room instead of being dropped."""

    @abstractmethod
    def journal(self, msg: Message) -> bool:
        """A message to the supervisor's text ledger (never dropped while it keeps up)."""

    @abstractmethod
    def publish(self, event: TimelineEvent) -> None:
        """Put one event on the timeline (never blocks)."""

    @abstractmethod
    def system_messages(self) -> list[Message]:
        """What the system channel brought since the last call."""

    @abstractmethod
    def inbox_messages(self) -> list[Message]:
        """What the inbox holds now (bounded per call)."""

    @abstractmethod
    def heartbeat(self, stats: dict, force: bool = False) -> None:
        """Called every loop turn: report liveness and ``stats`` when a beat is due (or now)."""

    def public_socket(self, kind: int, endpoint_name: str, **kwargs: Any) -> zmq.Socket:
        """A socket bound on a public endpoint: a CURVE server when ``security.curve_dir`` is
        set (one ZAP handler per process; its refusals go on the timeline with the beats)."""
        sock = self.socket(kind, **kwargs)
        if curve_dir(self.config) is not None:
            if self.curve is None:
                self.curve = CurveServer(self.zmq, self.config)
            self.curve.secure(sock)
        sock.bind(self.endpoints[endpoint_name])
        return sock

    def ready(self, info: dict) -> None:
        """Announce READY with the actor's descriptor."""
        self.info = info
        self.request(Ready(actor=self.name, pid=os.getpid(), info=info), must_arrive=True)
        self.emit("ready", data=info)
        self.log.info("ready")

    # -- the path of every message: system first, then the inbox ---------------------------------
    def receive(self, actor: Any) -> None:
        """One turn's input for ``actor``: the system channel (barge-ins beat queued data),
        then each inbox message through :meth:`deliver`; then credit back for any data
        message refused on the way (it spent its producer's credit)."""
        for msg in self.system_messages():
            self.on_system(actor, msg)
        for msg in self.inbox_messages():
            self.deliver(actor, msg)
        refused, self.refused = self.refused, []
        for header in refused:
            self.refund(actor, header)

    def refund(self, actor: Any, header: dict) -> None:
        """Give back what a refused data message spent, if it spent our current grant (a
        forged or stale one never adds credit). The actor may do it itself (``refund``)."""
        kind = header.get("type")
        producer = LINK_MESSAGES.get(kind) if isinstance(kind, str) else None
        if producer is None or link_name(producer, self.name) not in CREDIT_LINKS:
            return  # not data of a link into this actor: it spent nobody's credit here
        token = self._grant_tokens.get(producer)
        if token is None or header.get("credit_of") != token:
            return
        amount = refund_of(header)
        if amount <= 0:
            return
        self.emit("refund", surface=link_name(producer, self.name), data={"type": header["type"], "amount": amount})
        if hasattr(actor, "refund"):
            actor.refund(producer, amount)
        else:
            self.grant(producer, amount)

    def on_system(self, actor: Any, msg: Message) -> None:
        if isinstance(msg, BargeIn):
            if msg.epoch > self.turn_over_epoch and hasattr(actor, "on_turn_over"):
                # Once per barge-in (it is re-broadcast until acknowledged); "adopted": credit or
                # data of the new epoch overtook the broadcast, and the epoch is ours already.
                self.turn_over_epoch = msg.epoch
                actor.on_turn_over(msg.turn, adopted=msg.epoch <= self.epoch)
            actor.on_epoch(msg.epoch, msg.reason, msg.issued_at_ns)
        elif isinstance(msg, ConfigUpdate):
            if msg.version > self.config_version:
                self.config_version = msg.version
                if hasattr(actor, "on_config"):
                    actor.on_config(msg)
        elif isinstance(msg, Describe):
            self.info = actor.describe()
            self.request(Info(actor=self.name, pid=os.getpid(), request_id=msg.request_id, info=self.info))
        elif isinstance(msg, Recovery):
            self.recovery.on_recovery(actor, msg)
        elif isinstance(msg, Shutdown):
            self.running = False

    def deliver(self, actor: Any, msg: Message) -> None:
        """A newer epoch is adopted first (from the media path's messages only: data and
        credit can overtake the barge-in broadcast, nothing else may start an epoch); data of
        an older epoch is dropped (credit of an older epoch silently: it is already void); the
        rest goes to ``actor.on_<type>``."""
        handler = getattr(actor, f"on_{msg.TYPE}", None)
        if handler is None:  # before anything else: a message we do not take changes nothing
            self.error("receive", "unexpected_type", f"{self.name} does not take {msg.TYPE} messages")
            return
        epoch = getattr(msg, "epoch", None)
        if epoch is not None and epoch > self.epoch:
            if msg.TYPE not in EPOCH_CARRIERS:  # only the media path may be ahead of the broadcast
                self.error("receive", "future_epoch", f"{msg.TYPE} of epoch {epoch}, ours is {self.epoch}")
                return
            actor.on_epoch(epoch, f"{msg.TYPE} from newer epoch", now_ns())
        if epoch is not None and epoch < self.epoch:
            if not isinstance(msg, Credit):
                self.dropped_stale += 1
                self.report_stale(msg, epoch)
            return
        producer = LINK_MESSAGES.get(msg.TYPE)
        if producer is not None and not self.spent_our_grant(msg, producer):
            return
        try:
            handler(msg)
        except Exception as exc:  # one bad message must not take the actor down: refused, said, refunded
            self.log.exception("%s handler failed", msg.TYPE)
            self.error("receive", "handler_failed", f"{msg.TYPE}: {type(exc).__name__}: {brief(exc)}",
                       chunk_id=getattr(msg, "sequence_id", -1))
            if producer is not None:
                self.refused.append({"type": msg.TYPE, "credit_of": getattr(msg, "credit_of", 0),
                                     **{k: getattr(msg, k, None) for k in ("n_frames", "n_samples", "sample_rate")}})

    def spent_our_grant(self, msg: Message, producer: str) -> bool:
        """Data is taken only if it spent this process's current grant: not while a
        replacement waits for its recovery, not what was sent to a process that died
        (``credit_of`` 0 comes from test harnesses that do not track grants)."""
        if self.rejoining:
            self.dropped_rejoining += 1
            return False
        token = getattr(msg, "credit_of", 0)
        if token and token != self._grant_tokens.get(producer):
            self.dropped_stale += 1
            self.report_stale(msg, self.epoch, token)
            return False
        return True

    def start_receiving(self, first_grant) -> None:
        """Call ``first_grant`` now, or, in a replacement, once its recovery has placed it
        (unless the recovery's rewind has granted already: a second reset would void what
        the producer sent against the first)."""
        if self.rejoining:
            self._on_receiving.append(first_grant)
        else:
            first_grant()

    def stop_rejoining(self) -> None:
        if self.rejoining:
            self.rejoining = False
            callbacks, self._on_receiving = self._on_receiving, []
            if not self._granted_while_rejoining:
                for callback in callbacks:
                    callback()

    def report_stale(self, msg: Message, epoch: int, token: int = 0) -> None:
        """The first stale message of each type and epoch (or replaced grant) goes on the
        timeline; the rest are counted (``dropped_stale`` in heartbeats), so a flushed window
        costs one event, not fifty."""
        key = (msg.TYPE, epoch, token)
        if key in self._stale_reported:
            return
        if len(self._stale_reported) > 256:
            self._stale_reported.clear()
        self._stale_reported.add(key)
        why = {"why": "spent a grant of a replaced process"} if token else {"first_of_epoch": True}
        self.emit("stale", "drop", epoch=epoch, utterance_id=getattr(msg, "utterance_id", -1),
                  chunk_id=getattr(msg, "sequence_id", -1), data={"type": msg.TYPE, **why})

    def adopt_epoch(self, epoch: int, cause: str) -> bool:
        """Move to a newer epoch; True if it changed. Acknowledged to the supervisor (health
        channel) and on the timeline."""
        if epoch <= self.epoch:
            return False
        previous, self.epoch = self.epoch, epoch
        self.request(EpochAck(actor=self.name, pid=os.getpid(), epoch=epoch))
        self.emit("barge_in", data={"ack": True, "from_epoch": previous, "cause": cause})
        return True

    # -- credit ---------------------------------------------------------------------------------
    def grant(self, producer: str, amount: int, *, depth: int = 0, playing: bool = False, target_tokens: int = 0,
              low_latency: bool = False, details: dict | None = None, reset: bool = False, position: int = -1) -> None:
        """Give ``producer`` credit on its link to us. With ``reset`` (always for the first
        grant) ``amount`` is the whole credit it now has from us, under a new token: what
        it sent against an older grant is no longer taken. Grants go on the timeline (so
        anyone can audit that no producer ever overspends), and so does any credit sent
        with ``details`` (the TTS's size wishes); depth-only updates do not."""
        link, unit = link_name(producer, self.name), credit_unit(producer, self.name)
        if reset or producer not in self._grant_tokens:
            reset = True
            self._grant_tokens[producer] = secrets.randbits(62) + 1
            self._granted_while_rejoining |= self.rejoining
        if amount > 0 or details is not None or reset:  # stamped before it is sent: the spend can only come later
            self.emit("credit", surface=link, data={"link": link, "amount": amount, "unit": unit, "depth": depth,
                                                    **({"reset": True} if reset else {}), **(details or {})})
        self.send_to(producer, Credit(link=link, epoch=self.epoch, amount=amount, unit=unit, depth=depth, playing=playing,
                                      target_tokens=target_tokens, low_latency=low_latency, reset=reset,
                                      grantor=self._grant_tokens[producer], position=position,
                                      recovery_id=self.recovery.rewound))

    # -- timeline -------------------------------------------------------------------------------
    def emit(self, stage: str, result: str = "ok", *, duration_ms: float = 0.0, surface: str = "",
             utterance_id: int = -1, chunk_id: int = -1, frame: int = -1, epoch: int | None = None,
             data: dict | None = None, ts_ns: int | None = None) -> None:
        self.publish(TimelineEvent(
            stage=stage, actor=self.name, result=result, ts_ns=now_ns() if ts_ns is None else ts_ns,
            duration_ms=float(duration_ms), surface=surface, epoch=self.epoch if epoch is None else epoch,
            utterance_id=utterance_id, chunk_id=chunk_id, frame=frame, data=data or {},
        ))

    def error(self, stage: str, code: str, detail: str, *, surface: str = "", **ids: Any) -> None:
        """A refusal: on the timeline always; in the log too, at most LOG_BURST lines per
        code and second (a flood of garbage must not become a flood of disk writes), with
        the count of the ones left out."""
        now = time.monotonic()
        second, logged, skipped = self._log_budget.get(code, (0.0, 0, 0))
        if now - second >= 1.0:
            if skipped:
                self.log.warning("%s: %d more like it in the last second (not logged)", code, skipped)
            second, logged, skipped = now, 0, 0
        if logged < LOG_BURST:
            self.log.warning("%s: %s: %s", stage, code, detail[:500])
            logged += 1
        else:
            skipped += 1
        self._log_budget[code] = (second, logged, skipped)
        self.emit(stage, "error", surface=surface, data={"code": code, "detail": detail[:500]}, **ids)


class ProcessContext(ActorContext):
    """The sockets of one real actor process (see the module docstring for the layout)."""

    def __init__(self, name: str, config: dict | None = None):
        config = config if config is not None else from_env()
        super().__init__(name, config, epoch=int(os.environ.get("PERSONAS_EPOCH", "0")),
                         config_version=int(os.environ.get("PERSONAS_CONFIG_VERSION", "0")))
        self._linger = int(self.config["supervisor"]["linger_ms"])
        # Before any thread starts: ZeroMQ's I/O thread inherits the policy (Linux sets it per thread).
        self.scheduling = set_scheduling(self.config.get(name, {}))
        self.zmq = zmq.Context()
        self.inbox = self.socket(zmq.PULL, hwm=10_000)
        # A warm spare is loaded and waits; it binds the inbox when it takes a dead one's place.
        self.spare = os.environ.get("PERSONAS_SPARE") == "1"
        if not self.spare:
            self.inbox.bind(self.endpoints[name])
        self.system = self.socket(zmq.SUB)
        self.system.setsockopt(zmq.SUBSCRIBE, b"")
        self.system.connect(self.endpoints["system"])
        self.timeline = self._connect_timeline()
        self.health = self.socket(zmq.PUSH, hwm=100)
        self.health.connect(self.endpoints["health"])
        if self.scheduling and self.scheduling["refused"]:
            self.log.warning("scheduling request refused (%s); running %s at niceness %d",
                             "; ".join(self.scheduling["refused"]), self.scheduling["policy"], self.scheduling["niceness"])
            self.emit("scheduling", "warn", data=self.scheduling)
        self.peers: dict[str, zmq.Socket] = {}
        self.ledger: zmq.Socket | None = None
        self.heartbeat_s = float(self.config["supervisor"]["heartbeat_s"])
        self._beat_seq = 0
        self._next_beat = 0.0
        self._parent = os.getppid()
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        _die_with_parent()

    def wait_as_spare(self, actor: Any) -> bool:
        """A warm spare's life until it is needed: follow epochs and live config, beat, and
        on TakeOver bind the inbox and become a replacement (True); False on Shutdown."""
        while self.running:
            if self.system.poll(self.poll_timeout_ms()):
                for msg in self.system_messages():
                    if isinstance(msg, TakeOver) and msg.pid == self.incarnation and msg.actor == self.name:
                        return self.take_over()
                    if isinstance(msg, BargeIn):
                        self.epoch = max(self.epoch, msg.epoch)  # nothing to drop, nothing to acknowledge
                    elif isinstance(msg, (ConfigUpdate, Shutdown)):
                        self.on_system(actor, msg)
            self.heartbeat({"spare": True})
        return False

    def take_over(self) -> bool:
        deadline = time.monotonic() + TAKE_OVER_BIND_S
        while True:
            try:
                self.inbox.bind(self.endpoints[self.name])
                break
            except zmq.ZMQError as exc:  # the dead one's port is normally free at once
                if time.monotonic() > deadline:
                    self.log.error("cannot bind %s to take over: %s", self.endpoints[self.name], exc)
                    return False
                time.sleep(0.05)
        self.spare, self.rejoining = False, True
        self.log.info("spare taking over")
        return True

    def _connect_timeline(self) -> zmq.Socket:
        # XPUB, not PUB: it hears the proxy's subscription, so we can wait for it before
        # publishing anything (a PUB silently drops what it sends before that: slow joiner).
        timeline = self.socket(zmq.XPUB, hwm=100_000)
        timeline.connect(self.endpoints["timeline_in"])
        if timeline.poll(SUBSCRIPTION_WAIT_MS):
            timeline.recv()
        else:
            self.log.warning("timeline proxy did not subscribe within %d ms; early events may be lost", SUBSCRIPTION_WAIT_MS)
        return timeline

    def socket(self, kind: int, **kwargs: Any) -> zmq.Socket:
        kwargs.setdefault("linger_ms", self._linger)
        return make_socket(self.zmq, kind, **kwargs)

    def poller(self, *extra: zmq.Socket) -> zmq.Poller:
        """A poller on the system channel, the inbox and ``extra`` sockets."""
        poller = zmq.Poller()
        for sock in (self.system, self.inbox, *extra):
            poller.register(sock, zmq.POLLIN)
        return poller

    def peer(self, name: str) -> zmq.Socket:
        """PUSH socket to another actor's inbox (created once), its HWM set from the link's
        credit window: a safety net that credit should never let us reach."""
        if name not in self.peers:
            sock = self.socket(zmq.PUSH, hwm=link_hwm(self.config, self.name, name))
            sock.connect(self.endpoints[name])
            self.peers[name] = sock
        return self.peers[name]

    def send_to(self, name: str, msg: Message) -> bool:
        try:
            send(self.peer(name), msg, flags=zmq.NOBLOCK)
            return True
        except zmq.Again:
            self.error("send", "peer_full", f"{name} is not reading; {msg.TYPE} dropped")
            return False

    def request(self, msg: Message, must_arrive: bool = False) -> None:
        try:
            if must_arrive:
                self.health.setsockopt(zmq.SNDTIMEO, READY_SEND_TIMEOUT_MS)
            send(self.health, msg, flags=0 if must_arrive else zmq.NOBLOCK)
        except zmq.Again:
            self.error("request", "supervisor_unreachable", f"{msg.TYPE} not sent")

    def journal(self, msg: Message) -> bool:
        if self.ledger is None:
            self.ledger = self.socket(zmq.PUSH, hwm=LEDGER_HWM)
            self.ledger.connect(self.endpoints["ledger"])
        try:
            send(self.ledger, msg, flags=zmq.NOBLOCK)
            return True
        except zmq.Again:
            self.error("journal", "ledger_full", f"the supervisor's ledger is not reading; {msg.TYPE} not kept")
            return False

    def publish(self, event: TimelineEvent) -> None:
        if self.spare:
            return  # a spare's life is not part of the session (its log has it); its work starts at TakeOver
        try:
            send(self.timeline, event, flags=zmq.NOBLOCK)
        except zmq.Again:
            pass  # PUB never blocks the hot path; a lost event is preferable to a stall

    def drain(self, sock: zmq.Socket, limit: int = DRAIN_LIMIT) -> list[Message]:
        """Decoded messages waiting on ``sock``; bad ones become error events."""
        out = []
        for _ in range(limit):
            try:
                out.append(recv(sock, flags=zmq.NOBLOCK))
            except zmq.Again:
                break
            except ProtocolError as exc:
                self.error("decode", exc.code, exc.detail, surface="zmq")
                if exc.header is not None and sock is self.inbox:
                    self.refused.append(exc.header)
            except Exception as exc:  # the decoder's own rules cover everything; this is the last line
                self.error("decode", "malformed", f"{type(exc).__name__}", surface="zmq")
        return out

    def system_messages(self) -> list[Message]:
        return self.drain(self.system)

    def inbox_messages(self) -> list[Message]:
        return self.drain(self.inbox)

    def heartbeat(self, stats: dict, force: bool = False) -> None:
        """Beats when due (``force``: now); stops the loop if the supervisor has gone."""
        now = time.monotonic()
        if now < self._next_beat and not force:
            return
        self._next_beat = now + self.heartbeat_s
        if os.getppid() != self._parent:
            self.log.error("supervisor is gone; exiting")
            self.running = False
            return
        self._beat_seq += 1
        while True:  # subscription messages (the proxy reconnecting) must not pile up
            try:
                self.timeline.recv(flags=zmq.NOBLOCK)
            except zmq.Again:
                break
        if self.curve is not None:
            for refusal in self.curve.drain():
                self.error("auth", "refused", f"a peer without an allowed CURVE key ({refusal['address']})",
                           surface="zmq")
            stats = {**stats, "auth_refused": self.curve.refusals}
        stats = {**stats, "config_version": self.config_version, "dropped_stale": self.dropped_stale,
                 **({"dropped_rejoining": self.dropped_rejoining} if self.dropped_rejoining else {})}
        try:
            send(self.health, Heartbeat(actor=self.name, pid=os.getpid(), seq=self._beat_seq, epoch=self.epoch,
                                        stats=stats), flags=zmq.NOBLOCK)
        except zmq.Again:
            pass
        self.emit("heartbeat", data=stats)

    def poll_timeout_ms(self, *deadlines: float) -> int:
        """Milliseconds until the nearest of the given monotonic deadlines or the next beat."""
        nearest = min((self._next_beat, *deadlines))
        return max(0, min(1000, int((nearest - time.monotonic()) * 1000)))

    def close(self) -> None:
        for sock in [self.inbox, self.system, self.timeline, self.health, *self.peers.values(),
                     *([self.ledger] if self.ledger is not None else [])]:
            sock.close()
        if self.curve is not None:
            self.curve.close()
        self.zmq.term()

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.log.info("signal %d: stopping", signum)
        self.running = False


def set_scheduling(section: dict) -> dict | None:
    """Ask the OS to run this process ahead of the compute workers: SCHED_FIFO at
    ``realtime_priority`` where the OS allows it (Linux; root, CAP_SYS_NICE or an
    RLIMIT_RTPRIO grant), else ``niceness``. Without permission the process keeps what it
    had and the caller reports it. Threads started later inherit the policy."""
    rt, niceness = int(section.get("realtime_priority", 0)), section.get("niceness")
    if not rt and niceness is None:
        return None
    result: dict = {"policy": "other", "niceness": os.getpriority(os.PRIO_PROCESS, 0), "refused": []}
    if rt and hasattr(os, "sched_setscheduler"):
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(rt))
            return {**result, "policy": "fifo", "realtime_priority": rt}
        except OSError as exc:  # EPERM: not privileged
            result["refused"].append(f"SCHED_FIFO {rt}: {exc.strerror}")
    if niceness is not None:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, int(niceness))
            result["niceness"] = int(niceness)
        except OSError as exc:
            result["refused"].append(f"niceness {niceness}: {exc.strerror}")
    return result


def drop_realtime() -> None:
    """For a helper thread of a realtime process (an encoder, say): back to the normal
    policy, so bulk work never runs ahead of the compute workers."""
    if hasattr(os, "sched_setscheduler") and os.sched_getscheduler(0) != os.SCHED_OTHER:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


def link_hwm(config: dict, sender: str, receiver: str) -> int:
    """Twice the messages a data link's credit window allows; generous for control-only links."""
    link = link_name(sender, receiver)
    if link not in CREDIT_LINKS:
        return 1000
    unit, window_key = CREDIT_LINKS[link]
    window = int(config["flow"][window_key])
    messages = window // 100 if unit == "ms" else window  # audio pieces are >= ~100 ms
    return 2 * messages + 8


def setup_logging(name: str) -> None:
    logging.basicConfig(
        level=os.environ.get("PERSONAS_LOG", "INFO"),
        stream=sys.stderr,
        format=f"%(asctime)s {name:>8} %(levelname)s %(message)s",
    )


def _die_with_parent() -> None:
    """Linux: get SIGTERM when the supervisor dies, so no actor is ever orphaned."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass
