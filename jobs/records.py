"""Job rows in the catalog, the transitions between their states, the queue order, and each job's
folder (its log and outputs) and MLflow run status."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update

from core.access import current_user
from core.db import Job, session_scope, utcnow
from core.errors import StudioError
from core.settings import get_settings
from jobs import notify

STATUSES = ("queued", "starting", "running", "stopping", "stopped", "succeeded", "failed")
ACTIVE = ("queued", "starting", "running", "stopping")
RUNNING = ("starting", "running", "stopping")
FINAL = ("stopped", "succeeded", "failed")

# Keys a job's config holds beside the TrainConfig: how it was launched.
LAUNCH_KEYS = frozenset({"processes", "sagemaker"})


def job_dir(job_id: str) -> Path:
    return get_settings().jobs_dir / job_id


def create_job(
    job_id: str, kind: str, backend: str, config: dict[str, Any], log_name: str, *,
    status: str = "queued", dataset: str | None = None, mlflow_run_id: str | None = None, region: str | None = None,
    pid: int | None = None, pid_started: int | None = None,
) -> Job:  # fmt: skip
    """The one place a job row is made, with its folder: a queued job goes to the end of the
    queue; one that starts at once counts its first attempt."""
    folder = job_dir(job_id)
    folder.mkdir(parents=True, exist_ok=True)
    queued = status == "queued"
    with session_scope() as session:
        session.add(
            Job(
                id=job_id, kind=kind, backend=backend, status=status, config=config, dataset=dataset, mlflow_run_id=mlflow_run_id,
                region=region, log_path=str(folder / log_name), queue_position=next_queue_position() if queued else 0, attempts=0 if queued else 1,
                pid=pid, pid_started=pid_started, owner=current_user().name,
            )
        )
    return get_job(job_id)


def get_job(job_id: str) -> Job:
    with session_scope() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise StudioError(f"The job {job_id!r} does not exist.")
        return job


def job_for_run(run_id: str) -> Job | None:
    """The training job that made MLflow run `run_id`, if this studio launched it."""
    with session_scope() as session:
        return session.scalar(select(Job).where(Job.mlflow_run_id == run_id, Job.kind == "train").limit(1))


def list_jobs(limit: int | None = 100, statuses: tuple[str, ...] | None = None, backend: str | None = None) -> list[Job]:
    with session_scope() as session:
        query = select(Job).order_by(Job.created_at.desc()).limit(limit)
        if statuses:
            query = query.where(Job.status.in_(statuses))
        if backend:
            query = query.where(Job.backend == backend)
        return list(session.scalars(query))


def queue(backend: str = "local") -> list[Job]:
    """Queued jobs in the order they will start."""
    with session_scope() as session:
        query = select(Job).where(Job.backend == backend, Job.status == "queued").order_by(Job.queue_position, Job.created_at)
        return list(session.scalars(query))


def next_queue_position() -> int:
    with session_scope() as session:
        return (session.scalar(select(func.max(Job.queue_position))) or 0) + 1


def update_job(job_id: str, **fields: Any) -> Job:
    with session_scope() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise StudioError(f"The job {job_id!r} does not exist.")
        if fields.get("status") in RUNNING and job.started_at is None:
            job.started_at = utcnow()
        ends = fields.get("status") in FINAL and job.status not in FINAL
        if fields.get("status") in FINAL:
            job.finished_at = utcnow()
        for key, value in fields.items():
            setattr(job, key, value)
    if ends:
        notify.job_ended(job)
    return job


def transition(job_id: str, expected: tuple[str, ...], **fields: Any) -> bool:
    """Set `fields` only if the job is still in one of the `expected` states (one atomic UPDATE).

    Two processes may act on the same job at once (the studio and a supervisor both scheduling,
    a stop racing a start); the one whose UPDATE matches wins and the other sees False.
    """
    if fields.get("status") in RUNNING:
        fields.setdefault("started_at", func.coalesce(Job.started_at, utcnow()))
    if fields.get("status") in FINAL:
        fields["finished_at"] = utcnow()
    with session_scope() as session:
        result = session.execute(update(Job).where(Job.id == job_id, Job.status.in_(expected)).values(**fields))
        moved = result.rowcount == 1
    if moved and fields.get("status") in FINAL and not set(expected) <= set(FINAL):
        notify.job_ended(get_job(job_id))
    return moved


def move(job_id: str, offset: int) -> list[Job]:
    """Move a queued job `offset` places (negative: earlier) and return the new queue order."""
    job = get_job(job_id)
    if job.status != "queued":
        raise StudioError(f"The job {job_id} is {job.status}; only queued jobs can be reordered.")
    order = [j.id for j in queue(job.backend)]
    index = order.index(job_id)
    order.insert(max(0, min(len(order) - 1, index + offset)), order.pop(index))
    with session_scope() as session:
        for position, other in enumerate(order, start=1):
            session.execute(update(Job).where(Job.id == other).values(queue_position=position))
    return queue(job.backend)


def cancel(job_id: str) -> Job:
    """Take a queued job off the queue; it never started, so it has nothing to resume."""
    if not transition(job_id, ("queued",), status="stopped", failure_reason="Cancelled before it started."):
        job = get_job(job_id)
        raise StudioError(f"The job {job_id} is {job.status}; only queued jobs can be cancelled (stop a running one).")
    return get_job(job_id)


def log_tail(job: Job, lines: int = 50) -> str:
    """The newest lines of the job's log file on this machine (read from the end: logs grow long)."""
    if not job.log_path or not Path(job.log_path).is_file():
        return ""
    with open(job.log_path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 300 * lines))
        return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-lines:])


def set_run_status(run_id: str | None, status: str) -> None:
    """Mirror the job's state on its MLflow run (RUNNING, FINISHED, KILLED or FAILED)."""
    if not run_id:
        return
    from core.tracking.writes import set_status

    set_status(run_id, status)
