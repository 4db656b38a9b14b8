"""What the studio writes to a run: its creation and status, tags, params, metrics, images, files.

Metrics travel as rows in the shape of `metrics.jsonl` lines, `{"step": 3, "time": <seconds>,
"loss": 0.1, ...}`, wherever they come from (the training loop, the relay, an evaluation), so one
row logged twice is the same MLflow metric and the store keeps it once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from numbers import Real
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from PIL import Image

from core.tracking.artifacts import forget
from core.tracking.connection import get_tracking

METRICS_PER_CALL = 1000  # MLflow's log_batch limits
PARAMS_PER_CALL = 100


def create_run(name: str, tags: dict[str, str] | None = None) -> str:
    """Create an MLflow run before its job starts, so the UI can show it at once."""
    tracking = get_tracking()
    run = tracking.client.create_run(tracking.experiment_id, run_name=name, tags=tags or {})
    return run.info.run_id


def set_status(run_id: str, status: str) -> None:
    """RUNNING, or a final status: FINISHED, KILLED or FAILED."""
    client = get_tracking().client
    if status == "RUNNING":
        client.update_run(run_id, status="RUNNING")
    else:
        client.set_terminated(run_id, status=status)


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


def metric_points(rows: Iterable[dict[str, Any]]) -> list[Metric]:
    """MLflow metrics of metrics.jsonl rows; the row's `time` (seconds) becomes the timestamp."""
    points = []
    for row in rows:
        stamp, step = int(float(row.get("time", 0)) * 1000), int(row.get("step", 0))
        points += [Metric(k, float(v), stamp, step) for k, v in row.items() if k not in ("step", "time") and isinstance(v, Real)]
    return points


def parse_rows(lines: Iterable[str]) -> list[dict[str, Any]]:
    """The JSON rows of metrics.jsonl lines, skipping any that are not (a half-written last line)."""
    rows = []
    for line in lines:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def log_rows(run_id: str, rows: Iterable[dict[str, Any]]) -> None:
    points = metric_points(rows)
    client = get_tracking().client
    for i in range(0, len(points), METRICS_PER_CALL):
        client.log_batch(run_id, metrics=points[i : i + METRICS_PER_CALL])


def log_metrics(run_id: str, values: dict[str, float], step: int = 0) -> None:
    log_rows(run_id, [{"step": step, "time": time.time(), **values}])


def log_params(run_id: str, params: dict[str, str]) -> None:
    """Log the params the run does not have yet (a resumed job logs them again; MLflow refuses changes)."""
    client = get_tracking().client
    existing = client.get_run(run_id).data.params
    new = [Param(k, v) for k, v in params.items() if k not in existing]
    for i in range(0, len(new), PARAMS_PER_CALL):
        client.log_batch(run_id, params=new[i : i + PARAMS_PER_CALL])


def set_tags(run_id: str, tags: dict[str, str]) -> None:
    get_tracking().client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


ESTIMATE_TAG = "estimate."  # the launch's estimate, e.g. `estimate.total_seconds`, compared with the run's duration


def record_estimate(run_id: str, values: dict[str, float]) -> None:
    set_tags(run_id, {f"{ESTIMATE_TAG}{key}": f"{value:.6g}" for key, value in values.items()})


def log_image(run_id: str, image: Image.Image, key: str, step: int) -> None:
    get_tracking().client.log_image(run_id, image, key=key, step=step)


def log_text(run_id: str, text: str, name: str) -> None:
    get_tracking().client.log_text(run_id, text, name)


def log_artifacts(run_id: str, folder: Path, path: str) -> None:
    """Upload every file under `folder` as the run's artifact folder `path` (`model`, `onnx`, ...)."""
    get_tracking().client.log_artifacts(run_id, str(folder), path)
    forget(run_id)  # the run may have a model now
