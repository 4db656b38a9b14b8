"""`python -m jobs.supervise JOB_ID`: run one local job's training process and record how it ended.

Runs in its own session, detached from the studio. SIGTERM is forwarded to the training process
(which checkpoints and exits); after a grace period it is killed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import core  # noqa: F401
from jobs.records import get_job, update_job

GRACE_SECONDS = 60


def failure_reason(log_path: Path, code: int) -> str:
    lines = log_path.read_text(errors="replace").splitlines() if log_path.is_file() else []
    for line in reversed(lines):
        if line.startswith("error: "):
            return line.removeprefix("error: ")
    tail = " | ".join(line.strip() for line in lines[-3:] if line.strip())
    how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
    return f"The training process {how}. Last lines: {tail}" if tail else f"The training process {how}."


def command(job_id: str, config_path: Path, processes: int, resume: bool) -> list[str]:
    entry = ["-m", "core.training", "--config", str(config_path)]
    if resume:
        entry += ["--resume", "latest"]
    if processes > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", *entry]
    return [sys.executable, *entry]


def main(job_id: str) -> int:
    job = get_job(job_id)
    folder = Path(job.log_path).parent
    config_path = folder / "config.yaml"
    processes = int(job.config.get("processes", 1))
    status_file = folder / "output" / "status.json"
    status_file.unlink(missing_ok=True)  # a previous attempt's verdict must not be read as this one's
    with open(job.log_path, "ab") as log:
        log.write(f"--- attempt {job.attempts} ---\n".encode())
        log.flush()
        child = subprocess.Popen(command(job_id, config_path, processes, resume=job.attempts > 1), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    update_job(job_id, status="running", pid=os.getpid())
    _set_run_status(job.mlflow_run_id, "RUNNING")

    def on_term(*_: object) -> None:
        child.send_signal(signal.SIGTERM)
        threading.Timer(GRACE_SECONDS, lambda: child.poll() is None and child.kill()).start()

    signal.signal(signal.SIGTERM, on_term)
    code = child.wait()
    state = json.loads(status_file.read_text()).get("status") if status_file.is_file() else None
    if code == 0 and state in ("succeeded", "stopped"):
        update_job(job_id, status=state, exit_code=0)
        _set_run_status(job.mlflow_run_id, "FINISHED" if state == "succeeded" else "KILLED")
    else:
        stopped = get_job(job_id).status == "stopping"
        update_job(
            job_id,
            status="stopped" if stopped else "failed",
            exit_code=code,
            failure_reason="Stopped without a checkpoint (killed after the grace period)." if stopped else failure_reason(Path(job.log_path), code),
        )
        _set_run_status(job.mlflow_run_id, "KILLED" if stopped else "FAILED")
    from jobs.local import schedule

    schedule()
    return 0


def _set_run_status(run_id: str | None, status: str) -> None:
    if not run_id:
        return
    from core.tracking import get_tracking

    client = get_tracking().client
    if status == "RUNNING":
        client.update_run(run_id, status="RUNNING")
    else:
        client.set_terminated(run_id, status=status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
