"""`python -m jobs.supervise JOB_ID`: run one local job's training process and record how it ended.

Runs in its own session, detached from the studio. SIGTERM is forwarded to the training process
(which checkpoints and exits); after a grace period it is killed with everything it started
(torchrun's workers run in sessions of their own, so the tree is walked, not only the group). The
training process gets SIGTERM when the supervisor dies (kill -9 included), so it never outlives it.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.db import Job

GRACE_SECONDS = 60
PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded here: the child between fork and exec must not load libraries


def _die_with_parent(parent: int) -> None:
    """In the child before exec: its own process group, and SIGTERM when the supervisor dies."""
    os.setpgid(0, 0)
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the supervisor died before the signal was asked for
        os.kill(os.getpid(), signal.SIGTERM)


def _tree(pid: int) -> list[int]:
    """`pid` and every process under it (read from /proc; a process that ended meanwhile is skipped)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
    return found


def kill_tree(pid: int) -> None:
    """SIGKILL the training process's group and every process under it."""
    members = _tree(pid)
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
    for member in members:
        try:
            os.kill(member, signal.SIGKILL)
        except OSError:
            pass


def failure_reason(log_path: Path, code: int) -> str:
    lines = log_path.read_text(errors="replace").splitlines() if log_path.is_file() else []
    # Only this attempt's lines: the log keeps every attempt, and an earlier one's error is not why this one ended.
    marks = [i for i, line in enumerate(lines) if line.startswith("--- attempt ")]
    lines = lines[marks[-1] + 1 :] if marks else lines
    for line in reversed(lines):
        if line.startswith("error: "):
            return line.removeprefix("error: ")
    tail = " | ".join(line.strip() for line in lines[-3:] if line.strip())
    how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
    return f"The training process {how}. Last lines: {tail}" if tail else f"The training process {how}."


def command(config_path: Path, processes: int, resume: bool) -> list[str]:
    entry = ["-m", "core.training", "--config", str(config_path)]
    if resume:
        entry += ["--resume", "latest"]
    if processes > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", *entry]
    return [sys.executable, *entry]


def main(job_id: str) -> int:
    child: subprocess.Popen | None = None
    stop_requested = threading.Event()

    def on_term(*_: object) -> None:  # installed first: a stop may arrive before the child exists
        stop_requested.set()
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)
            timer = threading.Timer(GRACE_SECONDS, lambda: child.poll() is None and kill_tree(child.pid))
            timer.daemon = True  # the supervisor waits for the child anyway; an exited child must not keep it up
            timer.start()

    signal.signal(signal.SIGTERM, on_term)
    # Imported after the handler is in place: a stop may come while MLflow is still importing.
    import core  # noqa: F401
    from jobs.local import schedule
    from jobs.processes import current
    from jobs.records import get_job, set_run_status, transition

    # Record this process on the row before any training starts, in the UPDATE that makes it
    # "running": a launcher killed before recording it leaves the row to `jobs.local._settle_unlaunched`,
    # and of the two only one changes the row.
    me = current()
    if not transition(job_id, ("starting",), status="running", pid=me.pid, pid_started=me.started):
        if not transition(job_id, ("stopping",), pid=me.pid, pid_started=me.started):
            return 0  # the row was settled first (its launcher died before recording this process): not ours to run
        stop_requested.set()  # a stop that came before this process was recorded had no pid to signal
    job = get_job(job_id)
    folder = Path(job.log_path).parent
    status_file = folder / "output" / "status.json"
    status_file.unlink(missing_ok=True)  # a previous attempt's verdict must not be read as this one's
    with open(job.log_path, "ab") as log:
        log.write(f"--- attempt {job.attempts} ---\n".encode())
        log.flush()
        cmd = command(folder / "config.yaml", int(job.config.get("processes", 1)), resume=job.attempts > 1)
        child = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=Path(__file__).resolve().parent.parent,
            preexec_fn=lambda parent=os.getpid(): _die_with_parent(parent),
        )
    if stop_requested.is_set():
        on_term()
    set_run_status(job.mlflow_run_id, "RUNNING")

    code = child.wait()
    deliver_leftovers(job, Path(job.log_path))  # before the final status: a FINISHED run has all its data
    state = json.loads(status_file.read_text()).get("status") if status_file.is_file() else None
    if code == 0 and state in ("succeeded", "stopped"):
        end(job, "FINISHED" if state == "succeeded" else "KILLED", status=state, exit_code=0, failure_reason=None)
        evaluate_after(job_id, Path(job.log_path))
    elif stop_requested.is_set():
        end(job, "KILLED", status="stopped", exit_code=code, failure_reason="Stopped before the training process saved a checkpoint.")
    else:
        end(job, "FAILED", status="failed", exit_code=code, failure_reason=failure_reason(Path(job.log_path), code))
    schedule()
    return 0


def end(job: Job, run_status: str, **fields: Any) -> None:
    """The run's final status first, then the job's: whoever sees the job ended finds its run ended
    too. The job's row is written even when the tracking server refuses."""
    from jobs.records import set_run_status, update_job

    try:
        set_run_status(job.mlflow_run_id, run_status)
    finally:
        update_job(job.id, **fields)


def deliver_leftovers(job: Job, log_path: Path) -> None:
    """Send MLflow what the training could not (the server was slow or down); a failure goes to the log."""
    from jobs.relay import deliver_pending

    try:
        deliver_pending(job)
    except Exception as exc:
        with open(log_path, "a") as log:
            log.write(f"MLflow did not take what the training could not send ({type(exc).__name__}); it stays in the job's outbox.\n")


def evaluate_after(job_id: str, log_path: Path) -> None:
    """Start the evaluation the config asks for; a refusal goes to the job's log, not its status."""
    from core.errors import StudioError
    from jobs.evaluate import after_training
    from jobs.records import get_job

    try:
        evaluation = after_training(get_job(job_id))
    except StudioError as exc:
        message = f"The evaluation after training could not start: {exc}"
    else:
        message = f"Started evaluation job {evaluation.id}." if evaluation else ""
    if message:
        with open(log_path, "a") as log:
            log.write(message + "\n")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
