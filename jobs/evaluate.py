"""The evaluation backend: `python -m core.evaluation` on this machine, in a detached process.

`submit` records a Job row (kind "eval") and starts `python -m jobs.evaluate JOB_ID` (see
`jobs.processes`), which runs the evaluation with its output in the job's log, logs the result to
the evaluated run in MLflow (done by core.evaluation itself) and records how it ended. A stop ends
the evaluation; a resume runs it again, as the next attempt of the same job. The rows use backend
"local-eval": the training scheduler in jobs.local treats every active "local" row as a training.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from core.db import Job, new_id
from core.errors import StudioError
from core.evaluation.request import EvalRequest
from jobs.processes import REPO, current, settle_vanished, start_job_process, terminate
from jobs.records import FINAL, RUNNING, create_job, get_job, job_dir, list_jobs, log_tail, transition, update_job

if TYPE_CHECKING:
    from core.evaluation.evaluate import EvalResult

BACKEND = "local-eval"
ATTEMPT = "--- attempt "  # each attempt's output in the log starts with this line


def submit(request: EvalRequest) -> Job:
    """Record an evaluation of `request.model` (an MLflow run id) and start it at once."""
    from core.datasets.versions import resolve
    from core.tracking.runs import get_run

    name, version = resolve(request.dataset)
    request = request.model_copy(update={"dataset": f"{name}@{version}"})
    try:
        get_run(request.model)
    except StudioError:
        raise StudioError(f"{request.model!r} is not an MLflow run id.") from None
    job_id = new_id()
    # The row holds this (submitting) process until the evaluation's own replaces it, so a studio
    # killed in between leaves a row that `refresh` ends, not one "starting" for ever.
    submitter = current()
    create_job(
        job_id, "eval", BACKEND, request.model_dump(mode="json"), "eval.log", status="starting", dataset=request.dataset,
        mlflow_run_id=request.model, pid=submitter.pid, pid_started=submitter.started,
    )  # fmt: skip
    start_job_process(job_id, "jobs.evaluate")
    return get_job(job_id)


def after_training(job: Job) -> Job | None:
    """Start the evaluation a succeeded training job's config asks for (its `evaluate:` section)."""
    settings = job.config.get("evaluate")
    if job.status != "succeeded" or not settings or not job.mlflow_run_id:
        return None
    return submit(EvalRequest(**settings, model=job.mlflow_run_id, dataset=job.dataset or job.config["dataset"]))


def command(job: Job) -> list[str]:
    request = EvalRequest.model_validate(job.config)
    return [
        sys.executable, "-m", "core.evaluation", "--model", request.model, "--dataset", request.dataset,
        "--out", str(job_dir(job.id) / "output"), "--n", str(request.n), "--guidance", ",".join(f"{g:g}" for g in request.guidance),
        "--features", request.features, "--steps", str(request.steps), "--seed", str(request.seed), "--run-id", request.model,
    ]  # fmt: skip


def attempt_lines(job: Job) -> list[str]:
    """The log lines of the job's latest attempt."""
    path = Path(job.log_path or "")
    lines = path.read_text(errors="replace").splitlines() if path.is_file() else []
    starts = [i for i, line in enumerate(lines) if line.startswith(ATTEMPT)]
    return lines[starts[-1] + 1 :] if starts else lines


def main(job_id: str) -> int:
    """The job's own process: run the evaluation, then record how it ended."""
    child: subprocess.Popen | None = None
    stop_requested = False

    def on_term(*_: object) -> None:  # installed first: a stop may come before the child exists
        nonlocal stop_requested
        stop_requested = True
        if child is not None:
            child.terminate()

    signal.signal(signal.SIGTERM, on_term)
    job = get_job(job_id)
    with open(job.log_path or job_dir(job_id) / "eval.log", "ab") as log:
        log.write(f"{ATTEMPT}{job.attempts} ---\n".encode())
        log.flush()
        child = subprocess.Popen(command(job), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO)
        if stop_requested:
            child.terminate()
        transition(job_id, ("starting",), status="running")
        code = child.wait()
    if code == 0:
        update_job(job_id, status="succeeded", exit_code=0)
    elif get_job(job_id).status == "stopping":
        update_job(job_id, status="stopped", exit_code=code, failure_reason="Stopped by the user.")
    else:
        lines = attempt_lines(job)
        reason = next((line.removeprefix("error: ") for line in reversed(lines) if line.startswith("error: ")), None)
        update_job(job_id, status="failed", exit_code=code, failure_reason=reason or f"The evaluation exited with code {code}. Last line: {lines[-1] if lines else ''}")
    return 0


def refresh() -> None:
    """Mark evaluations whose process vanished (a reboot, kill -9) as failed (or stopped, if asked to)."""
    settle_vanished(BACKEND, "The evaluation process ended unexpectedly.")


def stop(job: Job) -> Job:
    """SIGTERM to the evaluation's process: it ends the evaluation and records the job as stopped."""
    if job.status in FINAL:
        raise StudioError(f"The evaluation {job.id} is {job.status} already.")
    transition(job.id, RUNNING, status="stopping")
    terminate(job)
    return get_job(job.id)


def resume(job: Job) -> Job:
    """Run a stopped or failed evaluation again, as the job's next attempt."""
    fresh = {"attempts": Job.attempts + 1, "failure_reason": None, "exit_code": None, "finished_at": None, "pid": None}
    if not transition(job.id, ("stopped", "failed"), status="starting", **fresh):
        raise StudioError(f"The evaluation {job.id} is {get_job(job.id).status}; only stopped or failed evaluations can be resumed.")
    start_job_process(job.id, "jobs.evaluate")
    return get_job(job.id)


def logs(job: Job, lines: int = 50) -> str:
    return log_tail(job, lines)


def model_archive(job: Job) -> None:
    """None: an evaluation trains no model."""


def evaluations(run_id: str) -> list[Job]:
    """The evaluation jobs of one run, newest first."""
    refresh()
    return [job for job in list_jobs(limit=200, backend=BACKEND) if job.mlflow_run_id == run_id]


def progress(job_id: str) -> tuple[float, str]:
    """The last progress line the evaluation's latest attempt printed: (fraction, text)."""
    for line in reversed(attempt_lines(get_job(job_id))):
        if line.startswith('{"progress"'):
            data = json.loads(line)
            return float(data["progress"]), str(data["text"])
    return 0.0, "Starting"


def result(job_id: str) -> EvalResult | None:
    from core.evaluation.evaluate import EvalResult

    path = job_dir(job_id) / "output" / "result.json"
    return EvalResult.model_validate_json(path.read_text()) if path.is_file() else None


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
