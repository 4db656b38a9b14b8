"""The tracking store and experiment every other module of the package talks to.

The embedded default is a SQLite store in STUDIO_HOME (WAL mode); STUDIO_MLFLOW_URI points at any
tracking server instead.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import core  # noqa: F401  (telemetry switches before mlflow is imported)
from core.settings import get_settings

# sagemaker-mlflow logs "list index out of range" on every request to a non-ARN server.
logging.getLogger("mlflow.tracking.request_header.registry").setLevel(logging.ERROR)
logging.getLogger("alembic").setLevel(logging.WARNING)
# Downloads and uploads are ours to report; MLflow's tqdm bars would clutter the CLI and job logs.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import mlflow  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402


@dataclass(frozen=True)
class Tracking:
    uri: str
    experiment_id: str
    client: MlflowClient


def _prepare_sqlite(uri: str) -> None:
    path = Path(uri.removeprefix("sqlite:///"))
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")


@lru_cache(maxsize=4)
def _tracking_for(uri: str, experiment: str, artifact_root: str) -> Tracking:
    if uri.startswith("sqlite:///"):
        _prepare_sqlite(uri)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        experiment_id = client.create_experiment(experiment, artifact_location=artifact_root or None)
    else:
        experiment_id = found.experiment_id
    return Tracking(uri, experiment_id, client)


def get_tracking() -> Tracking:
    """The store and experiment, created once before any parallel writer starts."""
    settings = get_settings()
    artifact_root = "" if settings.mlflow_uri else (settings.home.resolve() / "mlartifacts").as_uri()
    tracking = _tracking_for(settings.tracking_uri, settings.experiment, artifact_root)
    mlflow.set_tracking_uri(tracking.uri)
    return tracking
