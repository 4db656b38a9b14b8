"""The local backend: training runs as a detached child process, watched by a small supervisor.

`submit` records the job (and creates its MLflow run) and queues it; `schedule` starts queued jobs
up to `STUDIO_MAX_LOCAL_JOBS`. Each job gets a supervisor process (`python -m jobs.supervise ID`)
in its own session, so it outlives the Streamlit session and the studio itself; the supervisor
records the exit code and final state, whatever way the training process ends (kill -9 included).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import yaml
from sqlalchemy import func, select

from core.db import Job, new_id, session_scope
from core.errors import StudioError
from core.settings import get_settings
from core.tracking import create_run
from core.training.config import TrainConfig
from jobs.records import ACTIVE, get_job, update_job

RUNNING = ("starting", "running", "stopping")


def job_dir(job_id: str) -> Path:
    return get_settings().jobs_dir / job_id


def submit(config: TrainConfig, name: str | None = None, processes: int = 1) -> Job:
    """Record a training job and its MLflow run, queue it, and start it if a slot is free."""
    job_id = new_id()
    folder = job_dir(job_id)
    tags = {"job_id": job_id, "backend": "local", "preset": config.preset, "stage": config.stage}
    if config.dataset:
        tags["dataset"] = config.dataset
    run_id = create_run(name or f"{config.preset}-{job_id}", tags)
    config = config.model_copy(update={"output_dir": folder / "output", "mlflow_run_id": run_id, "run_name": name})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    with session_scope() as session:
        last = session.scalar(select(func.max(Job.queue_position))) or 0
        job = Job(
            id=job_id,
            kind="train",
            backend="local",
            status="queued",
            config={**config.model_dump(mode="json"), "processes": processes},
            dataset=config.dataset,
            mlflow_run_id=run_id,
            log_path=str(folder / "train.log"),
            queue_position=last + 1,
        )
        session.add(job)
    schedule()
    return get_job(job_id)


def schedule() -> list[str]:
    """Start queued local jobs, in queue order, while fewer than the configured number run."""
    refresh()
    started = []
    with session_scope() as session:
        running = session.scalar(select(func.count()).select_from(Job).where(Job.backend == "local", Job.status.in_(RUNNING)))
        queued = list(session.scalars(select(Job.id).where(Job.backend == "local", Job.status == "queued").order_by(Job.queue_position)))
    for job_id in queued[: max(0, get_settings().max_local_jobs - (running or 0))]:
        _launch(job_id)
        started.append(job_id)
    return started


def _launch(job_id: str) -> None:
    job = update_job(job_id, status="starting", attempts=get_job(job_id).attempts + 1, failure_reason=None, exit_code=None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs.supervise", job_id],
        cwd=Path(__file__).resolve().parent.parent,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, "STUDIO_HOME": str(get_settings().home.resolve())},
    )
    update_job(job.id, pid=proc.pid)


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped by its parent) is not alive
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return True


def refresh() -> None:
    """Mark jobs whose supervisor vanished (machine reboot, kill -9 of the supervisor) as failed."""
    with session_scope() as session:
        jobs = list(session.scalars(select(Job).where(Job.backend == "local", Job.status.in_(RUNNING))))
    for job in jobs:
        if not pid_alive(job.pid):
            update_job(job.id, status="failed", failure_reason="The job's supervisor process ended unexpectedly.")


def stop(job_id: str) -> Job:
    """Cancel a queued job, or ask a running one to checkpoint and stop (SIGTERM)."""
    job = get_job(job_id)
    if job.status == "queued":
        return update_job(job_id, status="stopped", failure_reason="Cancelled before it started.")
    if job.status not in RUNNING:
        raise StudioError(f"The job {job_id} is {job.status}; only queued or running jobs can be stopped.")
    update_job(job_id, status="stopping")
    if pid_alive(job.pid):
        os.kill(job.pid, signal.SIGTERM)
    return get_job(job_id)


def resume(job_id: str) -> Job:
    """Queue a stopped or failed job again; it continues from its latest checkpoint, same MLflow run."""
    job = get_job(job_id)
    if job.status in ACTIVE:
        raise StudioError(f"The job {job_id} is {job.status}; only stopped or failed jobs can be resumed.")
    update_job(job_id, status="queued")
    schedule()
    return get_job(job_id)


def log_tail(job_id: str, lines: int = 50) -> str:
    path = get_job(job_id).log_path
    if not path or not Path(path).is_file():
        return ""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 200 * lines))
        return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-lines:])
