"""The registry as an HTTP service (aiohttp, like the web gateway): `personas registry serve`.

Routes (all JSON unless noted; errors are {"error": message, "code": short code}):
    POST /v1/personas                               {persona_id, display_name?, metadata?} -> 201 persona
    GET  /v1/personas                               {"personas": [...]}
    GET  /v1/personas/{id}                          the persona
    POST /v1/personas/{id}/versions                 multipart: image / video / voice_ref files, options JSON
                                                    -> 202 {job_id, status_url}
    GET  /v1/jobs/{job_id}                          the job's status (state, progress, qc, version ...)
    GET  /v1/personas/{id}/versions                 {"versions": [...]}
    GET  /v1/personas/{id}/versions/{n | latest}    the PersonaPack JSON
    GET  /v1/assets/sha256/{hex}/url                {ref, url, expires_at}: signed (files) or presigned (S3)
    GET  /v1/assets/sha256/{hex}?exp=&sig=          the blob's bytes (403 on a bad or expired signature)
    GET  /v1/health                                 {"ok": true}

Bad input is answered 400/404/409/413 (never 500); a full build queue 503. Registry calls
block (database, object store), so each runs on a worker thread, never on the event loop.
Uploads are read as a stream and refused as soon as a file or the total passes its cap.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import threading

from aiohttp import BodyPartReader, web

from persona.pack import INPUT_KINDS
from registry.core import MAX_OPTIONS_BYTES, Registry
from registry.errors import BadRequest, RegistryError, TooLarge
from registry.settings import MIB, registry_section, service_url

log = logging.getLogger("registry.service")
#: Largest JSON body (POST /v1/personas); uploads are multipart and capped separately.
MAX_JSON_BYTES = 1 * MIB
#: Room for multipart boundaries and headers on top of the upload cap.
MULTIPART_SLACK = 1 * MIB
READ_CHUNK = 256 * 1024
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
CODES = {400: "bad_request", 403: "forbidden", 404: "not_found", 405: "method_not_allowed", 409: "exists",
         413: "too_large", 415: "unsupported_media_type", 503: "queue_full"}


def json_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": message, "code": code}, status=status)


@web.middleware
async def errors_as_json(request: web.Request, handler):
    """Every failure becomes {"error", "code"} with its status; a 500 only for our own bugs."""
    try:
        return await handler(request)
    except RegistryError as exc:
        return json_error(exc.status, exc.code, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return json_error(exc.status, CODES.get(exc.status, "http_error"), exc.text or exc.reason)
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return json_error(500, "internal", "internal error (the registry's log has the details)")


class RegistryService:
    """The HTTP surface over one Registry."""

    def __init__(self, registry: Registry, section: dict | None = None):
        self.registry = registry
        self.section = registry_section(section)
        self.max_file = int(self.section["max_file_mb"] * MIB)
        self.max_upload = int(self.section["max_upload_mb"] * MIB)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[errors_as_json], client_max_size=MAX_JSON_BYTES)
        for method, path, handler in self.routes():
            app.router.add_route(method, path, handler)
        return app

    def routes(self) -> list[tuple[str, str, object]]:
        return [
            ("GET", "/v1/health", self.on_health),
            ("POST", "/v1/personas", self.on_create_persona),
            ("GET", "/v1/personas", self.on_list_personas),
            ("GET", "/v1/personas/{persona_id}", self.on_persona),
            ("POST", "/v1/personas/{persona_id}/versions", self.on_create_version),
            ("GET", "/v1/personas/{persona_id}/versions", self.on_list_versions),
            ("GET", "/v1/personas/{persona_id}/versions/{version}", self.on_pack),
            ("GET", "/v1/jobs/{job_id}", self.on_job),
            ("GET", "/v1/assets/{algo}/{digest}/url", self.on_asset_url),
            ("GET", "/v1/assets/{algo}/{digest}", self.on_asset),
        ]

    @staticmethod
    async def call(fn, *args):
        return await asyncio.to_thread(fn, *args)

    async def on_health(self, _request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    # -- personas -------------------------------------------------------------------------------
    async def on_create_persona(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        persona = await self.call(self.registry.create_persona, body.get("persona_id"),
                                  body.get("display_name", ""), body.get("metadata"))
        return web.json_response(persona, status=201)

    async def on_list_personas(self, _request: web.Request) -> web.Response:
        return web.json_response({"personas": await self.call(self.registry.list_personas)})

    async def on_persona(self, request: web.Request) -> web.Response:
        return web.json_response(await self.call(self.registry.persona, request.match_info["persona_id"]))

    # -- versions and jobs ----------------------------------------------------------------------
    async def on_create_version(self, request: web.Request) -> web.Response:
        persona_id = request.match_info["persona_id"]
        await self.call(self.registry.persona, persona_id)  # 404 before reading megabytes
        files, options = await self.read_uploads(request)
        job_id = await self.call(self.registry.create_version, persona_id, files, options)
        return web.json_response({"job_id": job_id, "status_url": f"/v1/jobs/{job_id}"}, status=202)

    async def on_job(self, request: web.Request) -> web.Response:
        return web.json_response(await self.call(self.registry.job, request.match_info["job_id"]))

    async def on_list_versions(self, request: web.Request) -> web.Response:
        versions = await self.call(self.registry.list_versions, request.match_info["persona_id"])
        return web.json_response({"versions": versions})

    async def on_pack(self, request: web.Request) -> web.Response:
        pack = await self.call(self.registry.get_pack, request.match_info["persona_id"], request.match_info["version"])
        return web.Response(text=pack.to_json(), content_type="application/json")

    # -- assets ---------------------------------------------------------------------------------
    async def on_asset_url(self, request: web.Request) -> web.Response:
        return web.json_response(await self.call(self.registry.resolve_asset, asset_ref(request)))

    async def on_asset(self, request: web.Request) -> web.Response:
        data = await self.call(self.registry.read_signed_asset, asset_ref(request),
                               request.query.get("exp"), request.query.get("sig"))
        # Content-addressed: the bytes behind a ref never change, so the digest is a perfect ETag.
        return web.Response(body=data, content_type="application/octet-stream",
                            headers={"ETag": f'"{request.match_info["digest"]}"',
                                     "Cache-Control": "private, max-age=300"})

    # -- uploads --------------------------------------------------------------------------------
    async def read_uploads(self, request: web.Request) -> tuple[list[tuple[str, bytes, str]], dict | None]:
        """The files and options of a multipart build request, within the caps."""
        if request.content_length is not None and request.content_length > self.max_upload + MULTIPART_SLACK:
            raise TooLarge(f"upload of {request.content_length / MIB:.1f} MiB; "
                           f"the cap is {self.max_upload / MIB:g} MiB")
        if request.content_type != "multipart/form-data":
            raise BadRequest(f"expected multipart/form-data (fields {', '.join(INPUT_KINDS)}, options), "
                             f"got {request.content_type or 'no content type'}")
        try:
            return await self.read_parts(await request.multipart())
        except RegistryError:
            raise
        except (ValueError, RuntimeError, AssertionError, UnicodeDecodeError) as exc:  # a malformed body
            raise BadRequest(f"malformed multipart body: {exc}") from None

    async def read_parts(self, reader) -> tuple[list[tuple[str, bytes, str]], dict | None]:
        files, options, total = [], None, 0
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise BadRequest("nested multipart bodies are not accepted")
            if part.name == "options":
                options = parse_options(await read_part(part, MAX_OPTIONS_BYTES, "options"))
            elif part.name in INPUT_KINDS:
                data = await read_part(part, min(self.max_file, self.max_upload - total), part.filename or part.name,
                                       self.max_file)
                total += len(data)
                files.append((part.filename or f"{part.name}-{len(files)}", data, part.name))
            else:
                raise BadRequest(f"unknown form field {part.name!r}; expected {', '.join(INPUT_KINDS)} or options")
        return files, options


async def read_part(part, limit: int, name: str, file_cap: int | None = None) -> bytes:
    """One part's bytes; TooLarge as soon as it passes ``limit``."""
    data = bytearray()
    while chunk := await part.read_chunk(READ_CHUNK):
        data += chunk
        if len(data) > limit:
            if file_cap is not None and len(data) > file_cap:
                raise TooLarge(f"file {name!r} is over the cap of {file_cap / MIB:g} MiB per file")
            raise TooLarge(f"upload is over the cap in total (reached at {name!r})")
    return bytes(data)


def json_object(raw: bytes, what: str) -> dict:
    """``raw`` as a JSON object, or BadRequest naming ``what`` it was."""
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"{what} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BadRequest(f"{what} must be a JSON object")
    return value


def parse_options(raw: bytes) -> dict:
    return json_object(raw, "the options field")


async def read_json(request: web.Request) -> dict:
    """The request body as a JSON object, or BadRequest/TooLarge."""
    raw = await request.read()  # aiohttp refuses bodies over client_max_size with a 413
    return json_object(raw, "body")


def asset_ref(request: web.Request) -> str:
    return f"{request.match_info['algo']}/{request.match_info['digest']}"


class ServiceThread:
    """The service on its own thread and event loop, on real sockets: for tests and for
    programs that embed a registry service beside other work."""

    def __init__(self, registry: Registry, section: dict | None = None):
        self.section = registry_section(section)
        self.service = RegistryService(registry, self.section)
        self.url = service_url(self.section)
        self.ready = threading.Event()
        self.failure: BaseException | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop_event: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._run, name="registry-service", daemon=True)

    def start(self, timeout_s: float = START_TIMEOUT_S) -> str:
        """Start listening; returns the base URL once the socket is bound."""
        self.thread.start()
        if not self.ready.wait(timeout_s):
            raise TimeoutError(f"registry service did not start within {timeout_s} s")
        if self.failure is not None:
            raise RuntimeError(f"registry service failed to start: {self.failure}") from self.failure
        return self.url

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        if self.loop is not None and self.stop_event is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(timeout_s)

    def __enter__(self) -> "ServiceThread":
        self.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to start(); the thread ends either way
            self.failure = exc
            self.ready.set()

    async def _main(self) -> None:
        self.loop, self.stop_event = asyncio.get_running_loop(), asyncio.Event()
        await run_until(self.service, self.section, self.stop_event, self.ready.set)


async def run_until(service: RegistryService, section: dict, stop: asyncio.Event, on_ready) -> None:
    """Serve on ``registry.host``:``registry.port`` until ``stop`` is set."""
    runner = web.AppRunner(service.app(), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, section["host"], int(section["port"])).start()
        on_ready()
        await stop.wait()
    finally:
        await runner.cleanup()


def serve(config: dict | None = None) -> None:
    """`personas registry serve`: the embedded registry behind HTTP until SIGINT or SIGTERM."""
    section = registry_section(config)
    registry = Registry.open(section)
    service = RegistryService(registry, section)

    def announce() -> None:
        print(f"registry serving on {service_url(section)}", flush=True)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await run_until(service, section, stop, announce)

    try:
        asyncio.run(main())
    finally:
        registry.close()
