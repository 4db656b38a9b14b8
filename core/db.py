"""The catalog: SQLAlchemy engine, sessions and tables (SQLite by default, PostgreSQL by URL)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint, create_engine, event, inspect, make_url, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from core.errors import StudioError
from core.settings import get_settings


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_id() -> str:
    return uuid.uuid4().hex[:12]


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, datetime: DateTime(timezone=True)}


class Dataset(Base):
    __tablename__ = "datasets"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DatasetVersion(Base):
    __tablename__ = "dataset_versions"
    __table_args__ = (UniqueConstraint("dataset_id", "version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"))
    version: Mapped[str] = mapped_column(String(64))
    parent: Mapped[str | None] = mapped_column(String(64), nullable=True)
    note: Mapped[str] = mapped_column(Text, default="")
    n_items: Mapped[int] = mapped_column(Integer, default=0)
    stats: Mapped[dict[str, Any]] = mapped_column(default=dict)
    s3_uri: Mapped[str | None] = mapped_column(String(512), nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Job(Base):
    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(32), default="train")
    backend: Mapped[str] = mapped_column(String(32), default="local")
    status: Mapped[str] = mapped_column(String(32), default="queued")
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    dataset: Mapped[str | None] = mapped_column(String(256), nullable=True)
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    queue_position: Mapped[int] = mapped_column(Integer, default=0)
    failure_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    pid_started: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # clock ticks after boot: tells a reused pid apart
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    log_path: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    sagemaker_job_name: Mapped[str | None] = mapped_column(String(64), nullable=True)
    owner: Mapped[str | None] = mapped_column(String(256), nullable=True)  # who launched it (team mode)
    region: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)


class Export(Base):
    """An ONNX export of a run's (or a folder's) model, with its parity report."""

    __tablename__ = "exports"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    source: Mapped[str] = mapped_column(String(1024))
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    path: Mapped[str] = mapped_column(String(1024))
    fp16: Mapped[bool] = mapped_column(default=False)
    parity: Mapped[dict[str, Any]] = mapped_column(default=dict)
    registered_model: Mapped[str | None] = mapped_column(String(256), nullable=True)
    registered_version: Mapped[str | None] = mapped_column(String(32), nullable=True)
    size_bytes: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Pipeline(Base):
    """One end-to-end pipeline (dataset -> training -> best run -> ONNX export -> registry alias)."""

    __tablename__ = "pipelines"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(128), index=True)
    status: Mapped[str] = mapped_column(String(32), default="pending")
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    config_path: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    pid_started: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    failure_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)


class PipelineStep(Base):
    """One step of a pipeline: what it was given, what it produced, and how its last attempt ended."""

    __tablename__ = "pipeline_steps"
    __table_args__ = (UniqueConstraint("pipeline_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    pipeline_id: Mapped[str] = mapped_column(ForeignKey("pipelines.id"))
    name: Mapped[str] = mapped_column(String(32))
    position: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(32), default="pending")
    inputs: Mapped[dict[str, Any]] = mapped_column(default=dict)
    outputs: Mapped[dict[str, Any]] = mapped_column(default=dict)
    failure_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)


class AuditEvent(Base):
    """Who did what, when: launches, stops, deletes, promotions, exports, imports, roles, tokens."""

    __tablename__ = "audit_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(256))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(1024), default="")
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class UserRole(Base):
    """A role an admin gave a user in the studio (team mode); see `core.access.role_for`."""

    __tablename__ = "user_roles"
    email: Mapped[str] = mapped_column(String(256), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    updated_by: Mapped[str] = mapped_column(String(256))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiToken(Base):
    """A user's bearer token for the HTTP API, kept as its sha256 only (the token is shown once)."""

    __tablename__ = "api_tokens"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner: Mapped[str] = mapped_column(String(256), index=True)
    name: Mapped[str] = mapped_column(String(128), default="")
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(nullable=True)


def _enable_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


MIGRATIONS = "core:migrations"  # Alembic's script location: shipped inside the package


def _alembic_config(connection: Connection) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    config.attributes["connection"] = connection
    config.attributes["target_metadata"] = Base.metadata
    return config


@lru_cache(maxsize=1)
def _scripts() -> Any:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config(None))  # type: ignore[arg-type]


def head_revision() -> str:
    """The newest schema revision this code knows."""
    return _scripts().get_current_head()


def current_revision(connection: Connection) -> str | None:
    """The catalog's revision; None for an empty database or one made before Alembic."""
    from alembic.runtime.migration import MigrationContext

    from core.migrations import VERSION_TABLE

    heads = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE}).get_current_heads()
    return heads[0] if heads else None


def check_known(revision: str | None) -> None:
    """Refuse a catalog whose schema comes from a newer studio than this one."""
    known = {script.revision for script in _scripts().walk_revisions()}
    if revision is not None and revision not in known:
        raise StudioError(f"The catalog's schema (revision {revision}) is newer than this studio; upgrade the studio.")


def _adopt_legacy(connection: Connection) -> None:
    """A catalog made before Alembic: bring it to the baseline in place (rows kept), then stamp it."""
    from alembic import command

    from core.migrations import baseline

    baseline.metadata.create_all(connection)  # only the missing tables
    inspector = inspect(connection)
    for table in baseline.metadata.sorted_tables:
        existing = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in existing:  # nullable: an older release's rows have no value for it
                ddl = column.type.compile(dialect=connection.dialect)
                connection.execute(text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {ddl}'))
    command.stamp(_alembic_config(connection), baseline.REVISION)


_LOCK_KEY = 0x5D1FF057  # the advisory lock the studio's migrations hold on PostgreSQL


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[Connection]:
    """One connection that alone migrates this catalog: other processes starting at once wait."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _LOCK_KEY})
            conn.commit()
            try:
                yield conn
            finally:
                conn.rollback()
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _LOCK_KEY})
                conn.commit()
        return
    database = engine.url.database
    if engine.dialect.name == "sqlite" and database and database != ":memory:" and not database.startswith("file:"):
        from filelock import FileLock

        with FileLock(f"{database}.migrate.lock"), engine.connect() as conn:
            yield conn
        return
    with engine.connect() as conn:
        yield conn



def migrate(engine: Engine) -> dict[str, str | None]:
    """Bring the catalog to the newest revision (Alembic); returns {"from": ..., "to": ...}.

    An empty database gets every revision; one made before Alembic (tables, no `studio_schema_version`)
    is stamped with the baseline first; a schema newer than this code is refused with one sentence.
    """
    from alembic import command

    head = head_revision()
    with engine.connect() as conn:  # the common case, without the lock: already up to date
        before = current_revision(conn)
    check_known(before)
    if before == head:
        return {"from": before, "to": head}
    with _migration_lock(engine) as conn:
        before = current_revision(conn)
        check_known(before)
        if before is None and inspect(conn).get_table_names():
            _adopt_legacy(conn)
            conn.commit()
        command.upgrade(_alembic_config(conn), "head")
        conn.commit()
        return {"from": before, "to": current_revision(conn)}


def describe_url(url: str) -> str:
    """The catalog URL with its password hidden."""
    return make_url(url).render_as_string(hide_password=True)


def catalog_status(url: str | None = None) -> dict[str, Any]:
    """The catalog's revision next to this code's, without changing anything."""
    url = url or get_settings().catalog_url
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            revision = current_revision(conn)
            tables = bool(inspect(conn).get_table_names())
    finally:
        engine.dispose()
    head = head_revision()
    known = {script.revision for script in _scripts().walk_revisions()}
    state = "up to date" if revision == head else "newer than this studio" if revision is not None and revision not in known else "needs upgrade"
    if revision is None:
        state = "made before migrations; needs upgrade" if tables else "empty; needs upgrade"
    return {"url": describe_url(url), "dialect": make_url(url).get_backend_name(), "revision": revision, "head": head, "state": state}


_ENGINES: dict[str, Engine] = {}
_ENGINES_LOCK = threading.Lock()


def _engine_for(url: str) -> Engine:
    """One engine per catalog URL, migrated to the newest revision when first made."""
    with _ENGINES_LOCK:
        engine = _ENGINES.get(url)
        if engine is None:
            engine = create_engine(url, pool_pre_ping=True)
            if engine.dialect.name == "sqlite":
                event.listen(engine, "connect", _enable_sqlite_pragmas)
            try:
                migrate(engine)
            except BaseException:
                engine.dispose()
                raise
            _ENGINES[url] = engine
            while len(_ENGINES) > 4:  # a long-lived process that changed homes keeps the newest few
                _ENGINES.pop(next(iter(_ENGINES))).dispose()
        return engine


def get_engine() -> Engine:
    return _engine_for(get_settings().catalog_url)


def reset_engines() -> None:
    """Close every cached engine's connections and forget them (tests; `studio db upgrade`)."""
    with _ENGINES_LOCK:
        for engine in _ENGINES.values():
            engine.dispose()
        _ENGINES.clear()


@contextmanager
def session_scope() -> Iterator[Session]:
    """One transaction: committed when the block ends, rolled back if it raises."""
    session = sessionmaker(get_engine(), expire_on_commit=False)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
