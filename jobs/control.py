"""What the pages and the CLI call: one verb per action, whichever backend runs the job.

Each verb looks the job's backend up by name (the row's `backend`) and calls it; see `jobs.backend`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core import audit
from core.access import NotAllowed, User, require, require_own, server_path
from core.db import Job
from core.errors import StudioError
from core.settings import get_settings
from core.evaluation.request import EvalRequest
from core.tracking.writes import record_estimate
from core.training.config import TrainConfig
from jobs import evaluate, local, records
from jobs import sagemaker as cloud
from jobs.backend import Backend, TrainRequest
from jobs.estimate import LaunchEstimate

BACKENDS: dict[str, Backend[Any]] = {local.BACKEND: local, cloud.BACKEND: cloud, evaluate.BACKEND: evaluate}
TRAINING_BACKENDS = (local.BACKEND, cloud.BACKEND)


def backend_of(job: Job) -> Backend[Any]:
    return BACKENDS[job.backend]


# SageMaker options that spend the team's account in ways only an admin decides.
ADMIN_SAGEMAKER_OPTIONS = ("role", "image_uri", "subnets", "security_group_ids")


def check_launch(user: User, backend: str, sagemaker: dict) -> None:
    """Team mode's launch limits of the user's role: instances and hours per job, jobs at once."""
    if not get_settings().team_mode:
        return
    if user.role != "admin" and (chosen := [key for key in ADMIN_SAGEMAKER_OPTIONS if sagemaker.get(key)]):
        raise NotAllowed(f"Only an admin can choose SageMaker's {', '.join(chosen)}; leave them to the studio's settings.")
    limit = get_settings().launch_limits.get(user.role)
    if limit is None:
        return
    if backend == cloud.BACKEND:
        options = cloud.SageMakerLaunch.model_validate(sagemaker)
        if options.instance_count > limit.instances:
            raise NotAllowed(f"The {user.role} role may launch at most {limit.instances} instances per job; this asks for {options.instance_count}.")
        if options.max_run_hours > limit.hours:
            raise NotAllowed(f"The {user.role} role may run a job for at most {limit.hours:g} hours; this asks for {options.max_run_hours:g}.")
    running = [job for job in records.list_jobs(limit=None, statuses=records.ACTIVE) if job.owner == user.name]
    if len(running) >= limit.jobs:
        raise NotAllowed(f"The {user.role} role may have {limit.jobs} jobs queued or running at once; stop or wait for one first.")


def launch(config: TrainConfig, backend: str = local.BACKEND, name: str | None = None, processes: int = 1, sagemaker: dict | None = None,
           estimate: LaunchEstimate | None = None) -> Job:
    """Submit a training job; `sagemaker` holds the cloud options (see `jobs.sagemaker.SageMakerLaunch`).
    With its `estimate` (`jobs.estimate`), a run that would not fit is refused and one that does records it."""
    if backend not in TRAINING_BACKENDS:
        raise StudioError(f"There is no training backend {backend!r}; choose one of {', '.join(TRAINING_BACKENDS)}.")
    check_launch(require("launch"), backend, sagemaker or {})
    if config.base_model is not None:
        server_path(config.base_model)
    if estimate is not None and estimate.refusal:
        raise StudioError(estimate.refusal)
    job = BACKENDS[backend].submit(TrainRequest(config=config, name=name, processes=processes, sagemaker=sagemaker or {}))
    if estimate is not None and job.mlflow_run_id:
        record_estimate(job.mlflow_run_id, estimate.tags())
    audit.record("job.launch", job.id, backend=backend, name=name, dataset=job.dataset)
    return job


def evaluate_run(request: EvalRequest) -> Job:
    """Start an evaluation of a run's model (it logs its results to that run)."""
    check_launch(require("launch"), evaluate.BACKEND, {})
    job = BACKENDS[evaluate.BACKEND].submit(request)
    audit.record("job.evaluate", job.id, run=job.mlflow_run_id)
    return job


def refresh() -> None:
    """Bring every active job's row up to date: vanished local processes, SageMaker status and metrics."""
    for backend in BACKENDS.values():
        backend.refresh()


def poll(job_id: str) -> Job:
    """The job's row after its backend brought its active rows up to date (for a loop that waits on it)."""
    job = records.get_job(job_id)
    backend_of(job).refresh()
    return records.get_job(job_id)


def _own_job(job_id: str) -> Job:
    """The job, if the acting user may stop, resume or move it (theirs, or any for an admin)."""
    job = records.get_job(job_id)
    require_own("stop", job.owner)
    return job


def stop(job_id: str) -> Job:
    job = _own_job(job_id)
    stopped = backend_of(job).stop(job)
    audit.record("job.stop", job_id)
    return stopped


def resume(job_id: str) -> Job:
    job = _own_job(job_id)
    resumed = backend_of(job).resume(job)
    audit.record("job.resume", job_id)
    return resumed


def checkpoints_of(run_id: str) -> Path | None:
    """The checkpoint folder of the job that made `run_id`, where this machine can read it (a
    SageMaker job's config names the container's folder, which is not here)."""
    job = records.job_for_run(run_id)
    if job is None:
        return None
    folder = TrainConfig.model_validate({k: v for k, v in job.config.items() if k not in records.LAUNCH_KEYS}).checkpoints
    return folder if folder.is_dir() else None


def logs(job_id: str, lines: int = 50) -> str:
    job = records.get_job(job_id)
    return backend_of(job).logs(job, lines)


def model_archive(job_id: str) -> str | None:
    job = records.get_job(job_id)
    return backend_of(job).model_archive(job)


def cancel(job_id: str) -> Job:
    _own_job(job_id)
    cancelled = records.cancel(job_id)
    audit.record("job.cancel", job_id)
    return cancelled


def move(job_id: str, offset: int) -> list[Job]:
    _own_job(job_id)
    return records.move(job_id, offset)
