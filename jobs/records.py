"""Job rows in the catalog, the transitions between their states, and the queue order."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update

from core.db import Job, session_scope, utcnow
from core.errors import StudioError

STATUSES = ("queued", "starting", "running", "stopping", "stopped", "succeeded", "failed")
ACTIVE = ("queued", "starting", "running", "stopping")
RUNNING = ("starting", "running", "stopping")
FINAL = ("stopped", "succeeded", "failed")


def get_job(job_id: str) -> Job:
    with session_scope() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise StudioError(f"The job {job_id!r} does not exist.")
        return job


def list_jobs(limit: int = 100, statuses: tuple[str, ...] | None = None, backend: str | None = None) -> list[Job]:
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
        if fields.get("status") in FINAL:
            job.finished_at = utcnow()
        for key, value in fields.items():
            setattr(job, key, value)
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
        return result.rowcount == 1


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
