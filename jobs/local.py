"""The local training backend: training runs as a detached child process, watched by a small supervisor.

`submit` records the job (and creates its MLflow run) and queues it; `schedule` starts queued jobs
in queue order up to `STUDIO_MAX_LOCAL_JOBS`. Each job gets a supervisor process
(`python -m jobs.supervise ID`, see `jobs.processes`), so it outlives the Streamlit session and the
studio itself; the supervisor records the exit code and final state, whatever way the training
process ends (kill -9 included). Everything the studio shows comes from the catalog row and the
job's folder, so a restarted studio simply reads them again ("re-attaches").
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator

import yaml
from sqlalchemy import func, select, update

from core.db import Job, new_id, session_scope, utcnow
from core.errors import StudioError
from core.files import atomic_write_text
from core.settings import get_settings
from core.tracking import create_run
from core.tracking.outbox import Outbox
from jobs import notify
from jobs.backend import TrainRequest
from jobs.processes import settle_vanished, start_job_process, terminate
from jobs.relay import metrics_file
from jobs.records import (
    FINAL,
    RUNNING,
    cancel,
    create_job,
    get_job,
    job_dir,
    list_jobs,
    log_tail,
    next_queue_position,
    set_run_status,
    transition,
)

BACKEND = "local"
LAUNCHER_DIED = "The studio process starting the job ended before the job's supervisor started; resume it to try again."


@contextlib.contextmanager
def _scheduler_lock() -> Iterator[None]:
    """One scheduler at a time across processes (the studio, the CLI and every supervisor)."""
    path = get_settings().jobs_dir / ".schedule.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def submit(request: TrainRequest) -> Job:
    """Record a training job and its MLflow run, queue it, and start it if a slot is free."""
    if request.processes < 1:
        raise StudioError("A job needs at least one process.")
    config, job_id = request.config, new_id()
    folder = job_dir(job_id)
    tags = {"job_id": job_id, "backend": BACKEND, "preset": config.preset, "stage": config.stage}
    if config.dataset:
        tags["dataset"] = config.dataset
    run_id = create_run(request.name or f"{config.preset}-{job_id}", tags)
    config = config.model_copy(update={"output_dir": folder / "output", "mlflow_run_id": run_id, "run_name": request.name})
    atomic_write_text(folder / "config.yaml", yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    create_job(
        job_id, "train", BACKEND, {**config.model_dump(mode="json"), "processes": request.processes}, "train.log",
        dataset=config.dataset, mlflow_run_id=run_id,
    )  # fmt: skip
    schedule()
    return get_job(job_id)


def schedule() -> list[str]:
    """Start queued local jobs, in queue order, while fewer than the configured number run."""
    started = []
    with _scheduler_lock():
        _settle()
        with session_scope() as session:
            running = session.scalar(select(func.count()).select_from(Job).where(Job.backend == BACKEND, Job.status.in_(RUNNING))) or 0
            queued = list(session.scalars(select(Job.id).where(Job.backend == BACKEND, Job.status == "queued").order_by(Job.queue_position, Job.created_at)))
        for job_id in queued[: max(0, get_settings().max_local_jobs - running)]:
            if transition(job_id, ("queued",), status="starting", attempts=Job.attempts + 1, failure_reason=None, exit_code=None, pid=None):
                start_job_process(job_id, "jobs.supervise")
                started.append(job_id)
    return started


def _settle() -> None:
    """Under the scheduler lock: end the rows whose launcher or supervisor is gone."""
    for job, status in [*_settle_unlaunched(), *settle_vanished(BACKEND, "The job's supervisor process ended unexpectedly.")]:
        set_run_status(job.mlflow_run_id, "KILLED" if status == "stopped" else "FAILED")


def _settle_unlaunched() -> list[tuple[Job, str]]:
    """End the rows a launcher left between "starting" and recording their supervisor: it was killed
    in between (kill -9 of the studio), else the row would hold a slot, "starting" for ever.

    A launcher holds the scheduler lock across that gap, and this runs under it, so a row without a
    pid here has no launcher left. A supervisor it did spawn records itself on the row in one UPDATE
    from the same state (jobs.supervise); this one only ends a row still without a pid, so exactly one
    of the two wins, and a supervisor that loses exits before starting any training."""
    settled = []
    for job in list_jobs(limit=None, statuses=("starting", "stopping"), backend=BACKEND):
        if job.pid is not None:
            continue
        status, reason = ("stopped", "Stopped by the user.") if job.status == "stopping" else ("failed", LAUNCHER_DIED)
        with session_scope() as session:
            unclaimed = update(Job).where(Job.id == job.id, Job.status == job.status, Job.pid.is_(None))
            if session.execute(unclaimed.values(status=status, failure_reason=reason, finished_at=utcnow())).rowcount == 1:
                settled.append((job, status))
    for job, _ in settled:
        notify.job_ended(get_job(job.id))
    return settled


def refresh() -> None:
    """Mark jobs whose supervisor (or launcher) vanished (machine reboot, kill -9) as failed and give
    the slots they held to the queue, and retry sending MLflow what finished jobs could not (see
    `retry_leftovers`)."""
    schedule()  # settles first; a slot freed by a vanished supervisor must not wait for the next launch
    retry_leftovers()


def retry_leftovers() -> None:
    """Deliver the outboxes finished jobs left because MLflow was down, each at most once per its
    backoff window (on disk, see core.tracking.outbox); one failure ends this round: the server is down."""
    with session_scope() as session:
        finished = select(Job).where(Job.backend == BACKEND, Job.status.in_(FINAL), Job.mlflow_run_id.is_not(None))
        jobs = list(session.scalars(finished))
    for job in jobs:
        outbox = Outbox(metrics_file(job))
        if outbox.folder.is_dir() and outbox.retry(job.mlflow_run_id) is False:
            break


def stop(job: Job) -> Job:
    """Ask a running job to checkpoint and stop (SIGTERM to its supervisor); a queued one is cancelled instead."""
    if job.status == "queued":
        return cancel(job.id)
    if job.status not in RUNNING:
        raise StudioError(f"The job {job.id} is {job.status}; only queued or running jobs can be stopped.")
    transition(job.id, ("starting", "running"), status="stopping")
    terminate(job)
    return get_job(job.id)


def resume(job: Job) -> Job:
    """Queue a stopped or failed job again; it continues from its latest checkpoint, same MLflow run."""
    if not transition(job.id, ("stopped", "failed"), status="queued", queue_position=next_queue_position(), failure_reason=None, finished_at=None):
        raise StudioError(f"The job {job.id} is {get_job(job.id).status}; only stopped or failed jobs can be resumed.")
    schedule()
    return get_job(job.id)


def logs(job: Job, lines: int = 50) -> str:
    return log_tail(job, lines)


def model_archive(job: Job) -> None:
    """None: the training logs its model to the MLflow run itself."""
