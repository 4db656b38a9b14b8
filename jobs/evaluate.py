"""Evaluation jobs on this machine: `python -m core.evaluation` in a detached process.

`submit` records a Job row (kind "eval") and starts `python -m jobs.evaluate JOB_ID`, which runs
the evaluation with its output in the job's log, logs the result to the evaluated run in MLflow
(done by core.evaluation itself) and records how it ended. The rows use backend "local-eval": the
training scheduler in jobs.local treats every active "local" row as a training process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from core.db import Job, new_id, session_scope
from core.errors import StudioError
from core.evaluation.evaluate import EvalResult
from core.evaluation.request import EvalRequest
from core.settings import get_settings
from jobs.records import FINAL, RUNNING, get_job, list_jobs, transition, update_job

BACKEND = "local-eval"
REPO = Path(__file__).resolve().parent.parent


def job_folder(job_id: str) -> Path:
    return get_settings().jobs_dir / job_id


def submit(request: EvalRequest) -> Job:
    """Record an evaluation of `request.model` (an MLflow run id) and start it at once."""
    from core.datasets.versions import resolve
    from core.tracking import get_tracking

    name, version = resolve(request.dataset)
    request = request.model_copy(update={"dataset": f"{name}@{version}"})
    try:
        get_tracking().client.get_run(request.model)
    except Exception:
        raise StudioError(f"{request.model!r} is not an MLflow run id.") from None
    job_id = new_id()
    folder = job_folder(job_id)
    folder.mkdir(parents=True, exist_ok=True)
    with session_scope() as session:
        session.add(
            Job(
                id=job_id, kind="eval", backend=BACKEND, status="starting", config=request.model_dump(mode="json"),
                dataset=request.dataset, mlflow_run_id=request.model, log_path=str(folder / "eval.log"), attempts=1,
            )
        )
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs.evaluate", job_id],
        cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env={**os.environ, "STUDIO_HOME": str(get_settings().home.resolve())},
    )
    update_job(job_id, pid=proc.pid)
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
        "--out", str(job_folder(job.id) / "output"), "--n", str(request.n), "--guidance", ",".join(f"{g:g}" for g in request.guidance),
        "--features", request.features, "--steps", str(request.steps), "--seed", str(request.seed), "--run-id", request.model,
    ]


def _alive(pid: int | None) -> bool:
    try:
        return bool(pid) and b"jobs.evaluate" in Path(f"/proc/{pid}/cmdline").read_bytes() and Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return False


def main(job_id: str) -> int:
    """The job's own process: run the evaluation, then record how it ended."""
    job = get_job(job_id)
    log_path = Path(job.log_path or job_folder(job_id) / "eval.log")
    with open(log_path, "ab") as log:
        child = subprocess.Popen(command(job), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO)
        signal.signal(signal.SIGTERM, lambda *_: child.terminate())
        transition(job_id, ("starting",), status="running")
        code = child.wait()
    if code == 0:
        update_job(job_id, status="succeeded", exit_code=0)
    elif get_job(job_id).status == "stopping":
        update_job(job_id, status="stopped", exit_code=code, failure_reason="Stopped by the user.")
    else:
        lines = log_path.read_text(errors="replace").splitlines()
        reason = next((line.removeprefix("error: ") for line in reversed(lines) if line.startswith("error: ")), None)
        update_job(job_id, status="failed", exit_code=code, failure_reason=reason or f"The evaluation exited with code {code}. Last line: {lines[-1] if lines else ''}")
    return 0


def refresh() -> None:
    """Mark evaluations whose process vanished (a reboot, kill -9) as failed."""
    for job in list_jobs(statuses=RUNNING, backend=BACKEND):
        if not _alive(job.pid):
            transition(job.id, RUNNING, status="failed", failure_reason="The evaluation process ended unexpectedly.")


def stop(job_id: str) -> Job:
    job = get_job(job_id)
    if job.status in FINAL:
        raise StudioError(f"The evaluation {job_id} is {job.status} already.")
    transition(job_id, RUNNING, status="stopping")
    if _alive(job.pid):
        os.kill(job.pid, signal.SIGTERM)
    return get_job(job_id)


def evaluations(run_id: str) -> list[Job]:
    """The evaluation jobs of one run, newest first."""
    refresh()
    return [job for job in list_jobs(limit=200, backend=BACKEND) if job.mlflow_run_id == run_id]


def progress(job_id: str) -> tuple[float, str]:
    """The last progress line the evaluation printed: (fraction, text)."""
    job = get_job(job_id)
    path = Path(job.log_path or "")
    if not path.is_file():
        return 0.0, "Starting"
    for line in reversed(path.read_text(errors="replace").splitlines()):
        if line.startswith('{"progress"'):
            data = json.loads(line)
            return float(data["progress"]), str(data["text"])
    return 0.0, "Starting"


def result(job_id: str) -> EvalResult | None:
    path = job_folder(job_id) / "output" / "result.json"
    return EvalResult.model_validate_json(path.read_text()) if path.is_file() else None


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
