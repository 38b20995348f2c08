"""The registry of persona versions, one suite on both storage backends with real servers:
"embedded" (a SQLite file + the local blob directory) and "servers" (PostgreSQL + SeaweedFS
S3, started by tests/servers.py). Covers the embedded API, real build jobs, atomic publish,
migrations, signed and presigned asset URLs, and the HTTP service with its client."""

from __future__ import annotations

import hashlib
import io
import json
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from clients.ports import free_ports
from persona.blobs import ref_of
from persona.pack import DEFAULT_BEHAVIOR_POLICY, PersonaPack, encode_landmarks
from registry.client import RegistryClient, multipart, open_registry
from registry.core import Registry
from registry.errors import AlreadyExists, BadRequest, Corrupt, Forbidden, NotFound, QueueFull, TooLarge, Unavailable
from registry.objects import S3BlobStore
from registry.service import ServiceThread
from registry.store import VERSION_TABLE, current_revision, head_revision, make_engine, metadata, migrate
from tests.servers import drop_database, fresh_database, postgres_url, seaweed_s3  # noqa: F401 (fixtures)

BACKENDS = ("embedded", "servers")
JOB_TIMEOUT_S = 120.0
#: The gate of a one-photo persona (the builder's default wants two photos per mode).
ONE_PHOTO = {"min_anchors_per_mode": 1}


# -- backends ------------------------------------------------------------------------------------
@pytest.fixture(scope="session", params=BACKENDS)
def servers(request):
    """None for the embedded backend; (PostgreSQL URL, S3 settings) for the servers backend.
    Session-scoped so the servers start before any test's orphan check."""
    if request.param == "embedded":
        return None
    return request.getfixturevalue("postgres_url"), request.getfixturevalue("seaweed_s3")


@pytest.fixture
def section(servers, tmp_path):
    """A [registry] section on a fresh, empty database and bucket of this backend."""
    base = {"root": str(tmp_path / "registry"), "signed_url_ttl_s": 60}
    if servers is None:
        yield base
        return
    server_url, s3 = servers
    database_url = fresh_database(server_url)
    try:
        yield {**base, "database_url": database_url, "object_store": f"s3://t-{uuid.uuid4().hex[:20]}",
               "s3_endpoint_url": s3["endpoint_url"], "s3_access_key": s3["access_key"],
               "s3_secret_key": s3["secret_key"], "s3_region": s3["region"]}
    finally:
        drop_database(server_url, database_url)


@pytest.fixture
def registry(section):
    with Registry.open(section) as reg:
        yield reg


@pytest.fixture
def service(section):
    """The HTTP service on a free port (real sockets), with small upload caps, and a client."""
    section = {**section, "port": free_ports(1)[0], "max_file_mb": 0.25, "max_upload_mb": 0.5}
    with Registry.open(section) as reg, ServiceThread(reg, section) as server:
        yield reg, RegistryClient(server.url, timeout_s=30), server.url


# -- real inputs and drafts ----------------------------------------------------------------------
def png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def astronaut_png() -> bytes:
    from skimage import data

    return png(data.astronaut())


def real_draft(blobs, persona_id: str, variant: int = 0, missing_blob: bool = False) -> dict:
    """A complete pack record (no version) whose blobs are really in ``blobs``: a crop of the
    astronaut photo and two embeddings. ``variant`` changes the content (and its hash)."""
    from skimage import data

    x0 = 100 + 8 * variant
    image = png(np.ascontiguousarray(data.astronaut()[20:276, x0:x0 + 256]))
    face = np.random.default_rng(variant).normal(size=128).astype("<f4").tobytes()
    style = np.random.default_rng(1000 + variant).normal(size=16).astype("<f4").tobytes()
    image_ref = ref_of(b"never stored " + image) if missing_blob else blobs.put(image)
    face_ref, style_ref = blobs.put(face), blobs.put(style)
    landmarks = [[40.0 + (i % 17) * 10, 60.0 + (i // 17) * 30] for i in range(68)]
    anchor = {"anchor_id": "close_up-0", "source": f"astronaut-{variant}.png", "image_ref": image_ref,
              "embedding_ref": face_ref, "landmarks": encode_landmarks(landmarks),
              "crop_transform": {"matrix": [[1.0, 0.0, -x0], [0.0, 1.0, -20.0]], "size": 256},
              "tags": {"expression": "neutral", "pose": {"yaw": 0.0, "pitch": 0.0, "roll": 0.0}, "lighting": "even"}}
    qc = {"accepted": 1, "rejected": 0, "items": [{"name": anchor["source"], "accepted": True, "reasons": []}]}
    return {"schema_version": 1, "persona_id": persona_id, "builder_version": "test-draft",
            "content_hash": hashlib.sha256(image + face + style).hexdigest(),
            "inputs": [{"name": anchor["source"], "kind": "image", "sha256": hashlib.sha256(image).hexdigest()}],
            "anchors": {"close_up": [anchor]},
            "embeddings": {"face_ref": face_ref, "face_spread": 0.0, "style_ref": style_ref},
            "voice": {"name": "joe"}, "behavior_policy": DEFAULT_BEHAVIOR_POLICY, "qc": qc, "warnings": []}


def row_counts(reg: Registry) -> dict:
    with reg.store.engine.connect() as conn:
        return {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar()
                for t in ("personas", "persona_versions", "build_jobs")}


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, bytes]:
    """A raw request (for answers the client would turn into exceptions)."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


# -- schema --------------------------------------------------------------------------------------
def test_migrations_create_the_schema_on_an_empty_database(section):
    url = section.get("database_url") or f"sqlite:///{section['root']}/fresh.db"
    engine = make_engine(url)
    try:
        assert sa.inspect(engine).get_table_names() == []
        migrate(engine)
        migrate(engine)  # a second run is a no-op
        assert current_revision(engine) == head_revision()
        inspector = sa.inspect(engine)
        assert set(inspector.get_table_names()) == {"personas", "persona_versions", "build_jobs", VERSION_TABLE}
        for table in metadata.sorted_tables:  # the migration made what the queries expect
            assert {c["name"] for c in inspector.get_columns(table.name)} == set(table.c.keys()), table.name
        uniques = {tuple(u["column_names"]) for u in inspector.get_unique_constraints("persona_versions")}
        assert ("persona_id", "content_hash") in uniques
    finally:
        engine.dispose()


# -- personas ------------------------------------------------------------------------------------
def test_create_and_list_personas(registry):
    assert registry.list_personas() == []
    registry.create_persona("bob")
    ada = registry.create_persona("ada", "Ada", {"team": "demo", "tags": ["a", "b"]})
    assert ada["display_name"] == "Ada" and ada["metadata"] == {"team": "demo", "tags": ["a", "b"]}
    assert ada["latest_version"] is None and ada["created_at"].endswith("+00:00")
    assert [p["persona_id"] for p in registry.list_personas()] == ["ada", "bob"]


@pytest.mark.parametrize("bad_id", ["", "Ada", "-ada", "ada!", "a" * 65, "ada@1", None, 7])
def test_bad_persona_ids_are_refused(registry, bad_id):
    with pytest.raises(BadRequest, match="must match"):
        registry.create_persona(bad_id)
    assert registry.list_personas() == []


def test_duplicate_and_unknown_personas(registry):
    registry.create_persona("ada")
    with pytest.raises(AlreadyExists, match="already exists"):
        registry.create_persona("ada", "Another Ada")
    with pytest.raises(NotFound, match="unknown persona 'zed'"):
        registry.get_pack("zed")
    with pytest.raises(NotFound, match="unknown persona"):
        registry.list_versions("zed")
    with pytest.raises(NotFound, match="unknown persona"):
        registry.create_version("zed", [("a.png", astronaut_png(), "image")])
    with pytest.raises(NotFound, match="no published version yet"):
        registry.get_pack("ada")
    with pytest.raises(NotFound, match="unknown job"):
        registry.job(uuid.uuid4().hex)


# -- publish ----------------------------------------------------------------------------------
def test_publish_numbers_versions_and_a_republish_is_a_no_op(registry):
    registry.create_persona("ada")
    first = registry.publish("ada", real_draft(registry.blobs, "ada", 0))
    second = registry.publish("ada", real_draft(registry.blobs, "ada", 1))
    again = registry.publish("ada", real_draft(registry.blobs, "ada", 0))
    assert (first.version, first.created, second.version, second.created) == (1, True, 2, True)
    assert (again.version, again.created) == (1, False)
    assert [v["ref"] for v in registry.list_versions("ada")] == ["ada@1", "ada@2"]
    assert registry.get_pack("ada").ref == "ada@2" == registry.get_pack("ada", "latest").ref
    pack = registry.get_pack("ada@1")
    assert pack.record == {**real_draft(registry.blobs, "ada", 0), "version": 1}
    assert all(registry.blobs.exists(ref) for ref in pack.refs())
    with pytest.raises(NotFound, match=r"no version 3 \(latest: ada@2\)"):
        registry.get_pack("ada", 3)
    for bad in (0, -1, "two", 1.5, True):
        with pytest.raises(BadRequest, match="positive integer"):
            registry.get_pack("ada", bad)


def test_a_refused_publish_writes_nothing(registry):
    registry.create_persona("ada")
    before = row_counts(registry)
    with pytest.raises(BadRequest, match="not in the object store"):
        registry.publish("ada", real_draft(registry.blobs, "ada", missing_blob=True))
    invalid = {**real_draft(registry.blobs, "ada"), "anchors": {"close_up": []}}
    with pytest.raises(BadRequest, match="persona pack invalid at anchors/close_up"):
        registry.publish("ada", invalid)
    with pytest.raises(BadRequest, match="not a pack record for persona 'ada'"):
        registry.publish("ada", real_draft(registry.blobs, "bob"))
    with pytest.raises(NotFound, match="unknown persona"):
        registry.publish("bob", real_draft(registry.blobs, "bob"))
    assert row_counts(registry) == before and registry.list_versions("ada") == []


def test_concurrent_publishers_get_distinct_versions(section):
    """Two registries (two engines, as two processes would have) publish at once: each
    version number is taken once, and the same content twice is one version."""
    with Registry.open(section) as one, Registry.open(section) as two:
        one.create_persona("ada")
        drafts = [real_draft(one.blobs, "ada", v) for v in range(4)]
        results, errors = [], []

        def publish(reg, draft):
            try:
                results.append(reg.publish("ada", draft))
            except Exception as exc:  # collected: an assertion in a thread would be lost
                errors.append(exc)

        jobs = [(one, drafts[0]), (two, drafts[1]), (one, drafts[2]), (two, drafts[3]), (two, drafts[0])]
        threads = [threading.Thread(target=publish, args=job) for job in jobs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        assert sorted(r.version for r in results if r.created) == [1, 2, 3, 4]
        by_hash = {v["content_hash"]: v["version"] for v in one.list_versions("ada")}
        assert set(by_hash) == {d["content_hash"] for d in drafts}
        assert [r.version for r in results if not r.created] == [by_hash[drafts[0]["content_hash"]]]


def test_get_pack_validates_what_it_reads(registry):
    registry.create_persona("ada")
    registry.publish("ada", real_draft(registry.blobs, "ada"))
    with registry.store.engine.begin() as conn:  # damage the stored row behind the registry's back
        conn.execute(sa.text("UPDATE persona_versions SET pack = :p"), {"p": json.dumps({"persona_id": "ada"})})
    with pytest.raises(Corrupt, match="stored pack ada@1 is invalid"):
        registry.get_pack("ada", 1)


def test_a_damaged_pack_arrives_over_http_as_the_same_error(service):
    reg, client, _url = service
    reg.create_persona("ada")
    reg.publish("ada", real_draft(reg.blobs, "ada"))
    with reg.store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE persona_versions SET pack = :p"), {"p": json.dumps({"persona_id": "ada"})})
    with pytest.raises(Corrupt, match="stored pack ada@1 is invalid"):
        client.get_pack("ada", 1)


# -- build jobs (the real builder) ----------------------------------------------------------
def test_a_real_build_publishes_and_a_rebuild_is_a_no_op(registry):
    registry.create_persona("ada", "Ada")
    photo = astronaut_png()
    seen = []
    job_id = registry.create_version("ada", [("astronaut.png", photo, "image")], ONE_PHOTO)
    done = registry.wait_job(job_id, JOB_TIMEOUT_S, lambda fraction, message: seen.append((fraction, message)))
    assert done["state"] == "published", done
    assert (done["version"], done["ref"], done["progress"]) == (1, "ada@1", 1.0)
    assert done["qc"] and done["qc"][0]["accepted"] and seen[-1][0] == 1.0
    pack = registry.get_pack("ada@1")
    assert pack.record["display_name"] == "Ada" and pack.anchors("close_up")
    assert all(registry.blobs.exists(ref) for ref in pack.refs())
    rebuild = registry.create_version("ada", [("renamed.png", photo, "image")], ONE_PHOTO)
    again = registry.wait_job(rebuild, JOB_TIMEOUT_S)
    assert (again["state"], again["version"]) == ("published", 1) and again["message"].startswith("unchanged")
    assert [v["version"] for v in registry.list_versions("ada")] == [1]


def test_a_blocked_build_publishes_nothing_and_keeps_its_qc(registry):
    registry.create_persona("ada")
    done = registry.wait_job(registry.create_version("ada", [("astronaut.png", astronaut_png(), "image")]),
                             JOB_TIMEOUT_S)
    assert done["state"] == "blocked" and "recapture" in done["message"].lower(), done
    assert done["qc"][0]["name"] == "astronaut.png" and done["version"] is None
    assert registry.list_versions("ada") == [] and row_counts(registry)["persona_versions"] == 0


def test_an_unreadable_input_blocks_its_build_and_the_worker_goes_on(registry):
    registry.create_persona("ada")
    done = registry.wait_job(registry.create_version("ada", [("noise.png", b"not a picture", "image")], ONE_PHOTO),
                             JOB_TIMEOUT_S)
    assert done["state"] == "blocked" and not done["qc"][0]["accepted"] and done["qc"][0]["reasons"], done
    assert registry.list_versions("ada") == []
    ok = registry.wait_job(registry.create_version("ada", [("a.png", astronaut_png(), "image")], ONE_PHOTO),
                           JOB_TIMEOUT_S)
    assert ok["state"] == "published"  # the worker is still there


def test_bad_build_requests_are_refused_at_once(registry):
    registry.create_persona("ada")
    cases = [([], "at least one input"), ([("a.png", b"x", "selfie")], "input kind"),
             ([("a.png", b"", "image")], "empty"), ([("", b"x", "image")], "file name")]
    for inputs, message in cases:
        with pytest.raises(BadRequest, match=message):
            registry.create_version("ada", inputs)
    with pytest.raises(BadRequest, match="unknown build options"):
        registry.create_version("ada", [("a.png", b"x", "image")], {"min_anchors": 1})
    big = b"\0" * (16 * 1024 * 1024 + 1)
    with pytest.raises(TooLarge, match="cap per file"):
        registry.create_version("ada", [("a.png", big, "image")])
    assert row_counts(registry)["build_jobs"] == 0


def test_the_build_queue_is_bounded(section):
    with Registry.open({**section, "max_jobs": 1, "job_queue": 1}) as reg:
        reg.create_persona("ada")
        photo, admitted = astronaut_png(), []
        with pytest.raises(QueueFull, match="queue is full"):
            for n in range(8):  # one runs, one waits: the third is refused while the first builds
                admitted.append(reg.create_version("ada", [(f"{n}.png", photo, "image")], ONE_PHOTO))
        assert 2 <= len(admitted) < 8
        assert row_counts(reg)["build_jobs"] == len(admitted)  # the refused job left no row
        for job_id in admitted:
            assert reg.wait_job(job_id, JOB_TIMEOUT_S)["state"] == "published"


def test_closing_the_registry_ends_every_job(section):
    """Nothing stays "queued" or "running" after close: waiting builds never start, a running
    one stops at its next progress report (or finishes first)."""
    with Registry.open({**section, "max_jobs": 1, "job_queue": 2}) as reg:
        reg.create_persona("ada")
        photo = astronaut_png()
        job_ids = [reg.create_version("ada", [(f"{n}.png", photo, "image")], ONE_PHOTO) for n in range(3)]
    with Registry.open(section) as reopened:
        states = [reopened.job(job_id) for job_id in job_ids]
    assert all(s["state"] in ("published", "failed") for s in states), states
    assert "before this build started" in states[-1]["error"]


def test_jobs_of_a_registry_process_that_died_are_failed(section):
    proc = subprocess.Popen(["true"])
    proc.wait(30)  # its pid now names no process
    with Registry.open(section) as reg:
        reg.create_persona("ada")
        reg.store.create_job("e" * 32, "ada", f"{socket.gethostname()}:{proc.pid}")
        reg.store.create_job("f" * 32, "ada", "another-host:1")
    with Registry.open(section) as reg:
        died = reg.job("e" * 32)
        assert died["state"] == "failed" and f"pid {proc.pid}" in died["error"]
        assert reg.job("f" * 32)["state"] == "queued"  # another host's process: not ours to judge


# -- signed URLs -----------------------------------------------------------------------------
def test_signed_urls_are_checked(registry):
    ref = registry.blobs.put(astronaut_png())
    good = registry.signer.sign(ref, int(time.time()) + 60)
    assert registry.read_signed_asset(ref, good["exp"], good["sig"]) == registry.read_asset(ref)
    other = registry.blobs.put(b"another blob")
    with pytest.raises(Forbidden, match="does not match"):
        registry.read_signed_asset(other, good["exp"], good["sig"])  # a signature for one ref opens no other
    with pytest.raises(Forbidden, match="does not match"):
        registry.read_signed_asset(ref, str(int(good["exp"]) + 3600), good["sig"])  # a longer life
    with pytest.raises(Forbidden, match="does not match"):
        registry.read_signed_asset(ref, good["exp"], "0" * 64)
    old = registry.signer.sign(ref, int(time.time()) - 1)
    with pytest.raises(Forbidden, match="expired"):
        registry.read_signed_asset(ref, old["exp"], old["sig"])
    with pytest.raises(Forbidden, match="not signed"):
        registry.read_signed_asset(ref, None, None)
    with pytest.raises(NotFound):
        registry.resolve_asset(ref_of(b"nothing"))
    with pytest.raises(BadRequest, match="not a blob key"):
        registry.resolve_asset("../../etc/passwd")


def test_the_signing_key_is_made_once_and_private(section, registry):
    key = Path(section["root"]) / "signing.key"
    assert key.stat().st_mode & 0o777 == 0o600
    ref = registry.blobs.put(b"blob")
    signed = registry.signer.sign(ref, int(time.time()) + 60)
    with Registry.open(section) as reopened:  # the same key after a restart: old URLs still work
        assert reopened.read_signed_asset(ref, signed["exp"], signed["sig"]) == b"blob"


def test_resolved_urls_fetch_the_bytes(service):
    reg, _client, _url = service
    data = astronaut_png()
    ref = reg.blobs.put(data)
    resolved = reg.resolve_asset(ref)
    assert resolved["expires_at"] > time.time() + 30
    if isinstance(reg.blobs, S3BlobStore):
        assert "X-Amz-Signature=" in resolved["url"]  # presigned by the object store itself
    with urllib.request.urlopen(resolved["url"], timeout=30) as response:
        assert response.read() == data
    tampered = resolved["url"].replace(ref.split("/")[1][:8], "00000000", 1)
    assert http("GET", tampered)[0] in (403, 404)


# -- the HTTP service and its client ---------------------------------------------------------
def test_the_client_speaks_the_registry_api(service):
    reg, client, _url = service
    assert client.create_persona("ada", "Ada", {"k": 1})["display_name"] == "Ada"
    assert [p["persona_id"] for p in client.list_personas()] == ["ada"]
    with pytest.raises(AlreadyExists, match="already exists"):
        client.create_persona("ada")
    with pytest.raises(BadRequest, match="must match"):
        client.create_persona("Not An Id")
    reg.publish("ada", real_draft(reg.blobs, "ada", 0))
    assert [v["ref"] for v in client.list_versions("ada")] == ["ada@1"]
    pack = client.get_pack("ada@1")
    assert isinstance(pack, PersonaPack) and pack.record == reg.get_pack("ada", 1).record
    assert client.get_pack("ada").ref == "ada@1"
    image_ref = pack.anchors()[0].image_ref
    assert client.read_asset(image_ref) == reg.read_asset(image_ref)
    with pytest.raises(NotFound, match="no version 2"):
        client.get_pack("ada", 2)
    with pytest.raises(NotFound, match="unknown persona"):
        client.list_versions("zed")
    with pytest.raises(NotFound, match="unknown job"):
        client.job("0" * 32)
    with pytest.raises(NotFound):
        client.read_asset(ref_of(b"nothing here"))


def test_a_published_build_over_http(section, tmp_path):
    """Full-size uploads (the default caps) through the client, published and read back."""
    section = {**section, "port": free_ports(1)[0]}
    with Registry.open(section) as reg, ServiceThread(reg, section) as server:
        client = RegistryClient(server.url, timeout_s=30)
        client.create_persona("ada")
        job_id = client.create_version("ada", [("astronaut.png", astronaut_png(), "image")], ONE_PHOTO)
        done = client.wait_job(job_id, JOB_TIMEOUT_S)
        assert (done["state"], done["ref"]) == ("published", "ada@1"), done
        status, body = http("GET", f"{server.url}/v1/jobs/{job_id}")
        assert status == 200 and json.loads(body)["ref"] == "ada@1"
        pack = client.get_pack("ada@1")
        assert all(client.read_asset(ref) == reg.read_asset(ref) for ref in sorted(pack.refs())[:3])
    # A client with a cache keeps what cannot change (blobs by hash, a named version's pack): a
    # warm start needs no registry at all -- the service is stopped here.
    with Registry.open(section) as reg, ServiceThread(reg, section) as server:
        cached = RegistryClient(server.url, timeout_s=5, cache_dir=str(tmp_path / "cache"))
        pack = cached.get_pack("ada", 1)
        blobs = {ref: cached.read_asset(ref) for ref in pack.refs()}
    assert cached.get_pack("ada", 1).record == pack.record
    assert all(cached.read_asset(ref) == data for ref, data in blobs.items())
    with pytest.raises(Unavailable):
        cached.get_pack("ada")  # "latest" is always asked for


def error_of(status_and_body) -> tuple[int, str]:
    status, body = status_and_body
    record = json.loads(body)
    assert set(record) == {"error", "code"} and record["error"]
    return status, record["code"]


def test_the_service_answers_bad_requests_with_json_errors(service):
    reg, client, url = service
    client.create_persona("ada")

    def post(path: str, body: bytes, content_type: str = "application/json"):
        return http("POST", url + path, body, {"Content-Type": content_type})

    assert error_of(post("/v1/personas", b"{not json")) == (400, "bad_request")
    assert error_of(post("/v1/personas", b"[1, 2]")) == (400, "bad_request")
    assert error_of(post("/v1/personas", b"\xff\xfe")) == (400, "bad_request")
    assert error_of(post("/v1/personas", json.dumps({"persona_id": "../x"}).encode())) == (400, "bad_request")
    assert error_of(post("/v1/personas", b"{" + b" " * (2 * 1024 * 1024) + b"}")) == (413, "too_large")
    assert error_of(post("/v1/personas/ada/versions", b"{}")) == (400, "bad_request")
    assert error_of(post("/v1/personas/ada/versions", b"--x\r\nbroken", "multipart/form-data; boundary=y")) == (
        400, "bad_request")
    assert error_of(http("GET", f"{url}/v1/personas/zed/versions/latest")) == (404, "not_found")
    assert error_of(http("GET", f"{url}/v1/personas/ada/versions/latest")) == (404, "not_found")
    assert error_of(http("GET", f"{url}/v1/personas/ada/versions/0")) == (400, "bad_request")
    assert error_of(http("GET", f"{url}/v1/jobs/nope")) == (404, "not_found")
    assert error_of(http("GET", f"{url}/v1/assets/sha256/{'0' * 64}/url")) == (404, "not_found")
    assert error_of(http("GET", f"{url}/v1/assets/md5/abc/url")) == (400, "bad_request")
    assert error_of(http("GET", f"{url}/v1/no/such/route")) == (404, "not_found")
    assert error_of(http("DELETE", f"{url}/v1/personas")) == (405, "method_not_allowed")
    assert row_counts(reg)["build_jobs"] == 0


def test_the_service_refuses_oversized_uploads(service):
    reg, client, url = service  # caps: 0.25 MiB per file, 0.5 MiB in total
    client.create_persona("ada")
    with pytest.raises(TooLarge, match="per file"):
        client.create_version("ada", [("big.png", b"\1" * 300_000, "image")])
    with pytest.raises(TooLarge, match="in total"):
        client.create_version("ada", [(f"{n}.png", b"\1" * 200_000, "image") for n in range(3)])
    status, code = error_of(http("POST", f"{url}/v1/personas/ada/versions", b"\0" * (3 * 1024 * 1024),
                                 {"Content-Type": "multipart/form-data; boundary=x"}))
    assert (status, code) == (413, "too_large")
    body, ctype = multipart([("a.png", b"x", "image")], None)
    selfie = http("POST", f"{url}/v1/personas/ada/versions", body.replace(b'name="image"', b'name="selfie"'),
                  {"Content-Type": ctype})
    assert error_of(selfie) == (400, "bad_request") and b"unknown form field" in selfie[1]
    with pytest.raises(NotFound, match="unknown persona"):
        client.create_version("zed", [("a.png", b"x", "image")])
    assert row_counts(reg)["build_jobs"] == 0


def test_a_full_queue_is_503_over_http(section):
    section = {**section, "port": free_ports(1)[0], "max_jobs": 1, "job_queue": 1}
    with Registry.open(section) as reg, ServiceThread(reg, section) as server:
        client = RegistryClient(server.url, timeout_s=30)
        client.create_persona("ada")
        photo, admitted = astronaut_png(), []
        with pytest.raises(QueueFull):
            for n in range(8):
                admitted.append(client.create_version("ada", [(f"{n}.png", photo, "image")], ONE_PHOTO))
        for job_id in admitted:
            client.wait_job(job_id, JOB_TIMEOUT_S)


def test_open_registry_picks_embedded_or_http(section):
    embedded = open_registry({"registry": section})
    try:
        assert isinstance(embedded, Registry)
    finally:
        embedded.close()
    remote = open_registry({**section, "url": "http://127.0.0.1:9/"})
    assert isinstance(remote, RegistryClient) and remote.base_url == "http://127.0.0.1:9"
