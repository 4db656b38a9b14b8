"""MLflow's model registry: a run's model folder (or ONNX export) as a new version, and aliases.

Promoting a run from the Runs page, exporting to ONNX and the pipeline's register step all go
through here, so a registered model is created, versioned and aliased one way.
"""

from __future__ import annotations

import re

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from core import audit
from core.access import require
from core.errors import StudioError
from core.tracking.artifacts import MODEL, has_model
from core.tracking.connection import get_tracking
from core.tracking.runs import SAFE_KEY, get_run

TRAINED = "Trained with Diffusion Studio (diffusers layout)."
ALIAS = re.compile(r"[A-Za-z_][\w-]*")
RESERVED_ALIAS = re.compile(r"[vV]\d+|latest")  # MLflow's own names for versions


def register_version(name: str, run_id: str, artifact_path: str, description: str, tags: dict[str, str] | None = None) -> int:
    """Register the run's artifact folder as a new version of `name` (created on first use)."""
    client = get_tracking().client
    try:
        client.create_registered_model(name, description=description)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    source = f"{get_run(run_id).info.artifact_uri}/{artifact_path}"
    return int(client.create_model_version(name, source, run_id=run_id, tags=tags or {}).version)


def check_alias(alias: str) -> str:
    if not ALIAS.fullmatch(alias) or RESERVED_ALIAS.fullmatch(alias):
        raise StudioError(f"{alias!r} cannot be an alias: use letters, digits, '_' or '-', not 'latest' or 'v<number>'.")
    return alias


def set_alias(name: str, alias: str, version: int | str) -> None:
    """Point `models:/<name>@<alias>` at the version."""
    require("promote")
    get_tracking().client.set_registered_model_alias(name, check_alias(alias), str(version))


def promote(run_id: str, model_name: str, alias: str = "champion") -> int:
    """Register the run's `model` folder as a new version of `model_name` and point `alias` at it."""
    require("promote")
    name = model_name.strip()
    if not SAFE_KEY.match(name):
        raise StudioError("A registered model name may hold only letters, digits, '_', '-', '.', '/' and spaces.")
    check_alias(alias)  # before registering: a refused alias must not leave a new version behind
    run = get_run(run_id)
    if not has_model(run_id):
        raise StudioError(f"The run {run_id} has no trained model to promote yet (no 'model' artifact).")
    version = register_version(name, run_id, MODEL, TRAINED, tags={"dataset": run.data.tags.get("dataset", "")})
    set_alias(name, alias, version)
    audit.record("model.promote", run_id, model=name, alias=alias, version=version)
    return version


def registered_versions(run_id: str) -> list[ModelVersion]:
    return list(get_tracking().client.search_model_versions(f"run_id = '{run_id}'"))
