"""Web gateway: the browser surface, beside the five actors (supervised like them).

It only *consumes* the pipeline: presented A/V packets from the player's ``av_out`` PUB
socket and events from the timeline; it *acts* through the same doors as any client (the
control endpoint, the ingress). So a slow browser can never slow the pipeline -- at worst
this process falls behind and its own SUB socket drops.

Routes (aiohttp):
    GET  /            the page (static files, no CDN)
    GET  /audio.wav   one RIFF header, then PCM as it is presented (chunked transfer; no file)
    GET  /ws          binary A/V messages (JPEG + PCM, pts on the audio sample clock, epoch)
                      and JSON timeline events
    GET  /adapters    the TTS adapters' capability descriptors (control endpoint)
    GET  /config      the running configuration; POST /config {"changes": {...}} live keys
    POST /say         {"text": ...} fed to the ingress as LLM-like tokens
    POST /barge-in    interrupt now
    POST /v1/audio/speech  OpenAI's speech API, served by the gateway's own engine (gateway/speech.py)

Every request must name this server in ``Host`` (so a DNS-rebinding page cannot reach it) and,
when it carries an ``Origin``, come from this server's own origin (no other site may drive or
watch it). A POST is JSON (``application/json``, else 415), a JSON object (else 400 with the
reason), with the control token in ``X-Personas-Token`` or ``Authorization: Bearer`` (else 401);
the page gets the token inside its own HTML, which other origins cannot read. Under ``/v1/``
every refusal is in OpenAI's error shape, so OpenAI clients can read it.

A lagging WebSocket client first loses video frames (counted, on the timeline) while its
audio keeps flowing; past ``client_drop_frames`` it is disconnected with the reason.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import socket
import struct
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import msgpack
import zmq
import zmq.asyncio
from aiohttp import web

from actors.runtime import ActorContext

from . import guard
from .guard import allowed_hosts
from .speech import OPENAI_PREFIX, ROUTE as SPEECH_ROUTE, SpeechService, openai_refusal, wav_header
from protocol import AVPacket, ProtocolError, TimelineEvent, decode, tokenize_like_llm
from protocol.control_endpoint import TOKEN_ENV, AsyncControlClient
from protocol.names import GATEWAY
from protocol.security import client_keys, secure_client
from protocol.transport import make_socket

NAME = GATEWAY
STATIC = Path(__file__).resolve().parent / "static"
PAGE_FILES = ("index.html", "app.js", "silence-watch.js", "style.css")
CONTENT_TYPES = {"html": "text/html", "js": "application/javascript", "css": "text/css"}
#: Small kernel send buffer per WebSocket, so a client that stops reading shows up as lagging in
#: well under a second instead of hiding behind megabytes of socket buffer.
CLIENT_SNDBUF = 64 * 1024
QUIET_STAGES = {"heartbeat", "credit", "send", "span", "render", "stitch", "ready"}
#: The system channel (barge-in) is read at least this often.
HOUSEKEEPING_S = 0.02
#: Longest text POST /say takes.
MAX_SAY_CHARS = 10_000
#: Texts POST /say holds (one being fed, the others waiting their turn); beyond: 429.
MAX_SAY_WAITING = 8


@dataclass(eq=False)  # identity semantics: clients live in a set
class Client:
    ws: web.WebSocketResponse
    peer: str
    queue: deque = field(default_factory=deque)  # bounded by fan_out: lag, then disconnect
    dropped_video: int = 0
    lagging: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)


def av_message(packet: AVPacket, jpeg: bytes | None, received_ns: int) -> bytes:
    """[u32 header length][JSON header][JPEG][PCM] -- what the page decodes."""
    header = json.dumps({
        "type": "av", "epoch": packet.epoch, "frame": packet.frame_index, "pts": packet.pts_sample,
        "sr": packet.sample_rate, "fps": packet.fps, "kind": packet.kind, "utterance": packet.utterance_id,
        "chunk": packet.sequence_id, "final": packet.final, "jpeg": len(jpeg or b""), "pcm": len(packet.pcm),
        "t_ns": received_ns, "provenance": packet.provenance.as_dict() if packet.provenance else None,
    }, separators=(",", ":")).encode()
    return struct.pack("<I", len(header)) + header + (jpeg or b"") + bytes(packet.pcm)


class Gateway:
    def __init__(self, ctx: ActorContext):
        self.ctx = ctx
        self.cfg, self.endpoints = ctx.config[NAME], ctx.endpoints
        self.sample_rate = int(ctx.config["media"]["sample_rate"])
        self.lag_frames, self.drop_frames = int(self.cfg["client_lag_frames"]), int(self.cfg["client_drop_frames"])
        self.url = f"http://{self.cfg['host']}:{self.cfg['port']}/"
        self.clients: set[Client] = set()
        self.wav_listeners: set[asyncio.Queue] = set()
        self.feeds: set[asyncio.Task] = set()  # /say feeds running or waiting their turn
        self.feeding = asyncio.Lock()
        self.counts = {"packets": 0, "clients": 0, "dropped_video": 0, "disconnected_slow": 0, "wav_listeners": 0}
        self.token = os.environ.get(TOKEN_ENV, "")
        self.curve = client_keys(ctx.config)  # the public endpoints it connects to may be CURVE servers
        self.hosts = allowed_hosts(self.cfg["host"], int(self.cfg["port"]), self.cfg["allowed_hosts"])
        self.page = {name: (STATIC / name).read_bytes() for name in PAGE_FILES}  # read once
        self.page["index.html"] = self.page["index.html"].replace(
            b"<head>", b'<head>\n  <meta name="personas-token" content="' + self.token.encode() + b'">', 1)
        self.speech = SpeechService(ctx.config, ctx.emit, self.note_refusal)
        self.speech.prepare()

    def describe(self) -> dict:
        return {"actor": NAME, "url": self.url, "routes": [f"{method} {path}" for method, path, _ in self.routes()],
                "consumes": ["av_packet <- player av_out (SUB)", "timeline (SUB)"], "produces": ["HTTP", "WebSocket"],
                "speech": self.speech.describe()}

    def run(self) -> None:
        self.zctx = zmq.asyncio.Context()
        self.control = AsyncControlClient(self.zctx, self.endpoints["control"], token=self.token, curve=self.curve)
        self.ingress = secure_client(make_socket(self.zctx, zmq.PUSH, hwm=10_000, linger_ms=0), self.curve)
        self.ingress.connect(self.endpoints["ingress"])
        try:
            asyncio.run(self.serve())
        finally:
            self.ingress.close()
            self.zctx.term()

    async def serve(self) -> None:
        runner = web.AppRunner(self.app(), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, self.cfg["host"], int(self.cfg["port"])).start()
        self.ctx.ready(self.describe())
        tasks = [asyncio.ensure_future(t) for t in (self.pump_av(), self.pump_timeline())]
        try:
            await self.housekeeping()
        finally:
            for task in tasks:
                task.cancel()
            await runner.cleanup()
            self.speech.close()

    async def housekeeping(self) -> None:
        while self.ctx.running:
            self.ctx.receive(self)
            self.counts["clients"], self.counts["wav_listeners"] = len(self.clients), len(self.wav_listeners)
            self.ctx.heartbeat({**self.counts, **self.speech.counts})
            await asyncio.sleep(HOUSEKEEPING_S)

    def on_epoch(self, epoch: int, cause: str, _issued_at_ns: int = 0) -> None:
        # The gateway holds no pipeline work, but it acknowledges every epoch like any actor
        # (the supervisor re-sends a barge-in until all have). Pages flush old audio themselves
        # when the first packet of the new epoch reaches them.
        self.ctx.adopt_epoch(epoch, cause)

    # -- from the pipeline to the clients -------------------------------------------------------
    async def pump_av(self) -> None:
        sub = secure_client(make_socket(self.zctx, zmq.SUB, hwm=4 * 25, linger_ms=0), self.curve)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(self.endpoints["av_out"])
        while True:
            frames = await sub.recv_multipart(copy=False)
            try:
                msg = decode(frames)
            except ProtocolError:
                continue
            if isinstance(msg, AVPacket):
                self.counts["packets"] += 1
                self.fan_out(msg)

    async def pump_timeline(self) -> None:
        sub = secure_client(make_socket(self.zctx, zmq.SUB, hwm=10_000, linger_ms=0), self.curve)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(self.endpoints["timeline"])
        while True:
            frames = await sub.recv_multipart()
            try:
                msg = decode(frames)
            except ProtocolError:
                continue
            if isinstance(msg, TimelineEvent) and self.clients and self.worth_showing(msg):
                self.broadcast_text(self.event_json(msg))

    @staticmethod
    def worth_showing(event: TimelineEvent) -> bool:
        return not (event.stage in QUIET_STAGES and event.result == "ok" and not (event.actor == "tts" and event.stage == "credit"))

    @staticmethod
    def event_json(event: TimelineEvent) -> str:
        record = event.as_record()
        if record["stage"] == "present":
            record["data"] = {k: record["data"].get(k) for k in ("tick", "kind", "depth", "faded")}
        return json.dumps(record, separators=(",", ":"), default=str)

    def broadcast_text(self, text: str) -> None:
        for client in list(self.clients):
            if len(client.queue) < self.drop_frames:
                client.queue.append(text)
                client.wake.set()

    def jpeg_of(self, packet: AVPacket) -> bytes:
        from PIL import Image

        image = Image.frombuffer("RGB", (packet.width, packet.height), packet.pixels, "raw", "RGB", 0, 1)  # no copy
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=int(self.cfg["jpeg_quality"]))
        return out.getvalue()

    def fan_out(self, packet: AVPacket) -> None:
        received = time.monotonic_ns()
        full = av_message(packet, self.jpeg_of(packet) if self.clients else None, received)  # encode once, if watched
        lagging = any(len(c.queue) >= self.lag_frames for c in self.clients)
        audio_only = av_message(packet, None, received) if lagging else b""
        for client in list(self.clients):
            self.queue_for(client, full, audio_only)
        for listener in list(self.wav_listeners):
            try:
                listener.put_nowait(bytes(packet.pcm))
            except asyncio.QueueFull:
                self.wav_listeners.discard(listener)  # its HTTP response ends; the pipeline never waits

    def queue_for(self, client: Client, full: bytes, audio_only: bytes) -> None:
        """Queue one packet for one client: whole, audio only (lagging), or not at all (too slow)."""
        if len(client.queue) >= self.drop_frames:
            self.clients.discard(client)
            self.counts["disconnected_slow"] += 1
            self.ctx.emit("client", "error", surface="ws",
                          data={"client": client.peer, "why": f"{len(client.queue)} frames behind", "action": "disconnected"})
            asyncio.ensure_future(client.ws.close(code=4000, message=b"too slow: audio backlog over the limit"))
            return
        if len(client.queue) >= self.lag_frames:
            client.queue.append(audio_only)
            client.dropped_video += 1
            self.counts["dropped_video"] += 1
            if not client.lagging:
                client.lagging = True
                self.ctx.emit("client", "warn", surface="ws", data={"client": client.peer, "lagging": True,
                                                                    "queued": len(client.queue)})
        else:
            if client.lagging and len(client.queue) < self.lag_frames // 2:
                client.lagging = False
                self.ctx.emit("client", surface="ws", data={"client": client.peer, "lagging": False,
                                                             "dropped_video": client.dropped_video})
            client.queue.append(full)
        client.wake.set()

    # -- routes ---------------------------------------------------------------------------------
    def routes(self) -> list[tuple[str, str, object]]:
        return [("GET", "/", self.static), ("GET", "/favicon.ico", self.favicon), ("GET", "/static/{name}", self.static),
                ("GET", "/audio.wav", self.audio_wav), ("GET", "/ws", self.websocket), ("GET", "/adapters", self.adapters),
                ("GET", "/config", self.get_config), ("POST", "/config", self.post_config), ("POST", "/say", self.say),
                ("POST", "/barge-in", self.barge_in), ("POST", SPEECH_ROUTE, self.speech.handle)]

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024, middlewares=[self.guard])
        for method, path, handler in self.routes():
            if method == "GET":
                app.router.add_get(path, handler)  # HEAD too, as browsers and probes expect
            else:
                app.router.add_route(method, path, handler)
        return app

    @web.middleware
    async def guard(self, request: web.Request, handler) -> web.StreamResponse:
        """Who may ask (Host, Origin, token) and in what form (JSON): refusals are 4xx with the
        reason, on the timeline too; no request reaches a handler that would fail on it."""
        route = f"{request.method} {request.path}"

        def on_refusal(status: int, why: str) -> None:
            self.note_refusal(route, status, why, request.remote)

        if not request.path.startswith(OPENAI_PREFIX):
            return await guard.guarded(request, handler, self.refusal(request), on_refusal)
        try:  # OpenAI's clients read errors in OpenAI's shape: aiohttp's own (404, 405, 413) too
            return await guard.guarded(request, handler, self.refusal(request), on_refusal, openai_refusal)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            why = f"{exc.reason}: {route[:80]}" if exc.status in (404, 405) else exc.text or exc.reason
            on_refusal(exc.status, why)
            return openai_refusal(exc.status, why)

    def note_refusal(self, route: str, status: int, why: str, client: str | None = None) -> None:
        self.ctx.emit("web_refused", "error", surface="http",
                      data={"route": route[:80], "status": status, "why": why, "client": client or "?"})

    def refusal(self, request: web.Request) -> tuple[int, str] | None:
        return guard.refusal(request, self.hosts, self.token, needs_token=request.method == "POST",
                             methods=("GET", "HEAD", "POST"))

    async def favicon(self, _request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info.get("name", "index.html")
        if name not in self.page:
            raise web.HTTPNotFound()
        return web.Response(body=self.page[name], content_type=CONTENT_TYPES[name.rsplit(".", 1)[1]], charset="utf-8")

    async def audio_wav(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "audio/wav", "Cache-Control": "no-store"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(wav_header(self.sample_rate))
        queue: asyncio.Queue = asyncio.Queue(maxsize=5 * 25)
        self.wav_listeners.add(queue)
        try:
            while queue in self.wav_listeners or not queue.empty():
                try:
                    block = await asyncio.wait_for(queue.get(), timeout=1.0)
                except asyncio.TimeoutError:
                    continue
                await response.write(block)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.wav_listeners.discard(queue)
        return response

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=20, max_msg_size=64 * 1024)
        await ws.prepare(request)
        sock = request.transport.get_extra_info("socket") if request.transport else None
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, CLIENT_SNDBUF)
        client = Client(ws, request.remote or "?")
        self.clients.add(client)
        media = self.ctx.config["media"]
        await ws.send_str(json.dumps({"type": "hello", "sr": self.sample_rate, "fps": media["fps"], "width": media["width"],
                                      "height": media["height"], "lag_frames": self.lag_frames}))
        self.ctx.emit("client", surface="ws", data={"client": client.peer, "connected": True})
        task = asyncio.ensure_future(self.send_to_client(client))
        try:
            async for _ in ws:  # the page talks over HTTP; incoming messages are ignored
                pass
        finally:
            task.cancel()
            self.clients.discard(client)
            self.ctx.emit("client", surface="ws", data={"client": client.peer, "connected": False,
                                                        "dropped_video": client.dropped_video})
        return ws

    async def send_to_client(self, client: Client) -> None:
        ws = client.ws
        while not ws.closed:
            try:  # every wait has a timeout: a closed socket is noticed even without traffic
                await asyncio.wait_for(client.wake.wait(), timeout=1.0)
            except asyncio.TimeoutError:
                continue
            client.wake.clear()
            while client.queue and not ws.closed:
                item = client.queue.popleft()
                if isinstance(item, str):
                    await ws.send_str(item)
                else:
                    await ws.send_bytes(item)

    async def call(self, cmd: str, **args) -> dict:
        reply = await self.control.call(cmd, **args)
        if reply is None:
            raise web.HTTPServiceUnavailable(text="supervisor did not answer")
        return reply

    async def adapters(self, _request: web.Request) -> web.Response:
        return web.json_response(await self.call("adapters"))

    async def get_config(self, request: web.Request) -> web.Response:
        return web.json_response(await self.call("config_get", key=request.query.get("key", "")))

    async def post_config(self, request: web.Request) -> web.Response:
        body = await request.json()
        changes = body.get("changes")
        if not isinstance(changes, dict) or not changes:
            raise web.HTTPBadRequest(text="give a non-empty object 'changes' of section.key -> value")
        reply = await self.call("config_set", changes=changes)
        return web.json_response(reply, status=200 if reply.get("ok") else 400)

    async def say(self, request: web.Request) -> web.Response:
        body = await request.json()
        text = body.get("text")
        text = text.strip() if isinstance(text, str) else ""
        if not text or len(text) > MAX_SAY_CHARS:
            raise web.HTTPBadRequest(text=f"give 1..{MAX_SAY_CHARS} characters of 'text'")
        if len(self.feeds) >= MAX_SAY_WAITING:
            return web.json_response({"ok": False, "error": f"{MAX_SAY_WAITING} texts are already waiting to be said"},
                                     status=429)
        self.feeds.add(asyncio.ensure_future(self.feed(text)))
        return web.json_response({"ok": True, "chars": len(text), "waiting": len(self.feeds) - 1})

    async def feed(self, text: str) -> None:
        """Texts are fed one after another, never interleaved."""
        try:
            async with self.feeding:
                rate = float(self.cfg["say_rate"])
                for token in tokenize_like_llm(text, seed=int(time.time())):
                    await self.ingress.send(token.encode())
                    await asyncio.sleep(1 / rate)
                await self.ingress.send(msgpack.packb({"type": "end"}))
        finally:
            self.feeds.discard(asyncio.current_task())

    async def barge_in(self, _request: web.Request) -> web.Response:
        """Interrupt what is spoken; texts still being fed, or waiting to be, are not fed."""
        for task in list(self.feeds):
            task.cancel()
        await self.ingress.send(msgpack.packb({"type": "barge_in"}))
        return web.json_response({"ok": True})
