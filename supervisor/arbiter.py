"""The arbiter: launches the five actors and the web gateway, watches them, restarts them,
stops them.

Sockets it binds (endpoints from the config):

    timeline_in  XSUB  actors publish timeline events here ...
    timeline     XPUB  ... and subscribers read them here (a proxy thread joins the two)
    system       PUB   barge-in epochs, config, describe and shutdown, to every actor
    health       PULL  READY, heartbeats, infos, epoch acks and epoch requests from actors
    control      ROUTER  commands from `personas-supervisor` and other clients

    ledger       PULL  the parser's journal of the text it owns (``supervisor.ledger``)

Liveness: actors beat every ``heartbeat_s`` from their main loop; ``liveness`` missed
beats (or a dead process) means restart. A media actor that dies is replaced inside the
same epoch and the pipeline resumes where it stopped (``supervisor.recovery``); only if
that cannot work does a restart fall back to a new epoch. The web gateway is outside the
media path: its restart touches nothing else. More than ``max_restarts`` within
``restart_window_s`` stops everything cleanly. Barge-ins are acknowledged on the health
channel (``EpochAck``); control commands that need the actors' descriptors are answered
from the loop once their Infos are in: nothing here ever waits on an actor.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import psutil
import zmq

from persona.voice import check_voice
from protocol import (BargeIn, ConfigUpdate, Describe, EpochAck, EpochRequest, Heartbeat, Info, Journal, ProtocolError,
                      Ready, RecoveryAck, RestoreRequest, ResumePoint, Shutdown, TimelineEvent, decode)
from protocol.config import ENV_VAR, apply_changes, copy_config, live_changes, to_env
from protocol.control_endpoint import ANSWER_WITHIN_S, EXIT_WITH_PARENT_ENV, TOKEN_ENV, encode_reply, new_token
from protocol.envelope import brief
from protocol.ingress import NO_TURN
from protocol.names import ACTOR_NAMES, GATEWAY, SERVICE_NAMES
from protocol.security import CurveServer, curve_dir
from protocol.transport import make_socket, send

from . import commands
from .ledger import TextLedger
from .progress import ProgressWatch
from .recovery import RecoveryCoordinator
from .spares import SparePool

LOG = logging.getLogger("personas.supervisor")
#: How often an unacknowledged barge-in is re-broadcast (PUB may drop).
BARGE_RESEND_S = 0.1
BARGE_GIVE_UP_S = 3.0
#: How often processes are checked (exit, heartbeat): a death is seen within this.
CHECK_S = 0.1
#: How often each process's CPU and memory are sampled for `status`.
SAMPLE_S = 1.0
#: How long a SIGKILLed process may take to be reaped before the loop moves on.
KILL_WAIT_S = 0.5
#: How long a command waits for the actors' fresh descriptors before answering with what it has.
DESCRIBE_TIMEOUT_S = 1.0
#: Checks (a registry lookup) waiting for the worker thread at once; one may take ANSWER_WITHIN_S.
MAX_LATER = 4
#: The module each process runs as (``python -m ...``).
PROCESS_MODULES = {**{name: ("actors", name) for name in ACTOR_NAMES}, GATEWAY: ("gateway",)}


class StartupError(RuntimeError):
    pass


@dataclass
class DescribeRound:
    """A Describe broadcast and the control replies waiting for its Infos."""

    request_id: int
    deadline: float
    waiting: set[str]
    identity: bytes  # the control client the reply goes to
    pending: commands.Pending


@dataclass
class Watcher:
    """One actor process and what we know about it."""

    name: str
    proc: subprocess.Popen | None = None
    state: str = "stopped"  # starting | ready | stopping | stopped | failed
    started_at: float = 0.0
    last_beat: float = 0.0
    info: dict = field(default_factory=dict)
    info_request: int = 0
    stats: dict = field(default_factory=dict)
    restarts: deque = field(default_factory=deque)  # restart times within restart_window_s
    restarts_total: int = 0
    ps: psutil.Process | None = None
    cpu_percent: float = 0.0
    rss_bytes: int = 0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None


class Arbiter:
    def __init__(self, config: dict, *, config_source: str = "default"):
        self.config = config
        self.config_source = config_source
        self.endpoints = config["endpoints"]
        sup = config["supervisor"]
        self.heartbeat_s = float(sup["heartbeat_s"])
        self.liveness = int(sup["liveness"])
        self.max_restarts = int(sup["max_restarts"])
        self.restart_window_s = float(sup["restart_window_s"])
        self.ready_timeout_s = float(sup["ready_timeout_s"])
        self.stop_timeout_s = float(sup["stop_timeout_s"])
        self.linger = int(sup["linger_ms"])
        services = [name for name in SERVICE_NAMES if config.get(name, {}).get("enabled")]
        self.watchers = {name: Watcher(name) for name in (*ACTOR_NAMES, *services)}
        self.announce = lambda _message: None  # `up` prints the URL through this
        self.epoch = 0
        self.state = "starting"
        self.started_at = time.monotonic()
        self.stop_reason = ""
        self.exit_code = 0
        self._awaiting_ack: set[str] = set()  # actors yet to acknowledge the current epoch
        self._barge_issued_ns = 0
        self._barge_first_sent = self._barge_sent_at = 0.0
        self._barge_reason, self._barge_turn = "", NO_TURN
        self._at_stop: list[tuple[bytes, commands.AtStop]] = []  # `down` callers waiting for the end
        # A session manager's supervisor stops with its parent (0: a `personas-supervisor up` outlives its shell).
        self._parent = os.getppid() if os.environ.get(EXIT_WITH_PARENT_ENV) == "1" else 0
        self._describe_id = 0
        self._describing: list[DescribeRound] = []
        self._checks: list = []  # (identity, Later, future, deadline): replies waiting on the worker
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="supervisor-check")
        self.config_version = 0
        self._config_changes: dict = {}  # every live change so far, re-sent to lagging actors
        self._config_resent_at = 0.0
        self._config_set_at = 0.0
        self.ever_running = False
        self._sampled_at = 0.0
        self.ledger = TextLedger()
        self.progress = ProgressWatch(float(sup["stuck_after_s"]))
        self.ctx = zmq.Context()
        self._bind()
        # After the bind: a second `up` that cannot bind must not replace the first one's token.
        self.token, self.token_file = new_token(self.endpoints["control"])
        self.recovery = RecoveryCoordinator(lambda msg: send(self.system, msg), self._emit)
        self.spares = SparePool([n for n in sup["warm_spares"] if n in ACTOR_NAMES],
                                lambda name: self._popen(name, spare=True), lambda msg: send(self.system, msg),
                                self._emit, self.liveness * self.heartbeat_s, self.ready_timeout_s)
        self._to_parser: zmq.Socket | None = None  # PUSH to the parser's inbox, for Restore

    # -- sockets -------------------------------------------------------------------------------
    def _socket(self, kind: int, **kw) -> zmq.Socket:
        kw.setdefault("linger_ms", self.linger)
        return make_socket(self.ctx, kind, **kw)

    def _bind(self) -> None:
        # CURVE on the public sockets this process binds (control, timeline), when configured.
        self.curve = CurveServer(self.ctx, self.config) if curve_dir(self.config) is not None else None
        self.control = self._public(self._socket(zmq.ROUTER))
        try:
            self.control.bind(self.endpoints["control"])
        except zmq.ZMQError as exc:
            self.control.close()
            raise StartupError(f"cannot bind control endpoint {self.endpoints['control']} ({exc}): "
                               "is another supervisor running? try `personas-supervisor status`") from None
        self.system = self._socket(zmq.PUB, hwm=10_000)
        self.system.bind(self.endpoints["system"])
        self.health = self._socket(zmq.PULL, hwm=10_000)
        self.health.bind(self.endpoints["health"])
        self.ledger_in = self._socket(zmq.PULL, hwm=100_000)
        self.ledger_in.bind(self.endpoints["ledger"])
        self.timeline = self._socket(zmq.XPUB, hwm=10_000)  # the supervisor's own events
        self.timeline.connect(self.endpoints["timeline_in"])
        self._proxy_control = self.ctx.socket(zmq.PAIR)
        self._proxy_control.bind("inproc://timeline-proxy-control")
        ready = threading.Event()
        self._proxy = threading.Thread(target=self._timeline_proxy, args=(ready,), name="timeline-proxy", daemon=True)
        self._proxy.start()
        if not ready.wait(5):
            raise StartupError("timeline proxy did not start")
        if not self.timeline.poll(3000):  # our own subscription arrives: no event of ours is lost
            raise StartupError("timeline proxy did not subscribe")
        self.timeline.recv()

    def _public(self, sock: zmq.Socket) -> zmq.Socket:
        return self.curve.secure(sock) if self.curve is not None else sock

    def _timeline_proxy(self, ready: threading.Event) -> None:
        """XSUB (actors) <-> XPUB (subscribers)."""
        frontend = self._socket(zmq.XSUB, hwm=100_000)
        backend = self._public(self._socket(zmq.XPUB, hwm=100_000))
        control_sock = self.ctx.socket(zmq.PAIR)
        try:
            frontend.bind(self.endpoints["timeline_in"])
            backend.bind(self.endpoints["timeline"])
            control_sock.connect("inproc://timeline-proxy-control")
        except zmq.ZMQError as exc:
            LOG.error("timeline proxy cannot bind: %s", exc)
            return
        frontend.send(b"\x01")  # subscribe to everything ourselves: actors may publish before anyone listens
        ready.set()
        try:
            zmq.proxy_steerable(frontend, backend, None, control_sock)
        except zmq.ContextTerminated:
            pass
        finally:
            for sock in (frontend, backend, control_sock):
                sock.close(linger=0)

    # -- life cycle ------------------------------------------------------------------------------
    def run(self) -> int:
        """Start everything, supervise until asked to stop, stop everything. Returns exit code."""
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        try:
            for watcher in self.watchers.values():
                self._spawn(watcher)
            # The resolved config opens every timeline: with it the log is enough to replay the session.
            self._emit("supervisor_start", data={"config_source": self.config_source, "actors": list(self.watchers),
                                                 "config": self.config})
            self._loop(stop)
        finally:
            self._stop_all()
        return self.exit_code

    def _loop(self, stop: threading.Event) -> None:
        poller = zmq.Poller()
        poller.register(self.health, zmq.POLLIN)
        poller.register(self.control, zmq.POLLIN)
        poller.register(self.ledger_in, zmq.POLLIN)
        next_check = time.monotonic()
        while not stop.is_set() and self.state not in ("stopping", "failed"):
            events = dict(poller.poll(50))
            if self.ledger_in in events:
                self._drain_ledger()
            if self.health in events:
                self._drain_health()
            if self.control in events:
                self._drain_control()
            now = time.monotonic()
            self._tick_recovery(now)
            if self._describing:
                self._finish_describes(now)
            if self._checks:
                self._finish_later(now)
            if self._awaiting_ack and now - self._barge_sent_at >= BARGE_RESEND_S:
                self._resend_barge_in(now)
            if now >= next_check:
                next_check = now + CHECK_S
                self._check_actors(now)
                if self._parent and os.getppid() != self._parent:  # the session manager (or its host) is gone
                    self.request_stop("the process that started this supervisor is gone")
        if stop.is_set() and not self.stop_reason:
            self.stop_reason = "signal"

    def _popen(self, name: str, rejoining: bool = False, spare: bool = False) -> subprocess.Popen:
        env = dict(os.environ)
        env[ENV_VAR] = to_env(self.config)
        env["PERSONAS_EPOCH"] = str(self.epoch)
        env["PERSONAS_RESTART"] = "1" if rejoining else "0"  # a replacement waits for its recovery
        env["PERSONAS_SPARE"] = "1" if spare else "0"  # a warm spare waits for a TakeOver
        env["PERSONAS_CONFIG_VERSION"] = str(self.config_version)  # the config above already has the changes
        env["ORT_DISABLE_TELEMETRY"] = "1"  # see actors/__init__.py
        env[TOKEN_ENV] = self.token  # the gateway's web API checks it; never on a command line
        env.setdefault("PYTHONUNBUFFERED", "1")
        return subprocess.Popen([sys.executable, "-m", *PROCESS_MODULES[name]], env=env)

    def _spawn(self, watcher: Watcher, rejoining: bool = False) -> None:
        """Start ``watcher``'s process; a replacement takes a warm spare's place when one is ready."""
        spare = self.spares.take(watcher.name) if rejoining else None
        watcher.proc = spare.proc if spare else self._popen(watcher.name, rejoining)
        watcher.ps = psutil.Process(watcher.proc.pid)
        watcher.state = "starting"
        watcher.started_at = watcher.last_beat = time.monotonic()
        watcher.info, watcher.stats = {}, {}
        LOG.info("%s %s (pid %d)", "spare takes over as" if spare else "started", watcher.name, watcher.proc.pid)
        self._emit("actor_start", data={"actor": watcher.name, "pid": watcher.proc.pid, "spare": spare is not None})

    def _check_actors(self, now: float) -> None:
        for watcher in self.watchers.values():
            if watcher.proc is None:
                continue
            code = watcher.proc.poll()
            if code is not None:
                self._restart(watcher, f"exited with code {code}")
            elif watcher.state == "ready" and now - watcher.last_beat > self.liveness * self.heartbeat_s:
                self._restart(watcher, f"no heartbeat for {now - watcher.last_beat:.1f}s")
            elif watcher.state == "starting" and now - watcher.started_at > self.ready_timeout_s:
                self._restart(watcher, f"not ready after {self.ready_timeout_s:.0f}s")
            if self.state in ("stopping", "failed"):
                return
        if now - self._sampled_at >= SAMPLE_S:  # CPU and memory for `status`, over a steady interval
            self._sampled_at = now
            for watcher in self.watchers.values():
                try:
                    watcher.cpu_percent = watcher.ps.cpu_percent(None) if watcher.ps else 0.0
                    watcher.rss_bytes = watcher.ps.memory_info().rss if watcher.ps else 0
                except psutil.Error:
                    pass
        lagging = [w.name for w in self.watchers.values()  # judged only from beats sent after the change
                   if w.state == "ready" and w.last_beat - self._config_set_at > 0.5
                   and w.stats.get("config_version", self.config_version) < self.config_version]
        if lagging and now - self._config_resent_at > 1.0:
            self._config_resent_at = now  # PUB can drop: send the whole live state again
            send(self.system, ConfigUpdate(version=self.config_version, changes=self._config_changes))
            self._emit("config", "warn", data={"resent_to": lagging, "version": self.config_version})
        self.spares.tick(now, self.recovery.active)
        self._check_progress(now)
        for refusal in self.curve.drain() if self.curve is not None else []:
            LOG.warning("auth: refused a peer without an allowed CURVE key (%s)", refusal["address"])
            self._emit("auth", "error", data={"code": "refused", **refusal})
        if self.state == "starting" and all(w.state == "ready" for w in self.watchers.values()):
            self.state, self.ever_running, self.spares.enabled = "running", True, True
            LOG.info("all actors ready; ingress %s, timeline %s", self.endpoints["ingress"], self.endpoints["timeline"])
            web = self.watchers.get(GATEWAY)
            if web is not None and web.info.get("url"):
                self.announce(f"Personas is live: open {web.info['url']} (ingress {self.endpoints['ingress']})")
            # The config again: a subscriber that joined late may have missed supervisor_start.
            self._emit("supervisor_ready", data={"startup_s": round(now - self.started_at, 2), "config": self.config})

    def _restart(self, watcher: Watcher, why: str) -> None:
        now = time.monotonic()
        while watcher.restarts and now - watcher.restarts[0] > self.restart_window_s:
            watcher.restarts.popleft()
        LOG.warning("%s %s", watcher.name, why)
        self._emit("actor_failed", "error", data={"actor": watcher.name, "why": why, "pid": watcher.pid})
        _kill_tree(watcher.proc, 0)
        if len(watcher.restarts) >= self.max_restarts:
            self.stop_reason = (f"{watcher.name} failed {len(watcher.restarts) + 1} times within "
                                f"{self.restart_window_s:.0f}s (last: {why}); stopping")
            LOG.error(self.stop_reason)
            watcher.state = "failed"
            self.state = "failed"
            self.exit_code = 1
            return
        watcher.restarts.append(now)
        watcher.restarts_total += 1
        old_pid = watcher.pid or 0
        watcher.state = "starting"
        rejoining = False
        if watcher.name in SERVICE_NAMES:
            pass  # outside the media path: nothing else changes
        elif not self.ever_running:
            pass  # still starting: nothing is in flight yet
        elif self.recovery.actor_died(watcher.name, old_pid, self.epoch):
            rejoining = True  # the replacement rejoins this epoch where the timeline stopped
        else:
            # A second death while one is being recovered: drop what was in flight instead.
            self.recovery.cancel(f"{watcher.name} died during a recovery")
            self.new_epoch(f"restart:{watcher.name} (during a recovery)")
        self._spawn(watcher, rejoining)
        if self.state == "running":
            self.state = "starting"

    def _stop_all(self) -> None:
        self.state = "stopping" if self.state != "failed" else "failed"
        self._finish_describes(math.inf)  # nobody is left waiting for an answer
        self._worker.shutdown(wait=False, cancel_futures=True)
        try:
            send(self.system, Shutdown(reason=self.stop_reason or "stop"))
        except zmq.ZMQError:
            pass
        self._emit("supervisor_stop", data={"reason": self.stop_reason or "stop"})
        procs = [w.proc for w in self.watchers.values() if w.proc and w.proc.poll() is None]
        procs += [proc for proc in self.spares.stop() if proc.poll() is None]
        for proc in procs:
            try:
                proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + self.stop_timeout_s
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                LOG.warning("pid %d ignored SIGTERM; killing", proc.pid)
                _kill_tree(proc, 0)
        self._drain_health()  # the parser's last beat counts what it was sent and will not speak
        for watcher in self.watchers.values():
            if watcher.state != "failed":
                watcher.state = "stopped"
        # The last event of every timeline: all actors have exited, so nothing of theirs follows.
        self._emit("supervisor_stopped", data={"reason": self.stop_reason or "stop", **self.stop_report()})
        for identity, waiting in self._at_stop:
            self._reply(identity, waiting.build())
        time.sleep(0.05)  # let the last timeline events through the proxy
        self._proxy_control.send(b"TERMINATE")
        self._proxy.join(2)
        for sock in (self.control, self.system, self.health, self.ledger_in, self.timeline, self._proxy_control,
                     *([self._to_parser] if self._to_parser is not None else [])):
            sock.close()
        if self.curve is not None:
            self.curve.close()
        self.ctx.term()
        self.token_file.unlink(missing_ok=True)
        LOG.info("stopped (%s)", self.stop_reason or "stop")

    # -- epochs ------------------------------------------------------------------------------------
    def new_epoch(self, reason: str, turn: int = NO_TURN) -> int:
        """Broadcast a new epoch (interrupting the sender's ``turn``: -1 the latest named, NO_TURN
        none); re-sent every BARGE_RESEND_S until every ready actor acks."""
        self.recovery.cancel(f"new epoch: {reason}")
        self.epoch += 1
        self.ledger.on_epoch(self.epoch)
        now = time.monotonic()
        self._awaiting_ack = {name for name, w in self.watchers.items() if w.state == "ready"}
        self._barge_issued_ns = time.monotonic_ns()
        self._barge_first_sent = self._barge_sent_at = now
        self._barge_reason, self._barge_turn = reason, turn
        send(self.system, BargeIn(epoch=self.epoch, reason=reason, issued_at_ns=self._barge_issued_ns, turn=turn))
        self._emit("epoch", data={"epoch": self.epoch, "reason": reason, "awaiting": sorted(self._awaiting_ack)})
        return self.epoch

    def _resend_barge_in(self, now: float) -> None:
        if now - self._barge_first_sent > BARGE_GIVE_UP_S:
            self._emit("barge_in", "error", data={"epoch": self.epoch, "unacknowledged": sorted(self._awaiting_ack)})
            self._awaiting_ack.clear()
            return
        self._barge_sent_at = now
        send(self.system, BargeIn(epoch=self.epoch, reason=self._barge_reason, issued_at_ns=self._barge_issued_ns,
                                  turn=self._barge_turn))

    def _acknowledged(self, actor: str, epoch: int) -> None:
        if epoch != self.epoch or actor not in self._awaiting_ack:
            return
        self._awaiting_ack.discard(actor)
        if not self._awaiting_ack:
            self._emit("barge_in", data={"epoch": self.epoch, "all_acknowledged_ms":
                                         round((time.monotonic_ns() - self._barge_issued_ns) / 1e6, 2)})

    # -- health channel ------------------------------------------------------------------------------
    def _drain_health(self) -> None:
        for _ in range(1000):
            try:
                msg = decode(self.health.recv_multipart(flags=zmq.NOBLOCK))
            except zmq.Again:
                return
            except ProtocolError as exc:
                LOG.warning("bad health message: %s", exc)
                continue
            watcher = self.watchers.get(getattr(msg, "actor", ""))
            if isinstance(msg, Ready) and watcher and msg.pid == watcher.pid:
                watcher.state, watcher.info, watcher.last_beat = "ready", msg.info, time.monotonic()
                LOG.info("%s ready (%.1fs)", watcher.name, time.monotonic() - watcher.started_at)
                self.recovery.actor_ready(watcher.name, msg.pid)
                self.spares.took_over(watcher.name, msg.pid)
            elif isinstance(msg, Heartbeat) and watcher and msg.pid == watcher.pid:
                watcher.last_beat, watcher.stats = time.monotonic(), msg.stats
            elif isinstance(msg, Heartbeat):
                self.spares.on_beat(msg)
            elif isinstance(msg, Info) and watcher and msg.pid == watcher.pid:
                watcher.info, watcher.info_request = msg.info, max(watcher.info_request, msg.request_id)
            elif isinstance(msg, EpochAck) and watcher and msg.pid == watcher.pid:
                self._acknowledged(watcher.name, msg.epoch)
            elif isinstance(msg, EpochRequest):
                self.new_epoch(f"{msg.source}: {msg.reason}")
            elif isinstance(msg, ResumePoint) and watcher and msg.pid == watcher.pid:
                self.recovery.on_resume_point(msg)
            elif isinstance(msg, RecoveryAck) and watcher:
                self.recovery.on_ack(msg, watcher.pid)
            elif isinstance(msg, RestoreRequest) and watcher and msg.pid == watcher.pid:
                self._restore_parser()

    # -- crash recovery ------------------------------------------------------------------------------
    def _drain_ledger(self) -> None:
        for _ in range(1000):
            try:
                msg = decode(self.ledger_in.recv_multipart(flags=zmq.NOBLOCK))
            except zmq.Again:
                return
            except ProtocolError as exc:
                LOG.warning("bad ledger message: %s", exc)
                continue
            if isinstance(msg, Journal):
                self.ledger.on_journal(msg)

    def _restore_parser(self) -> None:
        """A replacement parser asked for the text its predecessor owned: to its inbox, in order."""
        if self._to_parser is None:
            self._to_parser = self._socket(zmq.PUSH, hwm=10_000)
            self._to_parser.connect(self.endpoints["parser"])
        parts = self.ledger.restore_parts()
        for part in parts:
            try:
                send(self._to_parser, part, flags=zmq.NOBLOCK)
            except zmq.Again:
                LOG.error("parser inbox full; restore not sent (it will ask again)")
                return
        self._emit("restore", data={"parts": len(parts), **self.ledger.describe()})

    def _tick_recovery(self, now: float) -> None:
        alive = {name for name, w in self.watchers.items() if w.state == "ready"}
        failed = self.recovery.tick(now, alive)
        if failed:
            self.new_epoch(f"recovery failed: {failed}")

    def _check_progress(self, now: float) -> None:
        """Text waiting and no speech presented for a while: stuck, though every actor beats
        (a recovery in progress is given its own time-outs first)."""
        if self.state != "running" or self.recovery.active:
            self.progress.progressed_at = now
            return
        change = self.progress.check(now, {name: w.stats for name, w in self.watchers.items()})
        if change is not None:
            kind, details = change
            if kind == "stuck":
                LOG.error("stuck: %s (no speech presented for %.0f s)", details["stuck_at"], details["quiet_s"])
            self._emit("progress", "error" if kind == "stuck" else "ok", data={"state": kind, **details})

    def set_config(self, items: dict) -> dict | commands.Later:
        """Validate and apply live changes, then broadcast them (actors apply at their next
        safe boundary). Raises ConfigError for keys that are not live or bad values. A new
        ``persona.id`` is checked against the registry off the loop (a Later reply): the
        registry may be a database or a service that takes its time; a voice file is a file read."""
        changes = live_changes(self.config, items)  # types, rules, and the engines loaded
        if "voice.persona" in changes or "persona.id" in changes:
            wanted = copy_config(self.config)
            apply_changes(wanted, changes)
            checks = [check for key, check in (("voice.persona", check_voice), ("persona.id", check_persona))
                      if key in changes]
            return commands.Later(check=lambda: next(filter(None, (check(wanted) for check in checks)), ""),
                                  then=lambda: self.apply_config(changes))
        return self.apply_config(changes)

    def apply_config(self, changes: dict) -> dict:
        apply_changes(self.config, changes)
        self.config_version += 1
        self._config_set_at = time.monotonic()
        self._config_changes.update(changes)
        send(self.system, ConfigUpdate(version=self.config_version, changes=changes))
        self._emit("config", data={"version": self.config_version, "changes": changes})
        return {"version": self.config_version, "changes": changes}

    # -- control endpoint ----------------------------------------------------------------------------
    def _drain_control(self) -> None:
        for _ in range(100):
            try:
                identity, *rest = self.control.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            # REQ clients put an empty delimiter frame before the body.
            try:
                reply = commands.handle(self, rest[-1] if rest else b"")
            except Exception as exc:  # handle() answers errors itself; this is the last line of defence
                LOG.exception("control request failed")
                reply = {"ok": False, "error": f"{type(exc).__name__}: {brief(exc)}"}
            if isinstance(reply, commands.Pending):
                self._describe(identity, reply)
            elif isinstance(reply, commands.Later):
                self._later(identity, reply)
            elif isinstance(reply, commands.AtStop):
                self._at_stop.append((identity, reply))
            else:
                self._reply(identity, reply)

    def _later(self, identity: bytes, later: commands.Later) -> None:
        """Run the check on the worker thread; the reply leaves from the loop (_finish_later)."""
        if len(self._checks) >= MAX_LATER:
            self._reply(identity, {"ok": False, "error": f"busy: {MAX_LATER} checks are already running; try again"})
            return
        self._checks.append((identity, later, self._worker.submit(later.check), time.monotonic() + ANSWER_WITHIN_S))

    def _finish_later(self, now: float) -> None:
        for item in list(self._checks):
            identity, later, future, deadline = item
            if not future.done() and now < deadline:
                continue
            self._checks.remove(item)
            if not future.done():
                reply = {"ok": False, "error": f"the check did not finish within {ANSWER_WITHIN_S:.0f} s; try again"}
            elif future.exception() is not None or future.result():
                reply = {"ok": False, "error": str(future.exception() or future.result())}
            else:
                reply = commands.finish_later(later)
            self._reply(identity, reply)

    def _reply(self, identity: bytes, reply: dict) -> None:
        self.control.send_multipart([identity, b"", encode_reply(reply)])

    def _describe(self, identity: bytes, pending: commands.Pending) -> None:
        """Ask every ready actor for its current descriptor (describe -> info exchange); the
        reply leaves from the loop when all have answered or DESCRIBE_TIMEOUT_S is over."""
        self._describe_id += 1
        send(self.system, Describe(request_id=self._describe_id))
        waiting = {n for n, w in self.watchers.items() if w.state == "ready"}
        self._describing.append(DescribeRound(self._describe_id, time.monotonic() + DESCRIBE_TIMEOUT_S, waiting,
                                              identity, pending))

    def _finish_describes(self, now: float) -> None:
        """Reply to each describe round whose Infos are all in, or whose time is up (at ``now``
        = infinity: every open one, as the supervisor stops)."""
        for round_ in list(self._describing):
            round_.waiting = {n for n in round_.waiting if self.watchers[n].info_request < round_.request_id}
            if round_.waiting and now < round_.deadline:
                continue
            self._describing.remove(round_)
            descriptors = {n: {**w.info, "fresh": w.info_request >= round_.request_id} for n, w in self.watchers.items()}
            self._reply(round_.identity, commands.finish(round_.pending, descriptors))

    # -- views ---------------------------------------------------------------------------------------
    def status(self) -> dict:
        now = time.monotonic()
        return {
            "supervisor": {"pid": os.getpid(), "state": self.state, "epoch": self.epoch,
                           "uptime_s": round(now - self.started_at, 1), "config": self.config_source,
                           "restart_window_s": self.restart_window_s, "recovery": self.recovery.describe(),
                           "ledger": self.ledger.describe(), "spares": self.spares.describe(),
                           "progress": self.progress.describe(),
                           "endpoints": {k: self.endpoints[k] for k in ("ingress", "timeline", "control", "av_out")}},
            "actors": {
                name: {"pid": w.pid, "state": w.state, "cpu_percent": round(w.cpu_percent, 1),
                       "rss_mb": round(w.rss_bytes / 2**20, 1), "restarts": w.restarts_total,
                       "restarts_recent": sum(1 for t in w.restarts if now - t <= self.restart_window_s),
                       "last_beat_s": round(now - w.last_beat, 2) if w.last_beat else None, "stats": w.stats}
                for name, w in self.watchers.items()
            },
        }

    def refused(self, cmd: str, why: str) -> None:
        LOG.warning("control: %s refused (%s)", cmd, why)
        self._emit("control_refused", "error", data={"cmd": cmd, "why": why})

    def _emit(self, stage: str, result: str = "ok", data: dict | None = None) -> None:
        event = TimelineEvent(stage=stage, actor="supervisor", result=result, ts_ns=time.monotonic_ns(),
                              epoch=self.epoch, data=data or {})
        try:
            send(self.timeline, event, flags=zmq.NOBLOCK)
        except zmq.Again:
            pass

    def stop_report(self) -> dict:
        """What the parser counted at its shutdown as sent to it and not spoken (if it could)."""
        unspoken = self.watchers["parser"].stats.get("unspoken")
        return {"exit_code": self.exit_code, **({"unspoken": unspoken} if unspoken else {})}

    def request_stop(self, reason: str) -> None:
        self.stop_reason = reason
        self.state = "stopping"


def check_persona(config: dict) -> str:
    """Why ``persona.id`` cannot be rendered ("" when it can): an unknown persona or version, a
    build that never published, a camera mode the pack lacks. The built-in one ("" id) is built
    here if it is missing, so no driver ever builds while it renders."""
    from actors.render.persona import PersonaUnavailable, resolve_pack

    try:
        pack = resolve_pack(config)
    except PersonaUnavailable as exc:
        return str(exc)
    modes = {a.mode for a in pack.anchors()}
    if config["persona"]["mode"] not in modes:
        return f"persona {pack.ref} has no {config['persona']['mode']} anchors (it has: {', '.join(sorted(modes))})"
    return ""


def check_builtin_persona(config: dict) -> str:
    """check_persona for the built-in astronaut, whatever ``persona.id`` says: a registry
    without it gets it built now, at start (~3 s of CPU once per registry), because a later
    switch to it (``persona.id = ""``) must be answered within ANSWER_WITHIN_S, which a build
    on a busy machine is not."""
    if not str(config["persona"]["id"]).strip():
        return ""  # the configured persona is the built-in: check_persona has built it
    return check_persona({**config, "persona": {**config["persona"], "id": ""}})


def _kill_tree(proc: subprocess.Popen | None, _grace: float) -> None:
    """SIGKILL a process and all its descendants (no orphans)."""
    if proc is None or proc.poll() is not None:
        return
    try:
        parent = psutil.Process(proc.pid)
        for child in parent.children(recursive=True):
            child.kill()
        parent.kill()
    except psutil.NoSuchProcess:
        pass
    try:
        proc.wait(timeout=KILL_WAIT_S)
    except subprocess.TimeoutExpired:
        pass  # reaped later by the loop's poll(); the loop must not wait on a stuck process
