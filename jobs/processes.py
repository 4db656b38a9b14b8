"""Detached processes: start one that outlives the studio, and tell whether *that* process still runs.

Training supervisors, evaluations and pipelines run as `python -m MODULE ID` in a session of their
own, so they survive the Streamlit session and the studio itself. A pid alone names a process only
until it ends: then (or after a reboot) the kernel hands the number to another. So a process is
recorded as its pid plus its start time (clock ticks after boot, field 22 of /proc/<pid>/stat), and
a job's check also wants the job's id in the command line: neither a zombie, nor a stranger with a
reused pid, nor another job's supervisor passes for it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from core.db import Job
from core.errors import StudioError
from core.settings import get_settings
from jobs.records import RUNNING, list_jobs, transition, update_job

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class ProcessId:
    pid: int
    started: int | None  # None on rows written before start times were recorded: pid and marker must do


def _stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time) of a process; None if there is none. The name may hold ") "."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[19])


def current() -> ProcessId:
    stat = _stat(os.getpid())
    return ProcessId(os.getpid(), stat[1] if stat else None)


def alive(process: ProcessId | None, marker: str | None = None) -> bool:
    """Whether the recorded process still runs (not a zombie) and, given a marker, has it as an argument."""
    stat = _stat(process.pid) if process else None
    if process is None or stat is None or stat[0] in ("Z", "X"):
        return False
    if process.started is not None and stat[1] != process.started:
        return False
    try:
        return marker is None or marker.encode() in Path(f"/proc/{process.pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False


def spawn(argv: list[str], log: Path | None = None) -> ProcessId:
    """Start `argv` from the repository in a session of its own, its output appended to `log` (or dropped)."""
    with open(log, "ab") if log else open(os.devnull, "wb") as out:
        child = subprocess.Popen(
            argv,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "STUDIO_HOME": str(get_settings().home.resolve())},
        )
    stat = _stat(child.pid)  # unreaped while `child` lives, so readable even if it exited already
    return ProcessId(child.pid, stat[1] if stat else None)


def job_process(job: Job) -> ProcessId | None:
    return ProcessId(job.pid, job.pid_started) if job.pid else None


def start_job_process(job_id: str, module: str) -> None:
    """Run `python -m MODULE JOB_ID` detached and record the process on the job's row."""
    try:
        process = spawn([sys.executable, "-m", module, job_id])
    except OSError as exc:  # else the row would wait for a process that never came
        update_job(job_id, status="failed", failure_reason=f"The job's process could not start: {exc}")
        raise StudioError(f"The job {job_id} could not start a process: {exc}") from None
    update_job(job_id, pid=process.pid, pid_started=process.started)


def job_alive(job: Job) -> bool:
    return alive(job_process(job), marker=job.id)


def terminate(job: Job) -> None:
    """SIGTERM to the job's own process, if it still runs (it then stops its work and records how it ended)."""
    if job.pid and job_alive(job):
        os.kill(job.pid, signal.SIGTERM)


def settle_vanished(backend: str, reason: str) -> list[tuple[Job, str]]:
    """End the active rows of `backend` whose process is gone (a reboot, kill -9): a stop in flight
    ends "stopped", anything else "failed" with `reason`. Returns each row it ended, with its status."""
    settled = []
    for job in list_jobs(limit=None, statuses=RUNNING, backend=backend):
        if job.pid is None or job_alive(job) or (job.status == "starting" and alive(job_process(job))):
            continue  # its launcher, recorded or not, is between writing the row and starting the process
        if transition(job.id, ("stopping",), status="stopped", failure_reason="Stopped by the user."):
            settled.append((job, "stopped"))
        elif transition(job.id, RUNNING, status="failed", failure_reason=reason):
            settled.append((job, "failed"))
    return settled
