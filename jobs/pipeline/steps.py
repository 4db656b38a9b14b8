"""What each pipeline step does. A step is two functions: `inputs` (what it depends on, compared
with the last attempt's to decide whether it must run again) and `run` (the work; it returns the
outputs the next steps read). Both call the same functions the pages and the CLI call."""

from __future__ import annotations

import json
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import StudioError
from core.settings import get_settings
from jobs.pipeline.config import PipelineConfig

Log = Callable[[str], None]


@dataclass
class Context:
    config: PipelineConfig
    done: dict[str, dict[str, Any]]  # outputs of the earlier steps, by name
    previous: dict[str, Any]  # this step's outputs from its last attempt (work that can be reused)
    save: Callable[[dict[str, Any]], None]  # record partial outputs as they appear
    log: Log


@dataclass(frozen=True)
class Step:
    inputs: Callable[[Context], dict[str, Any]]
    run: Callable[[Context, dict[str, Any]], dict[str, Any]]


# ---- dataset: resolve name@version (the demo dataset is made on first use), push it to S3 -------
def dataset_inputs(ctx: Context) -> dict[str, Any]:
    settings = get_settings()
    target = {"bucket": settings.s3_bucket, "prefix": settings.s3_prefix} if ctx.config.pushes else None
    return {"dataset": ctx.config.dataset, "push_to": target}


def dataset_run(ctx: Context, inputs: dict[str, Any]) -> dict[str, Any]:
    from core.datasets.demo import DEMO_NAME, ensure_demo_dataset
    from core.datasets.versions import list_versions, resolve

    name = inputs["dataset"].partition("@")[0]
    if name == DEMO_NAME and not list_versions(DEMO_NAME):
        ctx.log("Creating the demo dataset (scikit-learn digits)…")
        ensure_demo_dataset()
    ref = "@".join(resolve(inputs["dataset"]))
    outputs: dict[str, Any] = {"dataset": ref, "s3_uri": None}
    if inputs["push_to"]:
        from core.datasets.push import push_version

        pushed = push_version(ref)
        ctx.log(f"Pushed {ref} to {pushed.uri} ({pushed.uploaded} uploaded, {pushed.skipped} already there).")
        outputs.update(s3_uri=pushed.uri, uploaded=pushed.uploaded, skipped=pushed.skipped)
    return outputs


# ---- train: one job per sweep combination; a job from an earlier attempt is reused or resumed ---
def train_inputs(ctx: Context) -> dict[str, Any]:
    from core.training.config import build_config

    c = ctx.config
    base = {**c.train, "dataset": ctx.done["dataset"]["dataset"]}
    trials = [{"params": t, "config": build_config(base, c.trial_overrides(t)).model_dump(mode="json")} for t in c.trials()]
    return {"backend": c.backend, "processes": c.processes, "sagemaker": c.sagemaker if c.backend == "sagemaker" else None, "trials": trials}


def _label(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "base config"


def train_run(ctx: Context, inputs: dict[str, Any]) -> dict[str, Any]:
    from core.training.config import TrainConfig
    from jobs import control
    from jobs.records import get_job

    earlier = {json.dumps(j["config"], sort_keys=True): j["job_id"] for j in ctx.previous.get("jobs", [])}
    jobs: list[dict[str, Any]] = []
    for i, trial in enumerate(inputs["trials"], start=1):
        key = json.dumps(trial["config"], sort_keys=True)
        if key in earlier:
            job = get_job(earlier[key])
            if job.status in ("failed", "stopped"):
                job = control.resume(job.id)
                ctx.log(f"Resumed job {job.id} ({_label(trial['params'])}) from its latest checkpoint.")
            else:
                ctx.log(f"Job {job.id} ({_label(trial['params'])}) is already {job.status}.")
        else:
            config = TrainConfig.model_validate(trial["config"])
            name = f"{ctx.config.name}-{i}" + (f" ({_label(trial['params'])})" if trial["params"] else "")
            job = control.launch(config, backend=inputs["backend"], name=name, processes=inputs["processes"], sagemaker=inputs["sagemaker"])
            ctx.log(f"Launched job {job.id} on {job.backend} ({_label(trial['params'])}): {job.status}.")
        jobs.append({"job_id": job.id, "run_id": job.mlflow_run_id, "params": trial["params"], "config": trial["config"]})
        ctx.save({"jobs": jobs})
    return {"jobs": jobs}


# ---- wait: until every job has ended; a failed one fails the step with its reason --------------
def wait_inputs(ctx: Context) -> dict[str, Any]:
    return {"jobs": [j["job_id"] for j in ctx.done["train"]["jobs"]]}


def wait_run(ctx: Context, inputs: dict[str, Any]) -> dict[str, Any]:
    from jobs import control
    from jobs.records import FINAL, get_job

    seen: dict[str, str] = {}
    while True:
        control.refresh()
        jobs = [get_job(job_id) for job_id in inputs["jobs"]]
        for job in jobs:
            if seen.get(job.id) != job.status:
                ctx.log(f"Job {job.id}: {job.status}.")
                seen[job.id] = job.status
        ctx.save({"jobs": seen})
        if all(job.status in FINAL for job in jobs):
            break
        time.sleep(ctx.config.poll_seconds)
    for job in jobs:
        if job.status != "succeeded":
            why = job.failure_reason or f"it ended {job.status}"
            raise StudioError(f"The training job {job.id} did not succeed: {why}")
    return {"jobs": seen}


# ---- select: the best run by the chosen metric ---------------------------------------------------
def select_inputs(ctx: Context) -> dict[str, Any]:
    return {"runs": [j["run_id"] for j in ctx.done["train"]["jobs"]], **ctx.config.select.model_dump()}


def select_run(ctx: Context, inputs: dict[str, Any]) -> dict[str, Any]:
    from core.tracking.runs import get_run

    by_run = {j["run_id"]: j for j in ctx.done["train"]["jobs"]}
    metric = inputs["metric"]
    ranking = []
    for run_id in inputs["runs"]:
        value = get_run(run_id).data.metrics.get(metric)
        if value is not None:
            ranking.append({"run_id": run_id, "job_id": by_run[run_id]["job_id"], "params": by_run[run_id]["params"], metric: value})
    if not ranking:
        raise StudioError(f"None of the pipeline's runs logged the metric '{metric}'; choose another with select.metric.")
    ranking.sort(key=lambda row: row[metric], reverse=inputs["mode"] == "max")
    best = ranking[0]
    ctx.log(f"Best run: {best['run_id']} ({_label(best['params'])}) with {metric}={best[metric]:.5g}.")
    return {"run_id": best["run_id"], "job_id": best["job_id"], "metric": metric, "value": best[metric], "ranking": ranking}


# ---- fetch: the best run's model as a local folder (from the job's S3 output for SageMaker) -----
def fetch_inputs(ctx: Context) -> dict[str, Any]:
    return {"run_id": ctx.done["select"]["run_id"], "job_id": ctx.done["select"]["job_id"]}


def model_from_s3(uri: str, run_id: str, log: Log) -> None:
    """Download a SageMaker job's model.tar.gz and log its folder as the run's `model` artifact."""
    from core.aws import aws_errors, client
    from core.tracking.writes import log_artifacts
    from jobs.relay import split_uri

    bucket, key = split_uri(uri)
    with tempfile.TemporaryDirectory(prefix="studio-model-", dir=get_settings().home.resolve()) as tmp:
        archive = Path(tmp) / "model.tar.gz"
        with aws_errors("S3", bucket, key):
            client("s3").download_file(bucket, key, str(archive))
        folder = Path(tmp) / "model"
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(folder, filter="data")  # refuses absolute paths, '..' and links out
        except tarfile.TarError as exc:
            raise StudioError(f"The job's model archive {uri} cannot be unpacked: {exc}") from None
        if not (folder / "model_index.json").is_file():
            raise StudioError(f"The job's model archive {uri} holds no diffusers model (no model_index.json).")
        log(f"Downloaded the model from {uri}; logging it to run {run_id}.")
        log_artifacts(run_id, folder, "model")


def fetch_run(ctx: Context, inputs: dict[str, Any]) -> dict[str, Any]:
    from core.tracking import model_folder
    from core.tracking.artifacts import has_model
    from jobs import control

    run_id, source = inputs["run_id"], "mlflow"
    if not has_model(run_id) and (archive := control.model_archive(inputs["job_id"])):
        source = archive
        model_from_s3(archive, run_id, ctx.log)
    return {"model_dir": str(model_folder(run_id)), "source": source}


# ---- export: ONNX with the parity check, registered as a new model version ----------------------
def export_inputs(ctx: Context) -> dict[str, Any]:
    return {"run_id": ctx.done["select"]["run_id"], "model": ctx.config.registered_model, "fp16": ctx.config.export.fp16}


def export_run(ctx: Context, inputs: dict[str, Any]) -> dict[str, Any]:
    import torch

    from core.export.exporter import export_model

    torch.set_num_threads(get_settings().torch_threads)
    shown = -1

    def progress(fraction: float, text: str) -> None:
        nonlocal shown
        if int(fraction * 10) > shown:  # a line per tenth is plenty in a log
            shown = int(fraction * 10)
            ctx.log(f"{fraction:4.0%} {text}")

    record = export_model(inputs["run_id"], fp16=inputs["fp16"], name=inputs["model"], progress=progress)
    return {
        "export_id": record.id,
        "path": record.path,
        "registered_model": record.registered_model,
        "registered_version": record.registered_version,
        "psnr_db": min(record.parity["psnr_db"]),
    }


# ---- register: point the alias at the new version -------------------------------------------------
def register_inputs(ctx: Context) -> dict[str, Any]:
    export = ctx.done["export"]
    return {"model": export["registered_model"], "version": export["registered_version"], "alias": ctx.config.export.alias}


def register_run(ctx: Context, inputs: dict[str, Any]) -> dict[str, Any]:
    from core.tracking.registry import set_alias

    set_alias(inputs["model"], inputs["alias"], inputs["version"])
    uri = f"models:/{inputs['model']}@{inputs['alias']}"
    ctx.log(f"Registered {uri} -> version {inputs['version']}.")
    return {**inputs, "uri": uri}


STEP_FUNCTIONS: dict[str, Step] = {
    "dataset": Step(dataset_inputs, dataset_run),
    "train": Step(train_inputs, train_run),
    "wait": Step(wait_inputs, wait_run),
    "select": Step(select_inputs, select_run),
    "fetch": Step(fetch_inputs, fetch_run),
    "export": Step(export_inputs, export_run),
    "register": Step(register_inputs, register_run),
}
