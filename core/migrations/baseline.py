"""The catalog's schema as the release before Alembic left it: frozen, never edited.

The baseline revision creates these tables, and a catalog made before Alembic (tables, no
`studio_schema_version`) is brought up to them (missing tables created, missing columns added, rows
kept) before it is stamped with the baseline. Later schema changes are new revisions, not edits here.
"""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Boolean, Column, DateTime, ForeignKey, Integer, MetaData, String, Table, Text, UniqueConstraint

REVISION = "0001_baseline"

metadata = MetaData()


def _when(name: str, nullable: bool = False) -> Column:
    return Column(name, DateTime(timezone=True), nullable=nullable)


Table(
    "datasets", metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("description", Text, nullable=False),
    _when("created_at"),
)  # fmt: skip

Table(
    "dataset_versions", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dataset_id", String(32), ForeignKey("datasets.id"), nullable=False),
    Column("version", String(64), nullable=False),
    Column("parent", String(64), nullable=True),
    Column("note", Text, nullable=False),
    Column("n_items", Integer, nullable=False),
    Column("stats", JSON, nullable=False),
    Column("s3_uri", String(512), nullable=True),
    _when("created_at"),
    UniqueConstraint("dataset_id", "version"),
)  # fmt: skip

Table(
    "jobs", metadata,
    Column("id", String(32), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("backend", String(32), nullable=False),
    Column("status", String(32), nullable=False),
    Column("config", JSON, nullable=False),
    Column("dataset", String(256), nullable=True),
    Column("mlflow_run_id", String(64), nullable=True),
    Column("attempts", Integer, nullable=False),
    Column("queue_position", Integer, nullable=False),
    Column("failure_reason", Text, nullable=True),
    Column("pid", Integer, nullable=True),
    Column("pid_started", BigInteger, nullable=True),
    Column("exit_code", Integer, nullable=True),
    Column("log_path", String(1024), nullable=True),
    Column("sagemaker_job_name", String(64), nullable=True),
    Column("region", String(32), nullable=True),
    _when("created_at"),
    _when("started_at", nullable=True),
    _when("finished_at", nullable=True),
)  # fmt: skip

Table(
    "exports", metadata,
    Column("id", String(32), primary_key=True),
    Column("source", String(1024), nullable=False),
    Column("mlflow_run_id", String(64), nullable=True),
    Column("path", String(1024), nullable=False),
    Column("fp16", Boolean, nullable=False),
    Column("parity", JSON, nullable=False),
    Column("registered_model", String(256), nullable=True),
    Column("registered_version", String(32), nullable=True),
    Column("size_bytes", Integer, nullable=False),
    _when("created_at"),
)  # fmt: skip

Table(
    "pipelines", metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(128), nullable=False, index=True),
    Column("status", String(32), nullable=False),
    Column("config", JSON, nullable=False),
    Column("config_path", String(1024), nullable=True),
    Column("pid", Integer, nullable=True),
    Column("pid_started", BigInteger, nullable=True),
    Column("failure_reason", Text, nullable=True),
    _when("created_at"),
    _when("started_at", nullable=True),
    _when("finished_at", nullable=True),
)  # fmt: skip

Table(
    "pipeline_steps", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("pipeline_id", String(32), ForeignKey("pipelines.id"), nullable=False),
    Column("name", String(32), nullable=False),
    Column("position", Integer, nullable=False),
    Column("status", String(32), nullable=False),
    Column("inputs", JSON, nullable=False),
    Column("outputs", JSON, nullable=False),
    Column("failure_reason", Text, nullable=True),
    Column("attempts", Integer, nullable=False),
    _when("started_at", nullable=True),
    _when("finished_at", nullable=True),
    UniqueConstraint("pipeline_id", "name"),
)  # fmt: skip
