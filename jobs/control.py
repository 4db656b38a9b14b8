"""What the pages and the CLI call: one verb per action, whichever backend runs the job.

Each verb looks the job's backend up by name (the row's `backend`) and calls it; see `jobs.backend`.
"""

from __future__ import annotations

from typing import Any

from core.db import Job
from core.errors import StudioError
from core.evaluation.request import EvalRequest
from core.training.config import TrainConfig
from jobs import evaluate, local, records
from jobs import sagemaker as cloud
from jobs.backend import Backend, TrainRequest

BACKENDS: dict[str, Backend[Any]] = {local.BACKEND: local, cloud.BACKEND: cloud, evaluate.BACKEND: evaluate}
TRAINING_BACKENDS = (local.BACKEND, cloud.BACKEND)


def backend_of(job: Job) -> Backend[Any]:
    return BACKENDS[job.backend]


def launch(config: TrainConfig, backend: str = local.BACKEND, name: str | None = None, processes: int = 1, sagemaker: dict | None = None) -> Job:
    """Submit a training job; `sagemaker` holds the cloud options (see `jobs.sagemaker.SageMakerLaunch`)."""
    if backend not in TRAINING_BACKENDS:
        raise StudioError(f"There is no training backend {backend!r}; choose one of {', '.join(TRAINING_BACKENDS)}.")
    return BACKENDS[backend].submit(TrainRequest(config=config, name=name, processes=processes, sagemaker=sagemaker or {}))


def evaluate_run(request: EvalRequest) -> Job:
    """Start an evaluation of a run's model (it logs its results to that run)."""
    return BACKENDS[evaluate.BACKEND].submit(request)


def refresh() -> None:
    """Bring every active job's row up to date: vanished local processes, SageMaker status and metrics."""
    for backend in BACKENDS.values():
        backend.refresh()


def poll(job_id: str) -> Job:
    """The job's row after its backend brought its active rows up to date (for a loop that waits on it)."""
    job = records.get_job(job_id)
    backend_of(job).refresh()
    return records.get_job(job_id)


def stop(job_id: str) -> Job:
    job = records.get_job(job_id)
    return backend_of(job).stop(job)


def resume(job_id: str) -> Job:
    job = records.get_job(job_id)
    return backend_of(job).resume(job)


def logs(job_id: str, lines: int = 50) -> str:
    job = records.get_job(job_id)
    return backend_of(job).logs(job, lines)


def model_archive(job_id: str) -> str | None:
    job = records.get_job(job_id)
    return backend_of(job).model_archive(job)


def cancel(job_id: str) -> Job:
    return records.cancel(job_id)


def move(job_id: str, offset: int) -> list[Job]:
    return records.move(job_id, offset)
