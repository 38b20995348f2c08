"""Who may ask an HTTP surface of ours, and in what form: the one rule for the web gateway
and the session manager. Host must be one this server answers to (DNS rebinding), an
Origin must be ours (cross-site requests), a state-changing request carries the token (in
``X-Personas-Token``, or as OpenAI-compatible clients send a key: ``Authorization: Bearer``),
and a body is a JSON object."""

from __future__ import annotations

import hmac
import json
from typing import Awaitable, Callable

from aiohttp import web

#: The header a request carries its token in.
TOKEN_HEADER = "X-Personas-Token"
#: Or, as OpenAI-compatible clients send their API key: ``Authorization: Bearer <token>``.
BEARER = "bearer "


def allowed_hosts(host: str, port: int, extra: list[str] | tuple[str, ...] = ()) -> set[str]:
    """The Host header values a server bound at ``host:port`` answers to: its bind address, the
    loopback names when it is bound to loopback, and the names the operator lists (lower case,
    with the port)."""
    names = {host, *extra}
    if host in ("127.0.0.1", "::1", "localhost"):
        names |= {"127.0.0.1", "localhost", "[::1]"}
    return {f"{name}:{port}".lower() for name in names}


def refusal(request: web.Request, hosts: set[str], token: str, needs_token: bool,
            methods: tuple[str, ...]) -> tuple[int, str] | None:
    host = request.headers.get("Host", "")
    if host.lower() not in hosts:
        return 421, f"this server answers to {sorted(hosts)[0]}, not Host {host[:60]!r}"
    origin = request.headers.get("Origin")
    if origin is not None and origin.lower() not in {f"http://{h}" for h in hosts}:
        return 403, f"requests from other sites are refused (Origin {origin[:60]!r})"
    if request.method not in methods:
        return 405, f"{request.method} is not served"
    if needs_token and not hmac.compare_digest(presented_token(request).encode(), token.encode()):
        return 401, f"{request.method} {request.path[:60]} needs the token in {TOKEN_HEADER} (or Authorization: Bearer)"
    return None


def presented_token(request: web.Request) -> str:
    """The token in ``X-Personas-Token``, else in ``Authorization: Bearer`` ("" when neither)."""
    token = request.headers.get(TOKEN_HEADER)
    if token is not None:
        return token
    authorization = request.headers.get("Authorization", "")
    return authorization[len(BEARER):].strip() if authorization[:len(BEARER)].lower() == BEARER else ""


async def body_refusal(request: web.Request) -> tuple[int, str] | None:
    if request.content_type != "application/json":
        return 415, f"POST bodies are application/json, not {request.content_type!r}"
    try:
        body = json.loads(await request.read() or b"{}")
    except web.HTTPRequestEntityTooLarge:
        raise
    except (ValueError, UnicodeDecodeError) as exc:
        return 400, f"the body is not JSON ({str(exc)[:80]})"
    if not isinstance(body, dict):
        return 400, "the body must be a JSON object"
    return None


def plain_refusal(status: int, why: str) -> web.Response:
    return web.json_response({"ok": False, "error": why}, status=status)


async def guarded(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
                  refused: tuple[int, str] | None, on_refusal: Callable[[int, str], None],
                  render: Callable[[int, str], web.Response] = plain_refusal) -> web.StreamResponse:
    """A middleware's body: a refusal (or a POST body that is not a JSON object) answers its 4xx
    with the reason (``on_refusal`` records it; ``render`` shapes it, by default ``{"ok": false,
    "error"}``); a handler that cannot use the request answers 400."""
    if refused is None and request.method == "POST":
        refused = await body_refusal(request)
    if refused is not None:
        on_refusal(*refused)
        return render(*refused)
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except (ValueError, TypeError, KeyError) as exc:  # a request the handler could not use
        return render(400, f"{type(exc).__name__}: {exc}"[:200])
