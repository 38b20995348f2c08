"""The registry over HTTP, with the embedded Registry's method names, so the CLI and the driver
take whichever ``open_registry`` gives them. Standard library only (urllib): a driver that
talks to a remote registry imports neither SQLAlchemy nor boto3."""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Callable, Iterable

from persona.blobs import LocalBlobStore, ref_of
from persona.pack import PackError, PersonaPack, parse_ref
from registry.errors import BadRequest, RegistryError, Unavailable, error_for
from registry.jobs import as_input, wait_for_job
from registry.settings import registry_section

#: Largest answer the client reads (a pack, a list, an asset); more is refused, not buffered.
MAX_RESPONSE_BYTES = 256 * 1024 * 1024
WAIT_POLL_S = 0.25


def quote(segment) -> str:
    return urllib.parse.quote(str(segment), safe="")


class RegistryClient:
    """A registry service at ``base_url`` (e.g. ``http://127.0.0.1:8090``). With ``cache_dir``,
    what cannot change is kept locally: blobs (their key is their hash, checked) and packs of a
    named version (published versions are immutable), so a warm start reads no network."""

    def __init__(self, base_url: str, timeout_s: float = 30.0, cache_dir: str | None = None):
        self.base_url = base_url.rstrip("/")
        self.timeout_s = float(timeout_s)
        self.cache = LocalBlobStore(cache_dir) if cache_dir else None

    def __enter__(self) -> "RegistryClient":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def close(self) -> None:
        """Nothing is held open between requests; here for symmetry with Registry."""

    # -- transport ------------------------------------------------------------------------------
    def fetch(self, url: str, method: str = "GET", body: bytes | None = None, headers: dict | None = None) -> bytes:
        """The body of a 2xx answer; the server's error as a RegistryError subclass otherwise."""
        request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return read_capped(response)
        except urllib.error.HTTPError as exc:
            with exc:
                raise error_from(exc.code, read_capped(exc)) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            raise Unavailable(f"registry at {self.base_url} unreachable: {reason}") from None

    def call(self, method: str, path: str, payload: dict | None = None) -> dict:
        body = None if payload is None else json.dumps(payload).encode()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        return json.loads(self.fetch(self.base_url + path, method, body, headers))

    # -- the Registry's methods -----------------------------------------------------------------
    def create_persona(self, persona_id: str, display_name: str = "", metadata: dict | None = None) -> dict:
        return self.call("POST", "/v1/personas",
                         {"persona_id": persona_id, "display_name": display_name, "metadata": metadata or {}})

    def list_personas(self) -> list[dict]:
        return self.call("GET", "/v1/personas")["personas"]

    def persona(self, persona_id: str) -> dict:
        return self.call("GET", f"/v1/personas/{quote(persona_id)}")

    def create_version(self, persona_id: str, inputs: Iterable, options: dict | None = None) -> str:
        """Upload ``inputs`` (objects with name, data, kind; or such tuples) and start a build; the job id."""
        body, content_type = multipart(inputs, options)
        url = f"{self.base_url}/v1/personas/{quote(persona_id)}/versions"
        return json.loads(self.fetch(url, "POST", body, {"Content-Type": content_type}))["job_id"]

    def job(self, job_id: str) -> dict:
        return self.call("GET", f"/v1/jobs/{quote(job_id)}")

    def wait_job(self, job_id: str, timeout: float, on_progress: Callable[[float, str], None] | None = None) -> dict:
        return wait_for_job(lambda: self.job(job_id), timeout, on_progress, WAIT_POLL_S)

    def list_versions(self, persona_id: str) -> list[dict]:
        return self.call("GET", f"/v1/personas/{quote(persona_id)}/versions")["versions"]

    def get_pack(self, persona_id: str, version: int | str | None = None) -> PersonaPack:
        """The pack, validated here as well (what came over the wire is checked like a file read)."""
        if "@" in persona_id and version is None:
            try:
                persona_id, version = parse_ref(persona_id)
            except PackError as exc:
                raise BadRequest(str(exc)) from None
        cached = self.cached_pack(persona_id, version)
        text = cached.read_bytes() if cached and cached.exists() else \
            self.fetch(f"{self.base_url}/v1/personas/{quote(persona_id)}/versions/{quote(version or 'latest')}")
        try:
            pack = PersonaPack.from_json(text)
        except PackError as exc:
            raise RegistryError(f"the registry sent an invalid pack for {persona_id}: {exc}") from None
        if cached and not cached.exists():
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(".tmp")
            tmp.write_bytes(text)
            tmp.replace(cached)
        return pack

    def cached_pack(self, persona_id: str, version) -> Path | None:
        if self.cache is None or not str(version or "").isdigit():
            return None  # "latest" moves: always asked for
        origin = hashlib.sha256(self.base_url.encode()).hexdigest()[:16]  # one registry's ada@1 is not another's
        return self.cache.root / "packs" / origin / f"{persona_id}@{int(version)}.json"

    def resolve_asset(self, ref: str) -> dict:
        """{"ref", "url", "expires_at"}; the URL works without credentials until it expires."""
        return self.call("GET", f"/v1/assets/{asset_path(ref)}/url")

    def read_asset(self, ref: str) -> bytes:
        if self.cache is not None and self.cache.exists(ref):
            return self.cache.get(ref)
        data = self.fetch(self.resolve_asset(ref)["url"])
        if ref_of(data) != ref:
            raise RegistryError(f"asset {ref} arrived with other content")
        if self.cache is not None:
            self.cache.put(data)
        return data


def asset_path(ref: str) -> str:
    algo, _, digest = str(ref).partition("/")
    return f"{quote(algo)}/{quote(digest)}"


def read_capped(response) -> bytes:
    data = response.read(MAX_RESPONSE_BYTES + 1)
    if len(data) > MAX_RESPONSE_BYTES:
        raise RegistryError(f"answer over {MAX_RESPONSE_BYTES} bytes refused")
    return data


def error_from(status: int, body: bytes) -> RegistryError:
    try:
        answer = json.loads(body)
        message, code = str(answer["error"]), str(answer.get("code", ""))
    except (ValueError, KeyError, TypeError, AttributeError):
        message, code = body[:300].decode("utf-8", "replace") or f"HTTP {status}", ""
    return error_for(status, message, code)


def multipart(inputs: Iterable, options: dict | None) -> tuple[bytes, str]:
    """A multipart/form-data body: one part per input (field = its kind), then ``options``."""
    boundary = uuid.uuid4().hex
    parts = []
    for item in inputs:
        blob = as_input(item)
        filename = blob.name.replace('"', "_").replace("\r", "_").replace("\n", "_")
        parts.append(part_bytes(boundary, f'name="{blob.kind}"; filename="{filename}"', "application/octet-stream",
                                blob.data))
    if options is not None:
        parts.append(part_bytes(boundary, 'name="options"', "application/json", json.dumps(options).encode()))
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def part_bytes(boundary: str, disposition: str, content_type: str, data: bytes) -> bytes:
    head = f"--{boundary}\r\nContent-Disposition: form-data; {disposition}\r\nContent-Type: {content_type}\r\n\r\n"
    return head.encode() + data + b"\r\n"


def open_registry(config: dict | None = None):
    """The HTTP client when ``registry.url`` is set, else the embedded Registry over
    ``registry.database_url`` / ``registry.object_store`` / ``registry.root``."""
    section = registry_section(config)
    if section["url"]:
        from registry.objects import registry_root

        return RegistryClient(section["url"], float(section["client_timeout_s"]), str(registry_root(section) / "cache"))
    from registry.core import Registry  # only the embedded registry needs SQLAlchemy

    return Registry.open(section)
