"""Job rows in the catalog and the transitions between their states."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from core.db import Job, session_scope, utcnow
from core.errors import StudioError

ACTIVE = ("queued", "starting", "running", "stopping")
FINAL = ("stopped", "succeeded", "failed")


def get_job(job_id: str) -> Job:
    with session_scope() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise StudioError(f"The job {job_id!r} does not exist.")
        return job


def list_jobs(limit: int = 100, statuses: tuple[str, ...] | None = None) -> list[Job]:
    with session_scope() as session:
        query = select(Job).order_by(Job.created_at.desc()).limit(limit)
        if statuses:
            query = query.where(Job.status.in_(statuses))
        return list(session.scalars(query))


def update_job(job_id: str, **fields: Any) -> Job:
    with session_scope() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise StudioError(f"The job {job_id!r} does not exist.")
        if fields.get("status") in ("running", "starting") and job.started_at is None:
            job.started_at = utcnow()
        if fields.get("status") in FINAL:
            job.finished_at = utcnow()
        for key, value in fields.items():
            setattr(job, key, value)
        return job
