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

A lagging WebSocket client first loses video frames (counted, on the timeline) while its
audio keeps flowing; past ``client_drop_frames`` it is disconnected with the reason.
"""

from __future__ import annotations

import asyncio
import io
import json
import socket
import struct
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import msgpack
import zmq
import zmq.asyncio

from protocol import AVPacket, ProtocolError, TimelineEvent, decode
from protocol.transport import make_socket

from .runtime import ActorContext

NAME = "web"
STATIC = Path(__file__).resolve().parent / "web_static"
#: Small kernel send buffer per WebSocket, so a client that stops reading shows up as lagging in
#: well under a second instead of hiding behind megabytes of socket buffer.
CLIENT_SNDBUF = 64 * 1024
QUIET_STAGES = {"heartbeat", "credit", "send", "span", "render", "stitch", "ready"}


@dataclass(eq=False)  # identity semantics: clients live in a set
class Client:
    ws: object
    peer: str
    queue: deque = field(default_factory=deque)  # bounded by fan_out: lag, then disconnect
    dropped_video: int = 0
    lagging: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)


def wav_header(sample_rate: int) -> bytes:
    """A RIFF/WAVE header for a stream of unknown length (sizes set to the maximum)."""
    return (b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
            + b"data" + struct.pack("<I", 0xFFFFFFFF))


def av_message(packet: AVPacket, jpeg: bytes | None, received_ns: int) -> bytes:
    """[u32 header length][JSON header][JPEG][PCM] -- what the page decodes."""
    header = json.dumps({
        "type": "av", "epoch": packet.epoch, "frame": packet.frame_index, "pts": packet.pts_sample,
        "sr": packet.sample_rate, "fps": packet.fps, "kind": packet.kind, "utterance": packet.utterance_id,
        "chunk": packet.sequence_id, "final": packet.final, "jpeg": len(jpeg or b""), "pcm": len(packet.pcm),
        "t_ns": received_ns, "provenance": packet.provenance,
    }, separators=(",", ":")).encode()
    return struct.pack("<I", len(header)) + header + (jpeg or b"") + bytes(packet.pcm)


def run(ctx: ActorContext) -> None:
    from aiohttp import web

    cfg, endpoints = ctx.config["web"], ctx.endpoints
    sample_rate = int(ctx.config["media"]["sample_rate"])
    lag_frames, drop_frames = int(cfg["client_lag_frames"]), int(cfg["client_drop_frames"])
    zctx = zmq.asyncio.Context()
    clients: set[Client] = set()
    wav_listeners: set[asyncio.Queue] = set()
    stats = {"packets": 0, "clients": 0, "dropped_video": 0, "disconnected_slow": 0, "wav_listeners": 0}

    def jpeg_of(packet: AVPacket) -> bytes:
        from PIL import Image

        image = Image.frombuffer("RGB", (packet.width, packet.height), bytes(packet.pixels), "raw", "RGB", 0, 1)
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=int(cfg["jpeg_quality"]))
        return out.getvalue()

    def fan_out(packet: AVPacket) -> None:
        received = time.monotonic_ns()
        jpeg = jpeg_of(packet) if clients else None  # encode once, only when someone watches
        full = av_message(packet, jpeg, received)
        audio_only = None
        for client in list(clients):
            if len(client.queue) >= drop_frames:
                clients.discard(client)
                stats["disconnected_slow"] += 1
                ctx.emit("client", "error", surface="ws",
                         data={"client": client.peer, "why": f"{len(client.queue)} frames behind", "action": "disconnected"})
                asyncio.ensure_future(client.ws.close(code=4000, message=b"too slow: audio backlog over the limit"))
                continue
            if len(client.queue) >= lag_frames:
                audio_only = audio_only or av_message(packet, None, received)
                client.queue.append(audio_only)
                client.dropped_video += 1
                stats["dropped_video"] += 1
                if not client.lagging:
                    client.lagging = True
                    ctx.emit("client", "warn", surface="ws", data={"client": client.peer, "lagging": True,
                                                                   "queued": len(client.queue)})
            else:
                if client.lagging and len(client.queue) < lag_frames // 2:
                    client.lagging = False
                    ctx.emit("client", surface="ws", data={"client": client.peer, "lagging": False,
                                                            "dropped_video": client.dropped_video})
                client.queue.append(full)
            client.wake.set()
        for listener in list(wav_listeners):
            try:
                listener.put_nowait(bytes(packet.pcm))
            except asyncio.QueueFull:
                wav_listeners.discard(listener)  # its HTTP response ends; the pipeline never waits

    async def pump_av() -> None:
        sub = make_socket(zctx, zmq.SUB, hwm=4 * 25, linger_ms=0)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(endpoints["av_out"])
        while True:
            frames = await sub.recv_multipart(copy=False)
            try:
                msg = decode(frames)
            except ProtocolError:
                continue
            if isinstance(msg, AVPacket):
                stats["packets"] += 1
                fan_out(msg)

    async def pump_timeline() -> None:
        sub = make_socket(zctx, zmq.SUB, hwm=10_000, linger_ms=0)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(endpoints["timeline"])
        while True:
            frames = await sub.recv_multipart()
            try:
                msg = decode(frames)
            except ProtocolError:
                continue
            if not isinstance(msg, TimelineEvent) or not clients:
                continue
            if msg.stage in QUIET_STAGES and msg.result == "ok" and not (msg.actor == "tts" and msg.stage == "credit"):
                continue
            record = msg.as_record()
            if record["stage"] == "present":
                record["data"] = {k: record["data"].get(k) for k in ("tick", "kind", "depth", "faded")}
            text = json.dumps(record, separators=(",", ":"), default=str)
            for client in list(clients):
                if len(client.queue) < drop_frames:
                    client.queue.append(text)
                    client.wake.set()

    def on_epoch(epoch: int, cause: str, _issued_at_ns: int = 0) -> None:
        # The gateway holds no pipeline work, but it acknowledges every epoch like any actor
        # (the supervisor re-sends a barge-in until all have). Pages flush old audio themselves
        # when the first packet of the new epoch reaches them.
        ctx.adopt_epoch(epoch, cause)

    async def housekeeping() -> None:
        while ctx.running:
            ctx.handle_system(on_epoch)
            for _ in ctx.drain(ctx.inbox):
                pass
            stats["clients"], stats["wav_listeners"] = len(clients), len(wav_listeners)
            ctx.heartbeat(dict(stats))
            await asyncio.sleep(0.02)  # the system channel (barge-in) is read at least every 20 ms
        raise web.GracefulExit()

    control_lock = asyncio.Lock()

    async def control(cmd: str, **args) -> dict:
        async with control_lock:
            sock = make_socket(zctx, zmq.REQ, linger_ms=0)
            sock.connect(endpoints["control"])
            try:
                await sock.send(msgpack.packb({"cmd": cmd, **args}, use_bin_type=True))
                if not await sock.poll(3000):
                    raise web.HTTPServiceUnavailable(text="supervisor did not answer")
                return msgpack.unpackb(await sock.recv(), raw=False)
            finally:
                sock.close()

    ingress = make_socket(zctx, zmq.PUSH, hwm=10_000, linger_ms=0)
    ingress.connect(endpoints["ingress"])

    async def feed(text: str) -> None:
        from supervisor.client import tokenize_like_llm

        rate = float(cfg["say_rate"])
        for token in tokenize_like_llm(text, seed=int(time.time())):
            await ingress.send(token.encode())
            await asyncio.sleep(1 / rate)
        await ingress.send(msgpack.packb({"type": "end"}))

    # -- routes -----------------------------------------------------------------------------------
    page = {name: (STATIC / name).read_bytes() for name in ("index.html", "app.js", "silence-watch.js", "style.css")}  # read once
    types = {"html": "text/html", "js": "application/javascript", "css": "text/css"}

    async def static(request):
        name = request.match_info.get("name", "index.html")
        if name not in page:
            raise web.HTTPNotFound()
        return web.Response(body=page[name], content_type=types[name.rsplit(".", 1)[1]], charset="utf-8")

    async def audio_wav(request):
        response = web.StreamResponse(headers={"Content-Type": "audio/wav", "Cache-Control": "no-store"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(wav_header(sample_rate))
        queue: asyncio.Queue = asyncio.Queue(maxsize=5 * 25)
        wav_listeners.add(queue)
        try:
            while queue in wav_listeners or not queue.empty():
                try:
                    block = await asyncio.wait_for(queue.get(), timeout=1.0)
                except asyncio.TimeoutError:
                    continue
                await response.write(block)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            wav_listeners.discard(queue)
        return response

    async def websocket(request):
        ws = web.WebSocketResponse(heartbeat=20, max_msg_size=64 * 1024)
        await ws.prepare(request)
        sock = request.transport.get_extra_info("socket") if request.transport else None
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, CLIENT_SNDBUF)
        client = Client(ws, request.remote or "?")
        clients.add(client)
        media = ctx.config["media"]
        await ws.send_str(json.dumps({"type": "hello", "sr": sample_rate, "fps": media["fps"], "width": media["width"],
                                      "height": media["height"], "lag_frames": lag_frames}))
        ctx.emit("client", surface="ws", data={"client": client.peer, "connected": True})

        async def sender():
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

        task = asyncio.ensure_future(sender())
        try:
            async for _ in ws:  # the page talks over HTTP; incoming messages are ignored
                pass
        finally:
            task.cancel()
            clients.discard(client)
            ctx.emit("client", surface="ws", data={"client": client.peer, "connected": False,
                                                   "dropped_video": client.dropped_video})
        return ws

    async def adapters(_request):
        return web.json_response(await control("adapters"))

    async def get_config(request):
        return web.json_response(await control("config_get", key=request.query.get("key", "")))

    async def post_config(request):
        body = await request.json()
        reply = await control("config_set", changes=body.get("changes", {}))
        return web.json_response(reply, status=200 if reply.get("ok") else 400)

    async def say(request):
        body = await request.json()
        text = str(body.get("text", "")).strip()
        if not text or len(text) > 10_000:
            raise web.HTTPBadRequest(text="give 1..10000 characters of 'text'")
        asyncio.ensure_future(feed(text))
        return web.json_response({"ok": True, "chars": len(text)})

    async def barge_in(_request):
        await ingress.send(msgpack.packb({"type": "barge_in"}))
        return web.json_response({"ok": True})

    app = web.Application(client_max_size=64 * 1024)
    app.router.add_get("/", static)
    app.router.add_get("/favicon.ico", lambda _request: web.Response(status=204))
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/audio.wav", audio_wav)
    app.router.add_get("/ws", websocket)
    app.router.add_get("/adapters", adapters)
    app.router.add_get("/config", get_config)
    app.router.add_post("/config", post_config)
    app.router.add_post("/say", say)
    app.router.add_post("/barge-in", barge_in)

    async def main() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, cfg["host"], int(cfg["port"]))
        await site.start()
        url = f"http://{cfg['host']}:{cfg['port']}/"
        ctx.ready({"actor": NAME, "url": url, "routes": ["/", "/audio.wav", "/ws", "/adapters", "/config", "/say", "/barge-in"],
                   "consumes": ["av_packet <- player av_out (SUB)", "timeline (SUB)"], "produces": ["HTTP", "WebSocket"]})
        tasks = [asyncio.ensure_future(t) for t in (pump_av(), pump_timeline())]
        try:
            await housekeeping()
        except web.GracefulExit:
            pass
        finally:
            for task in tasks:
                task.cancel()
            await runner.cleanup()

    asyncio.run(main())
    ingress.close()
    zctx.term()
