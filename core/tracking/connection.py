"""The tracking store and experiment every other module of the package talks to.

The embedded default is a SQLite store in STUDIO_HOME (WAL mode); STUDIO_MLFLOW_URI points at any
tracking server instead, with MLflow's credentials if it asks for them (see `credentials`).
"""

from __future__ import annotations

import logging
import os
import sqlite3
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import core  # noqa: F401  (telemetry switches before mlflow is imported)
from core.errors import StudioError
from core.settings import get_settings
from core.tracking import credentials

# sagemaker-mlflow logs "list index out of range" on every request to a non-ARN server.
logging.getLogger("mlflow.tracking.request_header.registry").setLevel(logging.ERROR)
logging.getLogger("alembic").setLevel(logging.WARNING)
# Downloads and uploads are ours to report; MLflow's tqdm bars would clutter the CLI and job logs.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import mlflow  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

ASK_FOR = f"set {credentials.USERNAME} and {credentials.PASSWORD} (or {credentials.TOKEN})"


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
    try:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            experiment_id = client.create_experiment(experiment, artifact_location=artifact_root or None)
        else:
            experiment_id = found.experiment_id
    except MlflowException as exc:
        error = refusal(exc, uri, experiment)
        if error is None:
            raise
        raise error from None
    return Tracking(uri, experiment_id, client)


def refusal(exc: MlflowException, uri: str, experiment: str) -> StudioError | None:
    """A server's 401 or 403 as one sentence (without the credentials); None for other errors."""
    status = exc.get_http_status_code()
    if status == 401 or exc.error_code == "UNAUTHENTICATED":
        if credentials.present():
            return StudioError(f"The MLflow server at {uri} rejected the credentials; check {credentials.USERNAME} and {credentials.PASSWORD} (or {credentials.TOKEN}).")
        return StudioError(f"The MLflow server at {uri} needs credentials; {ASK_FOR}.")
    if status == 403 or exc.error_code == "PERMISSION_DENIED":
        who = os.environ.get(credentials.USERNAME) or "these credentials"
        return StudioError(f"The MLflow server at {uri} does not let {who} write to the experiment {experiment!r}; ask its admin for EDIT permission.")
    return None


def get_tracking() -> Tracking:
    """The store and experiment, created once before any parallel writer starts."""
    settings = get_settings()
    artifact_root = "" if settings.mlflow_uri else (settings.home.resolve() / "mlartifacts").as_uri()
    uri = credentials.adopt(settings.tracking_uri)  # a user:password@ goes to MLflow's variables
    if settings.mlflow_credentials_secret and settings.mlflow_uri:
        credentials.load_secret(settings.mlflow_credentials_secret)  # once: then they are in the environment
    tracking = _tracking_for(uri, settings.experiment, artifact_root)
    mlflow.set_tracking_uri(tracking.uri)
    return tracking
