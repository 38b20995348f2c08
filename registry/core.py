"""The registry of persona versions, embedded: what the CLI and the driver use in-process when
no registry service is configured, and what the HTTP service (registry.service) serves.

A version is created by a build job: ``create_version`` queues it and returns its id at once,
a worker thread runs ``persona.builder.build``, and ``publish`` inserts the draft it returns
as the persona's next version in one transaction, only once every blob the draft references
is in the object store. Same content twice gives the same version (a rebuild is a no-op)."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Callable, Iterable

from persona.blobs import check_ref
from persona.pack import PERSONA_ID, PackError, PersonaPack, parse_ref, validate
from registry.errors import BadRequest, NotFound, RegistryError, TooLarge
from registry.jobs import BuildJob, InputBlob, JobCancelled, JobPool, as_input, wait_for_job
from registry.objects import S3BlobStore, open_blob_store, registry_root
from registry.settings import MIB, registry_section, service_url
from registry.signing import UrlSigner, load_secret
from registry.store import RegistryStore, migrate

log = logging.getLogger("registry")
MAX_OPTIONS_BYTES = 64 * 1024
MAX_DISPLAY_NAME = 200
MAX_METADATA_BYTES = 64 * 1024
#: Progress is written to the database at most this often (plus every message change).
PROGRESS_WRITE_S = 0.25
#: How often wait_job looks at the job row.
WAIT_POLL_S = 0.1
CLOSE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Publication:
    """What ``publish`` did: ``created`` is False when the same content was already a version."""

    persona_id: str
    version: int
    created: bool

    @property
    def ref(self) -> str:
        return f"{self.persona_id}@{self.version}"


def check_persona_id(persona_id) -> str:
    if not isinstance(persona_id, str) or not PERSONA_ID.match(persona_id):
        raise BadRequest(f"persona id {persona_id!r} must match {PERSONA_ID.pattern}")
    return persona_id


def check_version(version) -> int | None:
    if version is None or version == "latest":
        return None
    if isinstance(version, str) and version.isdigit():
        version = int(version)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise BadRequest(f"version {version!r} must be a positive integer or 'latest'")
    return version


def check_blob_ref(ref) -> str:
    try:
        return check_ref(ref)
    except KeyError as exc:
        raise BadRequest(exc.args[0]) from None


class Registry:
    """Personas, their versions and build jobs over one database and one blob store."""

    def __init__(self, store: RegistryStore, blobs, signer: UrlSigner, section: dict | None = None):
        self.section = registry_section(section)
        self.store, self.blobs, self.signer = store, blobs, signer
        self.base_url = service_url(self.section)
        self.max_file = int(self.section["max_file_mb"] * MIB)
        self.max_upload = int(self.section["max_upload_mb"] * MIB)
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self.pool = JobPool(int(self.section["max_jobs"]), int(self.section["job_queue"]), self.run_job)
        self.fail_orphaned_jobs()

    @classmethod
    def open(cls, config: dict | None = None) -> "Registry":
        """The embedded registry ``[registry]`` describes (schema migrated to head on open)."""
        section = registry_section(config)
        root = registry_root(section)
        url = section["database_url"] or f"sqlite:///{root / 'registry.db'}"
        store = RegistryStore(migrate(url))
        return cls(store, open_blob_store(section), UrlSigner(load_secret(section, root)), section)

    def __enter__(self) -> "Registry":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Stop the build workers; jobs that never started are marked failed."""
        for job in self.pool.close(timeout_s):
            self.store.update_job(job.job_id, state="failed", error="the registry closed before this build started",
                                  message="not started")
        self.store.engine.dispose()
        if isinstance(self.blobs, S3BlobStore):
            self.blobs.close()

    # -- personas -------------------------------------------------------------------------------
    def create_persona(self, persona_id: str, display_name: str = "", metadata: dict | None = None) -> dict:
        """A new persona with no version yet; AlreadyExists if the id is taken."""
        check_persona_id(persona_id)
        if not isinstance(display_name, str) or len(display_name) > MAX_DISPLAY_NAME:
            raise BadRequest(f"display_name must be a string of at most {MAX_DISPLAY_NAME} characters")
        metadata = {} if metadata is None else metadata
        if not isinstance(metadata, dict) or len(json.dumps(metadata)) > MAX_METADATA_BYTES:
            raise BadRequest(f"metadata must be a JSON object of at most {MAX_METADATA_BYTES} bytes")
        return self.store.create_persona(persona_id, display_name, metadata)

    def list_personas(self) -> list[dict]:
        return self.store.list_personas()

    def persona(self, persona_id: str) -> dict:
        return self.store.persona(check_persona_id(persona_id))

    # -- versions -------------------------------------------------------------------------------
    def list_versions(self, persona_id: str) -> list[dict]:
        return self.store.list_versions(check_persona_id(persona_id))

    def get_pack(self, persona_id: str, version: int | str | None = None) -> PersonaPack:
        """A published pack (``None``/"latest" = the newest); ``"ada@2"`` works as the id too."""
        if isinstance(persona_id, str) and "@" in persona_id and version is None:
            try:
                persona_id, version = parse_ref(persona_id)
            except PackError as exc:
                raise BadRequest(str(exc)) from None
        return self.store.pack(check_persona_id(persona_id), check_version(version))

    def publish(self, persona_id: str, draft: dict) -> Publication:
        """Publish ``draft`` (a complete pack record except ``version``) atomically, or refuse
        it with nothing written: a bad record, a persona id that differs, a missing blob."""
        check_persona_id(persona_id)
        if not isinstance(draft, dict) or draft.get("persona_id") != persona_id:
            raise BadRequest(f"the draft is not a pack record for persona {persona_id!r}")
        try:
            pack = PersonaPack(validate({**draft, "version": 1}))  # the number is only known inside the insert
        except PackError as exc:
            raise BadRequest(str(exc)) from None
        missing = sorted(ref for ref in pack.refs() if not self.blobs.exists(ref))
        if missing:
            raise BadRequest(f"the draft references {len(missing)} blob(s) that are not in the object store: "
                             + ", ".join(missing[:5]))
        version, created = self.store.publish(persona_id, {k: v for k, v in draft.items() if k != "version"})
        return Publication(persona_id, version, created)

    # -- build jobs -----------------------------------------------------------------------------
    def create_version(self, persona_id: str, inputs: Iterable, options: dict | None = None) -> str:
        """Start a build of ``inputs`` (objects with name, data, kind; or such tuples); returns
        the job id at once. QueueFull when every worker is busy and the queue is full."""
        persona = self.persona(persona_id)
        job = BuildJob(uuid.uuid4().hex, persona_id, self.check_inputs(inputs), build_options(persona, options))
        self.store.create_job(job.job_id, persona_id, self.owner)
        try:
            self.pool.submit(job)
        except RegistryError:
            self.store.delete_job(job.job_id)  # nobody has seen its id yet
            raise
        return job.job_id

    def check_inputs(self, inputs: Iterable) -> tuple[InputBlob, ...]:
        """The inputs as InputBlobs, within the upload caps, or BadRequest/TooLarge."""
        files = tuple(as_input(item) for item in (inputs or ()))
        if not files:
            raise BadRequest("a build needs at least one input file")
        for f in files:
            if len(f.data) > self.max_file:
                raise TooLarge(f"input {f.name!r} is {len(f.data) / MIB:.1f} MiB; the cap per file is "
                               f"{self.max_file / MIB:g} MiB")
        total = sum(len(f.data) for f in files)
        if total > self.max_upload:
            raise TooLarge(f"inputs total {total / MIB:.1f} MiB; the cap is {self.max_upload / MIB:g} MiB")
        return files

    def job(self, job_id: str) -> dict:
        """A build job's status: state (queued|running|published|blocked|failed), progress
        0..1, message, version/ref once published, qc items, warnings, error."""
        if not isinstance(job_id, str) or not job_id.isalnum() or len(job_id) > 32:
            raise NotFound(f"unknown job {str(job_id)[:40]!r}")
        return self.store.job(job_id)

    def wait_job(self, job_id: str, timeout: float, on_progress: Callable[[float, str], None] | None = None) -> dict:
        """The job's final status; ``on_progress(progress, message)`` on each change seen.
        TimeoutError when it has not finished within ``timeout`` seconds."""
        return wait_for_job(lambda: self.job(job_id), timeout, on_progress, WAIT_POLL_S)

    def run_job(self, job: BuildJob) -> None:
        """One build, start to finish, on a pool thread; every outcome ends up in the job row."""
        try:
            self.store.update_job(job.job_id, state="running", message="building", progress=0.0)
            self.finish_job(job, self.build(job))
        except JobCancelled as exc:
            self.end_job(job, str(exc), "cancelled")
        except Exception as exc:  # a builder bug, bad input or a lost database ends the job, never the worker
            log.exception("build %s of %s failed", job.job_id, job.persona_id)
            self.end_job(job, f"build failed: {type(exc).__name__}: {exc}", "build failed")

    def end_job(self, job: BuildJob, error: str, message: str) -> None:
        try:
            self.store.update_job(job.job_id, state="failed", error=error, message=message)
        except Exception:  # the database itself is gone: the log is all that is left
            log.exception("could not record the failure of build %s", job.job_id)

    def build(self, job: BuildJob):
        from persona import builder  # imported here: the registry works (and imports) without it

        inputs = [builder.InputFile(name=f.name, data=f.data, kind=f.kind) for f in job.inputs]
        return builder.build(job.persona_id, inputs, self.blobs, dict(job.options), self.progress_writer(job))

    def progress_writer(self, job: BuildJob) -> Callable[[float, str], None]:
        last = {"t": 0.0, "message": None}

        def progress(fraction: float, message: str = "") -> None:
            self.pool.check()  # a closing registry stops the build here
            now = time.monotonic()
            if message == last["message"] and now - last["t"] < PROGRESS_WRITE_S:
                return
            last.update(t=now, message=message)
            self.store.update_job(job.job_id, progress=min(1.0, max(0.0, float(fraction))), message=str(message)[:500])

        return progress

    def finish_job(self, job: BuildJob, result) -> None:
        qc, warnings = list(result.qc or []), list(result.warnings or [])
        done = {"qc": qc, "warnings": warnings, "progress": 1.0}
        if result.blocked:
            self.store.update_job(job.job_id, state="blocked", message=result.blocked, **done)
            return
        if result.draft is None:
            self.store.update_job(job.job_id, state="failed", error="the builder returned no draft and no reason",
                                  message="build failed", **done)
            return
        try:
            published = self.publish(job.persona_id, result.draft)
        except RegistryError as exc:
            self.store.update_job(job.job_id, state="failed", error=f"publish refused: {exc}",
                                  message="publish refused", **done)
            return
        message = f"published {published.ref}" if published.created else f"unchanged: same content as {published.ref}"
        self.store.update_job(job.job_id, state="published", version=published.version, message=message, **done)

    def fail_orphaned_jobs(self) -> None:
        """Jobs left queued or running by a registry process on this host that has exited."""
        host = socket.gethostname()
        for job_id, owner in self.store.unfinished_jobs():
            owner_host, _, pid = owner.rpartition(":")
            if owner_host == host and pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
                self.store.update_job(job_id, state="failed", message="interrupted",
                                      error=f"the registry process that ran this build (pid {pid}) exited")

    # -- assets ---------------------------------------------------------------------------------
    def resolve_asset(self, ref: str) -> dict:
        """{"ref", "url", "expires_at"}: a presigned URL on S3, else a signed URL of this
        registry's service (``registry.public_url`` or host:port)."""
        check_blob_ref(ref)
        if not self.blobs.exists(ref):
            raise NotFound(f"no asset {ref}")
        ttl = int(self.section["signed_url_ttl_s"])
        expires_at = int(time.time()) + ttl
        if isinstance(self.blobs, S3BlobStore):
            return {"ref": ref, "url": self.blobs.presign(ref, ttl), "expires_at": expires_at}
        query = self.signer.sign(ref, expires_at)
        return {"ref": ref, "url": f"{self.base_url}/v1/assets/{ref}?exp={query['exp']}&sig={query['sig']}",
                "expires_at": expires_at}

    def read_asset(self, ref: str) -> bytes:
        try:
            return self.blobs.get(check_blob_ref(ref))
        except KeyError as exc:
            raise NotFound(exc.args[0]) from None

    def read_signed_asset(self, ref: str, exp: str | None, sig: str | None) -> bytes:
        """The bytes behind a signed URL; Forbidden for a bad or expired signature."""
        self.signer.verify(check_blob_ref(ref), exp, sig)
        return self.read_asset(ref)


def build_options(persona: dict, options) -> dict:
    """The options checked now, so a typo is a 400 at once rather than a failed job later;
    the persona's display name goes into the pack unless the options name it."""
    options = check_options(options)
    try:
        from persona import builder
    except ImportError:  # no builder here: the job will say so
        return options
    if persona["display_name"] and "display_name" in builder.DEFAULT_OPTIONS:
        options.setdefault("display_name", persona["display_name"])
    try:
        builder.resolve_options(options)
    except (ValueError, TypeError) as exc:
        raise BadRequest(f"build options: {exc}") from None
    return options


def check_options(options) -> dict:
    if options is None:
        return {}
    try:
        encoded = json.dumps(options)
    except (TypeError, ValueError):
        raise BadRequest("build options must be JSON-serialisable") from None
    if not isinstance(options, dict) or len(encoded) > MAX_OPTIONS_BYTES:
        raise BadRequest(f"build options must be a JSON object of at most {MAX_OPTIONS_BYTES} bytes")
    return json.loads(encoded)  # a private copy the caller cannot change under the build


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True
