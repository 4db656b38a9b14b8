"""The MLflow queries behind the Runs page and `studio runs`: list, detail, curves, samples, compare.

Everything reads what the engine logs (core/training/loop.py): the flattened TrainConfig as params,
tags `dataset`/`preset`/`stage`/`job_id`/`backend`, stepped metrics, one stepped image per
validation prompt (`prompt_00`, ...) plus the whole grid (`samples`), `validation_prompts.json`
and the final model in the `model` artifact folder.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import zipfile
from bisect import bisect_left
from dataclasses import dataclass, field
from datetime import date, datetime, time, timezone
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, Field

from core.errors import StudioError
from core.settings import get_settings
from core.tracking import get_tracking, model_folder

# Artifact downloads are ours to report; MLflow's own tqdm bars would clutter the CLI and logs.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

STATUSES = ("RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED")
NOTE_TAG = "mlflow.note.content"
# What the page plots by default, in this order; any other logged metric can be picked too.
CURVES = ("loss", "val_loss", "lr", "samples_per_s", "vae_loss", "vae_val_mse", "vae_val_psnr")
# MLflow 3.17 stores `log_image(key=, step=)` as images/<key>+step+<n>+timestamp+<ms>+<uuid>.png
# (plus a `+compressed.webp` thumbnail); releases before 3.5 used `%` instead of `+`.
IMAGE_FILE = re.compile(r"^images/(?P<key>.+?)[+%]step[+%](?P<step>\d+)[+%]timestamp[+%](?P<ts>\d+)[+%][0-9a-f-]+\.png$")
SAFE_TEXT = re.compile(r"^[^'\"\\]*$")
SAFE_KEY = re.compile(r"^[\w.\- /]+$")


class RunQuery(BaseModel):
    """The Runs table's filters, sort and page size; becomes one MLflow `filter_string`."""

    status: list[Literal["RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"]] = []
    dataset: str | None = Field(None, description="name@version, or a name for all its versions.")
    preset: str | None = None
    tag: str | None = Field(None, description="key=value, or a key that must be set.")
    since: date | None = None
    until: date | None = None
    search: str | None = Field(None, description="Part of the run name.")
    sort: str = Field("start_time", description="start_time, run_name, or a metric key.")
    descending: bool = True
    page_size: int = Field(25, ge=1, le=1000)


@dataclass
class RunRow:
    run_id: str
    name: str
    status: str
    dataset: str
    preset: str
    stage: str
    backend: str
    steps: int | None
    last_loss: float | None
    val_loss: float | None
    started: datetime
    duration_s: float | None
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class RunPage:
    rows: list[RunRow]
    next_token: str | None


@dataclass
class RunDetail:
    row: RunRow
    params: dict[str, str]
    tags: dict[str, str]  # the user's and the studio's tags, without mlflow.* bookkeeping
    note: str
    artifacts: list[str]
    model_files: list[tuple[str, int]]


@dataclass
class ParamDiff:
    differing: dict[str, list[str | None]]  # key -> one value per run, in the runs' order
    identical: dict[str, str]


def _quote(value: str, what: str) -> str:
    if not SAFE_TEXT.match(value):
        raise StudioError(f"The {what} filter cannot contain quotes or backslashes.")
    return f"'{value}'"


def _day_ms(day: date, end: bool) -> int:
    moment = datetime.combine(day, time.max if end else time.min, tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


def filter_string(query: RunQuery) -> str:
    """The MLflow search filter for a query, e.g. `tags.preset = 'tiny' AND attributes.status IN ('FINISHED')`."""
    parts = []
    # MLflow has no OR and no IN for statuses: exclude the ones not chosen instead.
    parts += [f"attributes.status != '{s}'" for s in STATUSES if query.status and s not in query.status]
    if query.dataset:
        ref = query.dataset.strip()
        parts.append(f"tags.dataset = {_quote(ref, 'dataset')}" if "@" in ref else f"tags.dataset LIKE {_quote(ref + '@%', 'dataset')}")
    if query.preset:
        parts.append(f"tags.preset = {_quote(query.preset, 'preset')}")
    if query.tag:
        key, sep, value = query.tag.partition("=")
        key = key.strip()
        if not SAFE_KEY.match(key):
            raise StudioError(f"The tag name {key!r} may hold only letters, digits, '_', '-', '.', '/' and spaces.")
        parts.append(f"tags.`{key}` = {_quote(value.strip(), 'tag')}" if sep else f"tags.`{key}` LIKE '%'")
    if query.since:
        parts.append(f"attributes.start_time >= {_day_ms(query.since, end=False)}")
    if query.until:
        parts.append(f"attributes.start_time <= {_day_ms(query.until, end=True)}")
    if query.search and query.search.strip():
        parts.append(f"attributes.run_name ILIKE {_quote('%' + query.search.strip() + '%', 'search')}")
    return " AND ".join(parts)


def order_by(query: RunQuery) -> list[str]:
    direction = "DESC" if query.descending else "ASC"
    if query.sort == "start_time":
        return [f"attributes.start_time {direction}"]
    if query.sort in ("run_name", "end_time", "status"):
        return [f"attributes.{query.sort} {direction}", "attributes.start_time DESC"]
    if not SAFE_KEY.match(query.sort):
        raise StudioError(f"There is no metric called {query.sort!r} to sort by.")
    return [f"metrics.`{query.sort}` {direction}", "attributes.start_time DESC"]


def _planned_steps(params: dict[str, str], stage: str) -> int | None:
    stages = ["vae", "unet"] if stage in ("all", "") else [stage]
    try:
        return sum(int(params[f"{s}.steps"]) for s in stages)
    except (KeyError, ValueError):
        return None


def _row(run: Any) -> RunRow:
    info, data = run.info, run.data
    stage = data.tags.get("stage", "")
    end = info.end_time / 1000 if info.end_time else None
    start = info.start_time / 1000
    return RunRow(
        run_id=info.run_id,
        name=info.run_name or info.run_id,
        status=info.status,
        dataset=data.tags.get("dataset", ""),
        preset=data.tags.get("preset", ""),
        stage=stage,
        backend=data.tags.get("backend", ""),
        steps=_planned_steps(data.params, stage),
        last_loss=data.metrics.get("loss"),
        val_loss=data.metrics.get("val_loss"),
        started=datetime.fromtimestamp(start, tz=timezone.utc),
        duration_s=(end or datetime.now(timezone.utc).timestamp()) - start if info.status != "SCHEDULED" else None,
        metrics=dict(data.metrics),
    )


def list_runs(query: RunQuery | None = None, page_token: str | None = None) -> RunPage:
    """One page of runs; MLflow filters, sorts and pages in its store, so hundreds of runs stay fast."""
    query = query or RunQuery()
    tracking = get_tracking()
    try:
        found = tracking.client.search_runs(
            [tracking.experiment_id],
            filter_string=filter_string(query),
            order_by=order_by(query),
            max_results=query.page_size,
            page_token=page_token,
        )
    except StudioError:
        raise
    except Exception as exc:  # MLflow rejects a malformed filter with a long message
        raise StudioError(f"MLflow could not search the runs: {str(exc).splitlines()[0][:200]}") from None
    return RunPage([_row(r) for r in found], found.token or None)


def recent_runs(limit: int = 10) -> list[RunRow]:
    return list_runs(RunQuery(page_size=limit)).rows


def get_run(run_id: str) -> Any:
    try:
        return get_tracking().client.get_run(run_id)
    except Exception:
        raise StudioError(f"There is no run {run_id!r} in the tracking store.") from None


def resolve_run(ref: str) -> str:
    """A run id, a unique prefix of one, or a run name; returns the run id."""
    tracking = get_tracking()
    ref = ref.strip()
    if SAFE_TEXT.match(ref):
        by_name = tracking.client.search_runs([tracking.experiment_id], filter_string=f"attributes.run_name = '{ref}'", max_results=2)
        if len(by_name) == 1:
            return by_name[0].info.run_id
        if len(by_name) > 1:
            raise StudioError(f"Several runs are called {ref!r}; give the run id instead.")
    if re.fullmatch(r"[0-9a-f]{32}", ref):
        return get_run(ref).info.run_id
    if re.fullmatch(r"[0-9a-f]{4,31}", ref):
        found = tracking.client.search_runs([tracking.experiment_id], filter_string=f"attributes.run_id LIKE '{ref}%'", max_results=2)
        if len(found) == 1:
            return found[0].info.run_id
    raise StudioError(f"No run is called {ref!r} and no run id starts with it.")


def list_artifacts(run_id: str, path: str | None = None) -> list[Any]:
    return get_tracking().client.list_artifacts(run_id, path)


def run_detail(run_id: str) -> RunDetail:
    run = get_run(run_id)
    tags = {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")}
    top = list_artifacts(run_id)
    model_files = []
    if any(a.path == "model" and a.is_dir for a in top):
        stack = ["model"]
        while stack:
            for a in list_artifacts(run_id, stack.pop()):
                stack.append(a.path) if a.is_dir else model_files.append((a.path, int(a.file_size or 0)))
    return RunDetail(
        row=_row(run),
        params=dict(sorted(run.data.params.items())),
        tags=dict(sorted(tags.items())),
        note=run.data.tags.get(NOTE_TAG, ""),
        artifacts=[a.path + ("/" if a.is_dir else "") for a in top],
        model_files=sorted(model_files),
    )


def metric_keys(run_ids: list[str]) -> list[str]:
    """Metric keys logged by any of the runs, the usual curves first."""
    keys = {k for rid in run_ids for k in get_run(rid).data.metrics}
    return [k for k in CURVES if k in keys] + sorted(keys - set(CURVES))


def metric_frame(run_ids: list[str], keys: list[str]) -> pd.DataFrame:
    """Long frame run, key, step, value, wall_s (seconds since the run started) for curves."""
    client = get_tracking().client
    frames = []
    for rid in run_ids:
        start = get_run(rid).info.start_time
        for key in keys:
            history = client.get_metric_history(rid, key)
            if history:
                frames.append(
                    pd.DataFrame(
                        {"run": rid, "key": key, "step": [m.step for m in history], "value": [m.value for m in history],
                         "wall_s": [(m.timestamp - start) / 1000 for m in history]}
                    )
                )
    if not frames:
        return pd.DataFrame(columns=["run", "key", "step", "value", "wall_s"])
    return pd.concat(frames, ignore_index=True).sort_values(["run", "key", "step"], ignore_index=True)


def smooth(values: pd.Series, weight: float) -> pd.Series:
    """TensorBoard's exponential moving average with bias correction; weight 0 leaves the curve as is."""
    if not 0 <= weight < 1:
        raise StudioError("Smoothing must be at least 0 and below 1.")
    if weight == 0 or values.empty:
        return values
    out, last, count = [], 0.0, 0
    for value in values.to_numpy(dtype=float):
        count += 1
        last = last * weight + (1 - weight) * value
        out.append(last / (1 - weight**count))
    return pd.Series(out, index=values.index)


def smooth_frame(frame: pd.DataFrame, weight: float) -> pd.DataFrame:
    """Smooth each run's curve of each key separately."""
    if frame.empty or weight == 0:
        return frame
    out = frame.copy()
    out["value"] = frame.groupby(["run", "key"], group_keys=False)["value"].apply(lambda s: smooth(s, weight))
    return out


def image_index(run_id: str) -> dict[str, dict[int, str]]:
    """Stepped images of a run: key (`prompt_00`, `samples`, ...) -> step -> artifact path of the PNG."""
    index: dict[str, dict[int, str]] = {}
    for artifact in list_artifacts(run_id, "images"):
        match = IMAGE_FILE.match(artifact.path)
        if match:
            steps = index.setdefault(match["key"].replace("~", "/"), {})
            # Two images under one key and step: keep the later one.
            if int(match["step"]) not in steps or steps[int(match["step"])] < artifact.path:
                steps[int(match["step"])] = artifact.path
    return {k: dict(sorted(v.items())) for k, v in sorted(index.items())}


def image_steps(index: dict[str, dict[int, str]]) -> list[int]:
    return sorted({s for steps in index.values() for s in steps})


def nearest_step(steps: list[int], target: int) -> int | None:
    """The logged step closest to `target` (the earlier one on a tie); None if nothing was logged."""
    if not steps:
        return None
    steps = sorted(steps)
    i = bisect_left(steps, target)
    candidates = steps[max(0, i - 1) : i + 1]
    return min(candidates, key=lambda s: (abs(s - target), s))


def artifact_file(run_id: str, path: str) -> Path:
    """A local copy of one artifact; artifacts never change, so the copy is cached."""
    dest = get_settings().cache_dir / "runs" / run_id / path
    if not dest.exists():
        staging = dest.parent / f".download-{dest.name}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            local = Path(get_tracking().client.download_artifacts(run_id, path, str(staging)))
        except Exception:
            shutil.rmtree(staging, ignore_errors=True)
            raise StudioError(f"The run {run_id} has no artifact {path!r}.") from None
        local.rename(dest)
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def validation_prompts(run_id: str) -> list[str]:
    """The prompts behind `prompt_00`, `prompt_01`, ... (empty if the run logged none yet)."""
    if not any(a.path == "validation_prompts.json" for a in list_artifacts(run_id)):
        return []
    return list(json.loads(artifact_file(run_id, "validation_prompts.json").read_text()))


@dataclass
class SampleCell:
    run_id: str
    step: int | None  # the run's logged step nearest the requested one
    path: Path | None


def sample_grid(run_ids: list[str], step: int, indexes: dict[str, dict[str, dict[int, str]]] | None = None) -> dict[str, list[SampleCell]]:
    """Rows = validation prompts, columns = runs, each at its logged step nearest `step`.

    Prompts come from each run's `validation_prompts.json`, so runs that share a prompt share a row
    even when they logged it under different indexes.
    """
    indexes = indexes or {rid: image_index(rid) for rid in run_ids}
    by_prompt: dict[str, dict[str, str]] = {}  # prompt -> run -> image key
    for rid in run_ids:
        for i, prompt in enumerate(validation_prompts(rid)):
            if f"prompt_{i:02d}" in indexes[rid]:
                by_prompt.setdefault(prompt, {})[rid] = f"prompt_{i:02d}"
    grid: dict[str, list[SampleCell]] = {}
    for prompt, keys in by_prompt.items():
        cells = []
        for rid in run_ids:
            steps = indexes[rid].get(keys.get(rid, ""), {})
            near = nearest_step(list(steps), step)
            cells.append(SampleCell(rid, near, artifact_file(rid, steps[near]) if near is not None else None))
        grid[prompt] = cells
    return grid


def param_diff(run_ids: list[str]) -> ParamDiff:
    """The parameters whose values differ between the runs (missing counts as different)."""
    params = [get_run(rid).data.params for rid in run_ids]
    keys = sorted(set().union(*params))
    differing, identical = {}, {}
    for key in keys:
        values = [p.get(key) for p in params]
        if len(set(values)) > 1:
            differing[key] = values
        else:
            identical[key] = values[0]  # type: ignore[assignment]
    return ParamDiff(differing, identical)


def final_metrics(run_ids: list[str], keys: list[str] | None = None) -> pd.DataFrame:
    """The last value of each metric per run: rows = metrics, columns = run names."""
    runs = [get_run(rid) for rid in run_ids]
    keys = keys or metric_keys(run_ids)
    columns = {f"{r.info.run_name} ({r.info.run_id[:8]})": [r.data.metrics.get(k) for k in keys] for r in runs}
    return pd.DataFrame(columns, index=keys)


def _parse_param(value: str) -> Any:
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


def run_config(run_id: str) -> dict[str, Any]:
    """The run's training config rebuilt from its params, for cloning into a new training."""
    from core.training.config import TrainConfig, build_config

    params = get_run(run_id).data.params
    if "preset" not in params:
        raise StudioError(f"The run {run_id} has no training parameters to clone yet.")
    nested: dict[str, Any] = {}
    for key, value in params.items():
        *parents, leaf = key.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = _parse_param(value)
    known = {k: v for k, v in nested.items() if k in TrainConfig.model_fields and k not in ("output_dir", "checkpoint_dir", "mlflow_run_id")}
    return build_config(known).model_dump(mode="json", exclude={"output_dir", "checkpoint_dir", "mlflow_run_id"})


# ---- edits and actions ------------------------------------------------------------------------------


def set_note(run_id: str, text: str) -> None:
    get_run(run_id)
    get_tracking().client.set_tag(run_id, NOTE_TAG, text)


def set_tag(run_id: str, key: str, value: str) -> None:
    key = key.strip()
    if not key or not SAFE_KEY.match(key) or key.startswith("mlflow."):
        raise StudioError(f"The tag name {key!r} may hold only letters, digits, '_', '-', '.', '/' and spaces.")
    get_run(run_id)
    get_tracking().client.set_tag(run_id, key, value)


def delete_tag(run_id: str, key: str) -> None:
    get_tracking().client.delete_tag(run_id, key)


def registered_versions(run_id: str) -> list[Any]:
    return list(get_tracking().client.search_model_versions(f"run_id = '{run_id}'"))


def promote(run_id: str, model_name: str, alias: str = "champion") -> int:
    """Register the run's `model` folder as a new version of `model_name` and point `alias` at it."""
    if not SAFE_KEY.match(model_name.strip()):
        raise StudioError("A registered model name may hold only letters, digits, '_', '-', '.', '/' and spaces.")
    if not re.fullmatch(r"[A-Za-z_][\w-]*", alias) or re.fullmatch(r"[vV]\d+|latest", alias):
        raise StudioError(f"{alias!r} cannot be an alias: use letters, digits, '_' or '-', not 'latest' or 'v<number>'.")
    run = get_run(run_id)
    if not any(a.path == "model" for a in list_artifacts(run_id)):
        raise StudioError(f"The run {run_id} has no trained model to promote yet (no 'model' artifact).")
    client = get_tracking().client
    name = model_name.strip()
    if not client.search_registered_models(f"name = '{name}'"):
        client.create_registered_model(name, description="Trained with Diffusion Studio (diffusers layout).")
    version = client.create_model_version(
        name, f"{run.info.artifact_uri}/model", run_id=run_id, tags={"dataset": run.data.tags.get("dataset", "")}
    )
    client.set_registered_model_alias(name, alias, version.version)
    return int(version.version)


def delete_run(run_id: str) -> None:
    """Delete a run (MLflow keeps it restorable until garbage collection); refused while the registry needs it."""
    get_run(run_id)
    needed = registered_versions(run_id)
    if needed:
        names = ", ".join(f"{v.name} v{v.version}" for v in needed)
        raise StudioError(f"The run is registered as {names}; delete those model versions first.")
    get_tracking().client.delete_run(run_id)
    shutil.rmtree(get_settings().cache_dir / "runs" / run_id, ignore_errors=True)


def model_zip(run_id: str) -> Path:
    """The run's final model folder as a zip (diffusers layout inside), built once."""
    dest = get_settings().cache_dir / "zips" / f"{run_id}-model.zip"
    if dest.is_file():
        return dest
    folder = model_folder(run_id)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(folder).as_posix())
    tmp.rename(dest)
    return dest


def generate_side_by_side(run_ids: list[str], request: Any) -> dict[str, list[Any]]:
    """One prompt and seed through each run's final model (the engine's own generation code)."""
    from core.inference.torch_backend import TorchGenerator

    device = get_settings().device
    return {rid: TorchGenerator(model_folder(rid), device)(request) for rid in run_ids}
