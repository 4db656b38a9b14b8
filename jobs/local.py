"""The local backend: training runs as a detached child process, watched by a small supervisor.

`submit` records the job (and creates its MLflow run) and queues it; `schedule` starts queued jobs
in queue order up to `STUDIO_MAX_LOCAL_JOBS`. Each job gets a supervisor process
(`python -m jobs.supervise ID`) in its own session, so it outlives the Streamlit session and the
studio itself; the supervisor records the exit code and final state, whatever way the training
process ends (kill -9 included). Everything the studio shows comes from the catalog row and the
job's folder, so a restarted studio simply reads them again ("re-attaches").
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import yaml
from sqlalchemy import func, select

from core.db import Job, new_id, session_scope
from core.errors import StudioError
from core.settings import get_settings
from core.tracking import create_run
from core.training.config import TrainConfig
from jobs.records import RUNNING, get_job, next_queue_position, transition, update_job

REPO = Path(__file__).resolve().parent.parent


def job_dir(job_id: str) -> Path:
    return get_settings().jobs_dir / job_id


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


def submit(config: TrainConfig, name: str | None = None, processes: int = 1) -> Job:
    """Record a training job and its MLflow run, queue it, and start it if a slot is free."""
    if processes < 1:
        raise StudioError("A job needs at least one process.")
    job_id = new_id()
    folder = job_dir(job_id)
    tags = {"job_id": job_id, "backend": "local", "preset": config.preset, "stage": config.stage}
    if config.dataset:
        tags["dataset"] = config.dataset
    run_id = create_run(name or f"{config.preset}-{job_id}", tags)
    config = config.model_copy(update={"output_dir": folder / "output", "mlflow_run_id": run_id, "run_name": name})
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / ".config.yaml.tmp"
    tmp.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    tmp.replace(folder / "config.yaml")
    with session_scope() as session:
        session.add(
            Job(
                id=job_id,
                kind="train",
                backend="local",
                status="queued",
                config={**config.model_dump(mode="json"), "processes": processes},
                dataset=config.dataset,
                mlflow_run_id=run_id,
                log_path=str(folder / "train.log"),
                queue_position=next_queue_position(),
            )
        )
    schedule()
    return get_job(job_id)


def schedule() -> list[str]:
    """Start queued local jobs, in queue order, while fewer than the configured number run."""
    started = []
    with _scheduler_lock():
        _refresh()
        with session_scope() as session:
            running = session.scalar(select(func.count()).select_from(Job).where(Job.backend == "local", Job.status.in_(RUNNING))) or 0
            queued = list(session.scalars(select(Job.id).where(Job.backend == "local", Job.status == "queued").order_by(Job.queue_position, Job.created_at)))
        for job_id in queued[: max(0, get_settings().max_local_jobs - running)]:
            if transition(job_id, ("queued",), status="starting", attempts=Job.attempts + 1, failure_reason=None, exit_code=None):
                _launch(job_id)
                started.append(job_id)
    return started


def _launch(job_id: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs.supervise", job_id],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, "STUDIO_HOME": str(get_settings().home.resolve())},
    )
    update_job(job_id, pid=proc.pid)


def supervisor_alive(pid: int | None) -> bool:
    """Whether `pid` is a live `jobs.supervise` process (not a zombie, not a reused pid after a reboot)."""
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.split(") ", 1)[1][:1] != "Z" and b"jobs.supervise" in cmdline


def _refresh() -> None:
    with session_scope() as session:
        jobs = list(session.scalars(select(Job).where(Job.backend == "local", Job.status.in_(RUNNING))))
    for job in jobs:
        if supervisor_alive(job.pid):
            continue
        if transition(job.id, ("stopping",), status="stopped", failure_reason="Stopped before the training process started."):
            set_run_status(job.mlflow_run_id, "KILLED")
        elif transition(job.id, RUNNING, status="failed", failure_reason="The job's supervisor process ended unexpectedly."):
            set_run_status(job.mlflow_run_id, "FAILED")


def set_run_status(run_id: str | None, status: str) -> None:
    """Mirror the job's state on its MLflow run (RUNNING, FINISHED, KILLED or FAILED)."""
    if not run_id:
        return
    from core.tracking import get_tracking

    client = get_tracking().client
    if status == "RUNNING":
        client.update_run(run_id, status="RUNNING")
    else:
        client.set_terminated(run_id, status=status)


def refresh() -> None:
    """Mark jobs whose supervisor vanished (machine reboot, kill -9 of the supervisor) as failed."""
    with _scheduler_lock():
        _refresh()


def stop(job_id: str) -> Job:
    """Ask a running job to checkpoint and stop (SIGTERM); a queued one is cancelled instead."""
    from jobs.records import cancel

    job = get_job(job_id)
    if job.status == "queued":
        return cancel(job_id)
    if job.status not in RUNNING:
        raise StudioError(f"The job {job_id} is {job.status}; only queued or running jobs can be stopped.")
    transition(job_id, ("starting", "running"), status="stopping")
    if supervisor_alive(job.pid):
        os.kill(job.pid, signal.SIGTERM)
    return get_job(job_id)


def resume(job_id: str) -> Job:
    """Queue a stopped or failed job again; it continues from its latest checkpoint, same MLflow run."""
    if not transition(job_id, ("stopped", "failed"), status="queued", queue_position=next_queue_position(), failure_reason=None, finished_at=None):
        job = get_job(job_id)
        raise StudioError(f"The job {job_id} is {job.status}; only stopped or failed jobs can be resumed.")
    schedule()
    return get_job(job_id)


def log_tail(job_id: str, lines: int = 50) -> str:
    path = get_job(job_id).log_path
    if not path or not Path(path).is_file():
        return ""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 300 * lines))
        return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-lines:])
