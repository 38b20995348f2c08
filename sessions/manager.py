"""`personas serve`: the session manager. One conversation is one session with its own
supervisor, actors, ports, control token, timeline, recording and web page; sessions share
nothing but the machine (or the Ray cluster) and the persona registry.

HTTP API (INTERFACES.md §13), every route but /health and /s/ behind the manager token:

    POST   /sessions        {persona?, voice?, record?}  -> 201 the session (endpoints, token, page)
                                                          -> 503 + Retry-After beyond capacity
    GET    /sessions        every session and the capacity
    GET    /sessions/<id>   one session (410 with the reason once it has ended)
    DELETE /sessions/<id>   close it: the reply counts the text it will not speak
    GET    /s/<id>/         307 to the session's own page
    GET    /events?after=N  the manager's events (opened, closed, failed, refused)
    GET    /health          liveness and capacity

The manager is not in the media path: clients talk to their session's endpoints directly.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from gateway import guard
from protocol.control_endpoint import new_token

from .capacity import LiveCost, cpu_budget, measured_cost, memory_budget_mb, session_capacity
from .host import SessionRefused, check_host
from .placement import HostLost, LocalPlacement, RayPlacement

LOG = logging.getLogger("personas.sessions")
#: How often every session is looked at (activity, health, CPU).
CHECK_S = 1.0
#: A session whose supervisor does not answer this many checks in a row is failed.
MISSED_CHECKS = 5
#: Ended sessions remembered (for their 410 and their report), at most.
ENDED_KEPT = 256
#: Manager events kept for /events, at most.
EVENTS_KEPT = 1000
#: Longest wait a GET /events may ask for.
EVENTS_WAIT_MAX_S = 30.0
#: POST /sessions bodies are small.
MAX_BODY_BYTES = 16 * 1024
#: Threads for the waits on sessions (start, status, usage, stop): a few per session at most.
WORKER_THREADS = 32


@dataclass
class Live:
    id: str
    handle: object
    info: dict
    opened_at: float
    last_active: float
    fingerprint: tuple = ()
    missed: int = 0
    usage: dict = field(default_factory=lambda: {"cpu": 0.0, "rss_mb": 0.0})
    speaking: bool = False
    closing: bool = False

    def summary(self) -> dict:
        state = "closing" if self.closing else "speaking" if self.speaking else "idle"
        return {"id": self.id, "state": state, "node": self.info.get("node"),
                "endpoints": self.info["endpoints"], "page": f"/s/{self.id}/", "web_url": self.info.get("web_url"),
                "opened_s_ago": round(time.monotonic() - self.opened_at, 1),
                "idle_s": round(time.monotonic() - self.last_active, 1), **self.usage}


def activity_of(status: dict) -> tuple:
    """What changes while a session is in use: text arriving, speech presented, epochs."""
    actors = status.get("actors", {})
    parser = actors.get("parser", {}).get("stats") or {}
    player = actors.get("player", {}).get("stats") or {}
    return (status["supervisor"]["epoch"], parser.get("utterance_id"), parser.get("buffered_chars"),
            parser.get("queued_chunks"), player.get("speech_presented"))


class SessionManager:
    def __init__(self, config: dict, state_dir: Path, ray_address: str = ""):
        self.config, self.cfg = config, config["sessions"]
        self.state_dir = Path(state_dir)
        self.root = self.state_dir / "sessions"
        problem = check_host(config, self.cfg["public_host"])
        if problem:
            raise ValueError(problem)
        self.placement = (RayPlacement(config, self.root, ray_address) if ray_address
                          else LocalPlacement(config, self.root))
        self.cost = LiveCost(measured_cost(self.state_dir, config))
        self.sessions: dict[str, Live] = {}
        self.opening: set[str] = set()
        self.ended: OrderedDict[str, dict] = OrderedDict()
        self.events: deque[dict] = deque(maxlen=EVENTS_KEPT)
        self.event_seq = 0
        self.new_event = asyncio.Event()
        self.hosts = guard.allowed_hosts(self.cfg["host"], int(self.cfg["port"]))
        self.token, self.token_file = new_token(self.endpoint)
        self.stopping = False
        self.reaping: set[asyncio.Task] = set()  # idle sessions being closed

    @property
    def endpoint(self) -> str:
        return f"http://{self.cfg['host']}:{self.cfg['port']}"

    # -- capacity ---------------------------------------------------------------------------------
    def capacity(self) -> dict:
        cost = self.cost.cost
        cores, memory = cpu_budget(self.config), memory_budget_mb(self.config)
        fits = session_capacity(cores, memory, cost)
        limit = int(self.cfg["max_sessions"])
        figures = {"sessions": min(fits, limit) if limit else fits, "cpu_per_session": cost.cpu,
                   "rss_mb_per_session": cost.rss_mb, "cpu_budget": cores, "memory_budget_mb": round(memory),
                   "source": cost.source, "placement": self.placement.kind,
                   "active": len(self.sessions) + len(self.opening)}
        if self.placement.kind == "ray":  # Ray places by the CPU each session declares, on the cluster's nodes
            figures.update(self.placement.describe())
        return figures

    def refusal(self) -> str:
        """"" when one more session fits, else why not."""
        capacity = self.capacity()
        limit = int(self.cfg["max_sessions"])
        if limit and capacity["active"] >= limit:
            return f"at capacity: {capacity['active']} sessions of sessions.max_sessions = {limit}"
        if self.placement.kind == "ray":
            return self.placement.room(len(self.opening))
        if capacity["active"] >= capacity["sessions"]:
            return (f"at capacity: {capacity['active']} sessions of {capacity['sessions']} "
                    f"({capacity['cpu_per_session']:g} cores each of a {capacity['cpu_budget']:g}-core budget, "
                    f"{capacity['rss_mb_per_session']:g} MB each of {capacity['memory_budget_mb']} MB; "
                    f"from {capacity['source']})")
        return ""

    # -- events -----------------------------------------------------------------------------------
    def event(self, kind: str, session_id: str = "", **data) -> None:
        self.event_seq += 1
        record = {"seq": self.event_seq, "ts": time.time(), "event": kind, "session": session_id, **data}
        self.events.append(record)
        self.new_event.set()
        self.new_event = asyncio.Event()
        LOG.info("%s %s %s", kind, session_id, data or "")

    # -- sessions ---------------------------------------------------------------------------------
    async def open(self, choices: dict) -> dict:
        session_id = "s" + secrets.token_hex(5)
        self.opening.add(session_id)
        try:
            handle, info = await self.placement.open(session_id, choices, float(self.cfg["start_timeout_s"]))
        finally:
            self.opening.discard(session_id)
        now = time.monotonic()
        self.sessions[session_id] = Live(session_id, handle, info, now, now)
        self.event("opened", session_id, node=info.get("node"), endpoints=info["endpoints"])
        return {**self.sessions[session_id].summary(), "token": info["token"], "recording": info.get("recording", ""),
                "pid": info.get("pid")}

    async def close(self, session_id: str, reason: str) -> dict:
        """Close it; while it stops it still counts against capacity and answers as closing."""
        live = self.sessions[session_id]
        live.closing = True
        try:
            report = await self.placement.close(live.handle, reason)
        finally:
            self.sessions.pop(session_id, None)
        return self.ended_with(live, reason, report, "closed")

    def ended_with(self, live: Live, reason: str, report: dict, kind: str) -> dict:
        record = {"id": live.id, "reason": reason, "unspoken": report.get("unspoken"),
                  "exit_code": report.get("exit_code"), "node": live.info.get("node"),
                  "recording": live.info.get("recording", "")}
        self.ended[live.id] = record
        while len(self.ended) > ENDED_KEPT:
            self.ended.popitem(last=False)
        self.event(kind, live.id, reason=reason, unspoken=record["unspoken"], node=record["node"])
        return record

    async def watch(self) -> None:
        """Every CHECK_S: each session's activity (idle ones are closed), health (a lost host
        fails its sessions with the reason) and CPU (the live cost); Ray's free CPU. One check
        that fails is logged and the others go on."""
        while True:
            await asyncio.sleep(CHECK_S)
            checks = [self.check(live) for live in list(self.sessions.values()) if not live.closing]
            results = await asyncio.gather(asyncio.to_thread(self.placement.refresh), *checks, return_exceptions=True)
            for problem in (r for r in results if isinstance(r, BaseException)):
                LOG.error("a session check failed: %s: %s", type(problem).__name__, problem)

    async def check(self, live: Live) -> None:
        try:
            status = await self.placement.status(live.handle)
        except HostLost as lost:
            if self.sessions.pop(live.id, None) is not None:
                self.ended_with(live, f"session lost: {lost}", {}, "failed")
                await self.placement.close(live.handle, "lost")  # what is left of it: ports, a Ray handle
            return
        now = time.monotonic()
        if status is None:
            live.missed += 1
            if live.missed >= MISSED_CHECKS and self.sessions.pop(live.id, None) is not None:
                self.ended_with(live, f"its supervisor did not answer {MISSED_CHECKS} checks", {}, "failed")
                await self.placement.close(live.handle, "not answering")
            return
        live.missed = 0
        fingerprint = activity_of(status)
        live.speaking = bool(live.fingerprint) and fingerprint[-1] != live.fingerprint[-1]  # speech was presented
        if fingerprint != live.fingerprint:
            live.fingerprint, live.last_active = fingerprint, now
        live.usage = await self.placement.usage(live.handle)
        if live.speaking and self.placement.kind == "local":
            self.cost.observe(live.usage["cpu"])
        if now - live.last_active > float(self.cfg["idle_timeout_s"]) and not live.closing:
            live.closing = True  # closed beside the checks: a stop takes seconds, the next round is in one
            task = asyncio.ensure_future(self.close(live.id, f"idle for {float(self.cfg['idle_timeout_s']):g} s"))
            self.reaping.add(task)
            task.add_done_callback(self.reaping.discard)

    async def close_all(self) -> None:
        self.stopping = True  # no session opens from here on
        while self.opening:  # those being started are closed once they are up
            await asyncio.sleep(0.2)
        await asyncio.gather(*(self.close(sid, "manager stopping") for sid, live in list(self.sessions.items())
                               if not live.closing), *self.reaping, return_exceptions=True)

    # -- HTTP -------------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.guard], client_max_size=MAX_BODY_BYTES)
        app.router.add_post("/sessions", self.post_session)
        app.router.add_get("/sessions", self.get_sessions)
        app.router.add_get("/sessions/{id}", self.get_session)
        app.router.add_delete("/sessions/{id}", self.delete_session)
        app.router.add_get("/s/{id}/", self.page)
        app.router.add_get("/events", self.get_events)
        app.router.add_get("/health", self.health)
        return app

    @web.middleware
    async def guard(self, request: web.Request, handler) -> web.StreamResponse:
        open_route = request.path == "/health" or request.path.startswith("/s/")
        refused = guard.refusal(request, self.hosts, self.token, needs_token=not open_route,
                                methods=("GET", "HEAD", "POST", "DELETE"))
        return await guard.guarded(request, handler, refused, lambda status, why: LOG.warning(
            "refused %s %s: %d %s", request.method, request.path[:60], status, why))

    async def post_session(self, request: web.Request) -> web.Response:
        body = await request.json()
        choices = {key: body[key] for key in ("persona", "voice", "record") if key in body}
        if any(not isinstance(choices.get(k, ""), str) for k in ("persona", "voice")) or \
                not isinstance(choices.get("record", False), bool):
            return web.json_response({"ok": False, "error": "persona and voice are strings, record is a boolean"},
                                     status=400)
        why = "the manager is stopping" if self.stopping else self.refusal()
        if why:
            retry = int(self.cfg["retry_after_s"])
            self.event("refused", reason=why)
            return web.json_response({"ok": False, "error": why, "retry_after_s": retry}, status=503,
                                     headers={"Retry-After": str(retry)})
        try:
            session = await self.open(choices)
        except (ValueError, SessionRefused) as exc:  # a choice the config refuses (an unknown voice, persona ...)
            return web.json_response({"ok": False, "error": f"session refused: {str(exc)[:300]}"}, status=400)
        except Exception as exc:  # the session did not start: say why, keep serving
            LOG.exception("session did not start")
            self.event("start_failed", reason=str(exc)[:300])
            return web.json_response({"ok": False, "error": f"the session did not start: {str(exc)[:300]}"},
                                     status=500)
        return web.json_response({"ok": True, **session}, status=201)

    async def get_sessions(self, _request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "sessions": [s.summary() for s in self.sessions.values()],
                                  "opening": len(self.opening), "capacity": self.capacity()})

    def find(self, request: web.Request) -> Live:
        session_id = request.match_info["id"]
        if session_id in self.sessions:
            return self.sessions[session_id]
        if session_id in self.ended:
            raise web.HTTPGone(text=_json({"ok": False, "error": f"session {session_id} has ended: "
                                           f"{self.ended[session_id]['reason']}", **self.ended[session_id]}),
                               content_type="application/json")
        raise web.HTTPNotFound(text=_json({"ok": False, "error": f"no session {session_id[:40]}"}),
                               content_type="application/json")

    async def get_session(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, **self.find(request).summary()})

    async def delete_session(self, request: web.Request) -> web.Response:
        live = self.find(request)
        if live.closing:
            return web.json_response({"ok": False, "error": f"session {live.id} is already closing"}, status=409)
        return web.json_response({"ok": True, **await self.close(live.id, "closed by the client")})

    async def page(self, request: web.Request) -> web.Response:
        live = self.find(request)
        if not live.info.get("web_url"):
            raise web.HTTPNotFound(text="this session has no web page (web.enabled is false)")
        raise web.HTTPTemporaryRedirect(live.info["web_url"])

    async def get_events(self, request: web.Request) -> web.Response:
        after = int(request.query.get("after", "0") or 0)
        wait = min(float(request.query.get("wait", "0") or 0), EVENTS_WAIT_MAX_S)
        if wait > 0 and not any(e["seq"] > after for e in self.events):
            waiting = self.new_event
            try:
                await asyncio.wait_for(waiting.wait(), wait)
            except asyncio.TimeoutError:
                pass
        events = [e for e in self.events if e["seq"] > after]
        return web.json_response({"ok": True, "events": events, "next": self.event_seq})

    async def health(self, _request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "sessions": len(self.sessions), "capacity": self.capacity()})

    # -- running ----------------------------------------------------------------------------------
    async def serve(self, ready=None, stop: asyncio.Event | None = None) -> None:
        from concurrent.futures import ThreadPoolExecutor

        # Session starts, stops and checks wait on other processes: their own bounded pool.
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(WORKER_THREADS, "sessions"))
        runner = web.AppRunner(self.app(), handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.cfg["host"], int(self.cfg["port"]))
        await site.start()
        watcher = asyncio.ensure_future(self.watch())
        if ready:
            ready(self)
        try:
            await (stop or asyncio.Event()).wait()
        finally:
            watcher.cancel()
            await self.close_all()
            await runner.cleanup()
            self.placement.shutdown()
            self.token_file.unlink(missing_ok=True)


def _json(record: dict) -> str:
    import json

    return json.dumps(record, default=str)
