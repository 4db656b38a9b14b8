"""What the Train page and the CLI call: one verb per action, whichever backend runs the job."""

from __future__ import annotations

from core.db import Job
from core.training.config import TrainConfig
from jobs import local, records
from jobs.records import get_job

BACKENDS = ("local", "sagemaker")


def launch(config: TrainConfig, backend: str = "local", name: str | None = None, processes: int = 1, sagemaker: dict | None = None) -> Job:
    """Submit a training job; `sagemaker` holds the cloud options (see `jobs.sagemaker.SageMakerLaunch`)."""
    if backend == "sagemaker":
        from jobs.sagemaker import SageMakerLaunch, submit

        return submit(config, SageMakerLaunch.model_validate(sagemaker or {}), name=name)
    return local.submit(config, name=name, processes=processes)


def refresh() -> None:
    """Bring every active job's row up to date: dead local supervisors, SageMaker status and metrics."""
    local.refresh()
    active = records.list_jobs(statuses=records.RUNNING, backend="sagemaker")
    if active:
        from jobs.relay import relay_metrics
        from jobs.sagemaker import sync

        for job in active:
            sync(job.id)
            relay_metrics(job.id)


def stop(job_id: str) -> Job:
    if get_job(job_id).backend == "sagemaker":
        from jobs.sagemaker import stop as stop_sagemaker

        return stop_sagemaker(job_id)
    return local.stop(job_id)


def resume(job_id: str) -> Job:
    if get_job(job_id).backend == "sagemaker":
        from jobs.sagemaker import resume as resume_sagemaker

        return resume_sagemaker(job_id)
    return local.resume(job_id)


def cancel(job_id: str) -> Job:
    return records.cancel(job_id)


def move(job_id: str, offset: int) -> list[Job]:
    return records.move(job_id, offset)


def logs(job_id: str, lines: int = 50) -> str:
    if get_job(job_id).backend == "sagemaker":
        from jobs.sagemaker import log_tail

        return log_tail(job_id, lines)
    return local.log_tail(job_id, lines)
