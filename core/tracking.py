"""MLflow: where runs, metrics, sample images and models are tracked, and the queries the UI needs.

The embedded default is a SQLite store in STUDIO_HOME (WAL mode); STUDIO_MLFLOW_URI points at any
tracking server instead.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import core  # noqa: F401  (telemetry switches before mlflow is imported)
from core.settings import get_settings

# sagemaker-mlflow logs "list index out of range" on every request to a non-ARN server.
logging.getLogger("mlflow.tracking.request_header.registry").setLevel(logging.ERROR)
logging.getLogger("alembic").setLevel(logging.WARNING)

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


def create_run(name: str, tags: dict[str, str] | None = None) -> str:
    """Create an MLflow run before its job starts, so the UI can show it at once."""
    tracking = get_tracking()
    run = tracking.client.create_run(tracking.experiment_id, run_name=name, tags=tags or {})
    return run.info.run_id


def flatten(params: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """`{"unet": {"lr": 1e-3}}` -> `{"unet.lr": "0.001"}`; MLflow params are flat strings."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)[:6000]
    return flat


def model_folder(ref: str) -> Path:
    """A local diffusers-layout folder for a model folder path or an MLflow run id (its `model` artifact)."""
    from core.errors import StudioError

    path = Path(ref).expanduser()
    if path.is_dir():
        return path
    if "/" in ref or ref.startswith("."):
        raise StudioError(f"The model folder {ref} does not exist.")
    dest = get_settings().cache_dir / "models" / ref
    if (dest / "model_index.json").is_file():
        return dest
    client = get_tracking().client
    try:
        client.get_run(ref)
    except Exception:
        raise StudioError(f"{ref!r} is neither a model folder nor an MLflow run id.") from None
    if not any(a.path == "model" for a in client.list_artifacts(ref)):
        raise StudioError(f"The run {ref} has no trained model yet (no 'model' artifact).")
    tmp = dest.with_name(f".{ref}-download")
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    client.download_artifacts(ref, "model", str(tmp))
    tmp.joinpath("model").rename(dest) if (tmp / "model").is_dir() else tmp.rename(dest)
    shutil.rmtree(tmp, ignore_errors=True)
    return dest
