"""The job backends behind `jobs.control`, through real processes: what names a detached process
(pid, start time, the job's marker), the pipeline claim, an evaluation job stopped and resumed,
and a SageMaker job's CloudWatch log on the Runs page (moto's server on 127.0.0.1)."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from core.errors import StudioError
from tests.test_evaluation import digits_evaluator  # noqa: F401 - a fixture
from tests.test_jobs_local import wait_until
from tests.test_jobs_sagemaker import aws, launch_options  # noqa: F401 - fixtures

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


def test_a_process_is_its_pid_its_start_time_and_its_marker(tmp_path: Path) -> None:
    from jobs.processes import ProcessId, alive, current, spawn

    process = spawn([*SLEEPER, "job-1234"], log=tmp_path / "sleeper.log")
    try:
        assert process.started is not None
        assert alive(process) and alive(process, marker="job-1234")
        assert not alive(process, marker="job-5678")  # another job's process is not this job's
        assert not alive(ProcessId(process.pid, process.started + 1))  # the pid, reused by a later process
        assert alive(current()) and current() == current()
    finally:
        os.kill(process.pid, signal.SIGKILL)
    wait_until(lambda: not alive(process), timeout=10, what="the killed process to count as gone")  # zombie, then reaped


def set_holder(pipeline_id: str, pid: int, started: int | None) -> None:
    from sqlalchemy import update

    from core.db import Pipeline, session_scope

    with session_scope() as session:
        session.execute(update(Pipeline).where(Pipeline.id == pipeline_id).values(pid=pid, pid_started=started))


def test_a_pipeline_is_held_by_its_live_process_only(home: Path) -> None:
    from jobs.pipeline.config import parse_pipeline_config
    from jobs.pipeline.runner import get_pipeline, prepare, run
    from jobs.processes import spawn

    pipeline = prepare(parse_pipeline_config("name: claimed\ndataset: nowhere"))
    holder = spawn(SLEEPER)
    try:
        set_holder(pipeline.id, holder.pid, holder.started)
        with pytest.raises(StudioError, match=rf"already running \(process {holder.pid}\)"):
            run(pipeline.id)
        set_holder(pipeline.id, holder.pid, (holder.started or 0) + 1)  # the recorded process ended; its pid lives on
        with pytest.raises(StudioError, match="stopped at the dataset step"):
            run(pipeline.id)
        assert get_pipeline(pipeline.id).pid is None  # released when the run ended
    finally:
        os.kill(holder.pid, signal.SIGKILL)


@pytest.mark.slow
def test_an_evaluation_job_stops_and_resumes(demo: str, trained_model: Path, digits_evaluator) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    import shutil

    from core.evaluation.evaluator import evaluator_dir
    from core.evaluation.request import EvalRequest
    from core.tracking import create_run, get_tracking
    from jobs import control, evaluate
    from jobs.processes import job_alive
    from jobs.records import FINAL, get_job

    client = get_tracking().client
    run_id = create_run("tiny-eval", {"dataset": demo})
    client.log_artifacts(run_id, str(trained_model), "model")
    client.set_terminated(run_id, "FINISHED")
    shutil.copytree(digits_evaluator[2], evaluator_dir(demo))

    job = control.evaluate_run(EvalRequest(model=run_id, dataset=demo, n=10, guidance=[1], steps=2))
    wait_until(lambda: get_job(job.id).status == "running", timeout=120, what="the evaluation to run")
    assert job_alive(get_job(job.id))
    assert control.stop(job.id).status == "stopping"
    wait_until(lambda: get_job(job.id).status in FINAL, timeout=120, what="the stopped evaluation to end")
    stopped = get_job(job.id)
    assert (stopped.status, stopped.exit_code, stopped.failure_reason) == ("stopped", -signal.SIGTERM, "Stopped by the user.")
    # The process records how it ended, then exits: its row can say "stopped" a moment before it is gone.
    wait_until(lambda: not job_alive(get_job(job.id)), timeout=60, what="the stopped evaluation's process to exit")
    assert evaluate.result(job.id) is None

    resumed = control.resume(job.id)
    assert (resumed.status, resumed.attempts) == ("starting", 2)
    wait_until(lambda: get_job(job.id).status in FINAL, timeout=300, what="the resumed evaluation to end")
    done = get_job(job.id)
    assert done.status == "succeeded", done.failure_reason
    assert evaluate.result(job.id).n == 10
    assert "eval/evaluator/cfg1/prompt_accuracy" in client.get_run(run_id).data.metrics
    assert Path(done.log_path).read_text().count(evaluate.ATTEMPT) == 2
    with pytest.raises(StudioError, match="only stopped or failed evaluations can be resumed"):
        control.resume(job.id)
    with pytest.raises(StudioError, match="is succeeded already"):
        control.stop(job.id)


def test_the_runs_page_shows_a_sagemaker_jobs_cloudwatch_log(aws: str) -> None:  # noqa: F811
    import boto3
    from streamlit.testing.v1 import AppTest

    from core.training.config import build_config
    from jobs import control
    from jobs.sagemaker import LOG_GROUP

    job = control.launch(build_config({"dataset": aws}), backend="sagemaker", sagemaker=launch_options())
    logs = boto3.client("logs")
    if not logs.describe_log_groups(logGroupNamePrefix=LOG_GROUP)["logGroups"]:
        logs.create_log_group(logGroupName=LOG_GROUP)
    stream = f"{job.sagemaker_job_name}/algo-1-1700000000"
    logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)
    lines = ["[unet] step 10/40 loss=0.5012 lr=0.001", "[unet] step 20/40 loss=0.4210 lr=0.001"]
    now = int(time.time() * 1000)
    logs.put_log_events(logGroupName=LOG_GROUP, logStreamName=stream, logEvents=[{"timestamp": now + i, "message": m} for i, m in enumerate(lines)])
    assert control.logs(job.id) == "\n".join(lines)

    def page() -> None:
        from pages.runs import render

        render()

    at = AppTest.from_function(page, default_timeout=120)
    at.query_params["run"] = job.mlflow_run_id
    at.run()
    assert not at.exception, at.exception
    assert "\n".join(lines) in [c.value for c in at.code]
