"""The registry's metadata: personas, their published versions and build jobs, with SQLAlchemy
Core so one code path serves the embedded SQLite file and a PostgreSQL server.

The schema is created and upgraded by Alembic (``registry/migrations``); ``migrate`` runs it
programmatically, so no ``alembic.ini`` is needed. Every pack is validated against the
PersonaPack schema before it is written and after it is read. Heavy blobs never come here:
a pack row holds the JSON, whose refs point into the object store.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from persona.pack import PackError, PersonaPack, validate
from registry.errors import AlreadyExists, Corrupt, NotFound, RegistryError
from registry.jobs import FINISHED_STATES

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
#: Alembic's bookkeeping table, named for us so the registry can share a database with others.
VERSION_TABLE = "registry_schema_version"
#: How long a SQLite writer waits for another writer's lock before failing.
SQLITE_BUSY_S = 30.0

metadata = sa.MetaData()

personas = sa.Table(
    "personas", metadata,
    sa.Column("persona_id", sa.String(64), primary_key=True),
    sa.Column("display_name", sa.String(200), nullable=False, default=""),
    sa.Column("metadata", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

persona_versions = sa.Table(
    "persona_versions", metadata,
    sa.Column("persona_id", sa.String(64), sa.ForeignKey("personas.persona_id"), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("content_hash", sa.String(64), nullable=False),
    sa.Column("pack", sa.Text, nullable=False),
    sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("persona_id", "content_hash", name="uq_persona_versions_content"),
)

build_jobs = sa.Table(
    "build_jobs", metadata,
    sa.Column("job_id", sa.String(32), primary_key=True),
    sa.Column("persona_id", sa.String(64), sa.ForeignKey("personas.persona_id"), nullable=False, index=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("progress", sa.Float, nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("version", sa.Integer, nullable=True),
    sa.Column("qc", sa.JSON, nullable=True),
    sa.Column("warnings", sa.JSON, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("owner", sa.String(200), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("state IN ('queued', 'running', 'published', 'blocked', 'failed')", name="ck_build_jobs_state"),
    sa.CheckConstraint("progress >= 0 AND progress <= 1", name="ck_build_jobs_progress"),
)


def now() -> datetime:
    return datetime.now(timezone.utc)


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC; SQLite hands timestamps back without their zone, PostgreSQL with it."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat()


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL (readers never wait for the writer), foreign
    keys on, and a busy timeout instead of an immediate "database is locked"."""
    if not url.startswith("sqlite"):
        return sa.create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5, pool_timeout=30)
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        Path(url.removeprefix("sqlite:///")).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, connect_args={"timeout": SQLITE_BUSY_S, "check_same_thread": False})

    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection, _record):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_S * 1000)}")
        cursor.close()

    return engine


def alembic_config(connection: Connection | None = None):
    from alembic.config import Config

    config = Config()  # no ini file: everything the env needs is set here
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()


def migrate(engine_or_url: Engine | str) -> Engine:
    """Bring the database to the newest schema (Alembic ``upgrade head``); returns the engine.

    Two processes opening a fresh database at once may both try; the loser's error is
    swallowed when the database is at head afterwards."""
    from alembic import command

    engine = make_engine(engine_or_url) if isinstance(engine_or_url, str) else engine_or_url
    try:
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), "head")
    except sa.exc.DBAPIError:
        if current_revision(engine) != head_revision():
            raise
    return engine


class RegistryStore:
    """Reads and writes the registry's rows; raises RegistryError subclasses, never a driver error."""

    def __init__(self, engine: Engine):
        self.engine = engine

    # -- personas -------------------------------------------------------------------------------
    def create_persona(self, persona_id: str, display_name: str, info: dict) -> dict:
        row = {"persona_id": persona_id, "display_name": display_name, "metadata": info, "created_at": now()}
        try:
            with self.engine.begin() as conn:
                conn.execute(personas.insert().values(**row))
        except IntegrityError:
            raise AlreadyExists(f"persona {persona_id!r} already exists") from None
        return self.persona(persona_id)

    def persona(self, persona_id: str) -> dict:
        """The persona's row with its version count; NotFound if there is none."""
        query = self._persona_query().where(personas.c.persona_id == persona_id)
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        if row is None:
            raise NotFound(f"unknown persona {persona_id!r}")
        return self._persona_dict(row)

    def list_personas(self) -> list[dict]:
        with self.engine.connect() as conn:
            rows = conn.execute(self._persona_query().order_by(personas.c.persona_id)).mappings().all()
        return [self._persona_dict(row) for row in rows]

    @staticmethod
    def _persona_query():
        latest = (sa.select(sa.func.max(persona_versions.c.version))
                  .where(persona_versions.c.persona_id == personas.c.persona_id).scalar_subquery())
        return sa.select(personas, latest.label("latest_version"))

    @staticmethod
    def _persona_dict(row) -> dict:
        return {"persona_id": row["persona_id"], "display_name": row["display_name"],
                "metadata": row["metadata"] or {}, "created_at": iso(row["created_at"]),
                "latest_version": row["latest_version"]}

    # -- versions -------------------------------------------------------------------------------
    def list_versions(self, persona_id: str) -> list[dict]:
        self.persona(persona_id)
        v = persona_versions.c
        query = (sa.select(v.version, v.content_hash, v.published_at)
                 .where(v.persona_id == persona_id).order_by(v.version))
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [{"persona_id": persona_id, "version": r["version"], "ref": f"{persona_id}@{r['version']}",
                 "content_hash": r["content_hash"], "published_at": iso(r["published_at"])} for r in rows]

    def pack(self, persona_id: str, version: int | None) -> PersonaPack:
        """The stored pack (``None`` = the latest version), validated again as it is read."""
        latest = self.persona(persona_id)["latest_version"]
        if latest is None:
            raise NotFound(f"persona {persona_id!r} has no published version yet")
        wanted = latest if version is None else version
        v = persona_versions.c
        with self.engine.connect() as conn:
            text = conn.execute(sa.select(v.pack).where(v.persona_id == persona_id, v.version == wanted)).scalar()
        if text is None:
            raise NotFound(f"persona {persona_id!r} has no version {wanted} (latest: {persona_id}@{latest})")
        try:
            return PersonaPack.from_json(text)
        except PackError as exc:
            raise Corrupt(f"stored pack {persona_id}@{wanted} is invalid: {exc}") from None

    def publish(self, persona_id: str, draft: dict) -> tuple[int, bool]:
        """Insert ``draft`` as the persona's next version in one transaction; returns
        (version, True). A version with the same content hash is returned as (version, False)
        and nothing is written. Publishers of one persona take turns (its row is locked
        first); should one still slip past (another writer), the insert fails on the
        primary key or the content hash and is retried once."""
        for attempt in range(2):
            try:
                with self.engine.begin() as conn:
                    return self._publish_in(conn, persona_id, draft)
            except IntegrityError:
                if attempt:
                    raise RegistryError(f"publishing {persona_id} raced with another publisher twice; retry") from None
        raise AssertionError("unreachable")

    def _publish_in(self, conn: Connection, persona_id: str, draft: dict) -> tuple[int, bool]:
        v = persona_versions.c
        # A no-op write as the first statement: a row lock on PostgreSQL, the write lock on
        # SQLite, so max(version) below cannot change under us before the insert commits.
        locked = conn.execute(personas.update().where(personas.c.persona_id == persona_id)
                              .values(display_name=personas.c.display_name))
        if locked.rowcount == 0:
            raise NotFound(f"unknown persona {persona_id!r}")
        same = conn.execute(sa.select(v.version).where(
            v.persona_id == persona_id, v.content_hash == draft["content_hash"])).scalar()
        if same is not None:
            return same, False
        version = (conn.execute(sa.select(sa.func.max(v.version)).where(v.persona_id == persona_id)).scalar() or 0) + 1
        record = validate({**draft, "version": version})
        conn.execute(persona_versions.insert().values(
            persona_id=persona_id, version=version, content_hash=record["content_hash"],
            pack=PersonaPack(record).to_json(), published_at=now()))
        return version, True

    # -- build jobs -----------------------------------------------------------------------------
    def create_job(self, job_id: str, persona_id: str, owner: str) -> None:
        moment = now()
        with self.engine.begin() as conn:
            conn.execute(build_jobs.insert().values(
                job_id=job_id, persona_id=persona_id, state="queued", progress=0.0, message="queued",
                owner=owner, created_at=moment, updated_at=moment))

    def delete_job(self, job_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(build_jobs.delete().where(build_jobs.c.job_id == job_id))

    def update_job(self, job_id: str, **fields) -> None:
        """Set ``fields`` (state, progress, message, version, qc, warnings, error) on the job."""
        fields["updated_at"] = now()
        if fields.get("state") in FINISHED_STATES:
            fields["finished_at"] = fields["updated_at"]
        with self.engine.begin() as conn:
            conn.execute(build_jobs.update().where(build_jobs.c.job_id == job_id).values(**fields))

    def job(self, job_id: str) -> dict:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(build_jobs).where(build_jobs.c.job_id == job_id)).mappings().first()
        if row is None:
            raise NotFound(f"unknown job {job_id!r}")
        out = {key: row[key] for key in ("job_id", "persona_id", "state", "progress", "message", "version", "error")}
        out.update(qc=row["qc"] or [], warnings=row["warnings"] or [], created_at=iso(row["created_at"]),
                   updated_at=iso(row["updated_at"]), finished_at=iso(row["finished_at"]),
                   ref=f"{row['persona_id']}@{row['version']}" if row["version"] else None)
        return out

    def unfinished_jobs(self) -> list[tuple[str, str]]:
        """(job_id, owner) of every job still queued or running."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(build_jobs.c.job_id, build_jobs.c.owner)
                                .where(build_jobs.c.state.in_(("queued", "running")))).all()
        return [(job_id, owner) for job_id, owner in rows]
