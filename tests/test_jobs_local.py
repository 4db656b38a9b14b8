"""The local backend through real processes: the queue (order, reorder, cancel), a studio restart
re-attaching to a running job, and kill -9 of the training process marking the job failed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from core.errors import StudioError
from tests.conftest import REPO, TINY_OVERRIDES


def wait_until(check: Callable[[], bool], timeout: float = 300, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def tiny(ref: str, *extra: str):  # type: ignore[no-untyped-def]
    from core.training.config import build_config

    return build_config({"preset": "tiny", "dataset": ref}, [*TINY_OVERRIDES, *extra])


@pytest.mark.slow
def test_queue_restart_reattach_and_kill_9(demo: str, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.settings import reset_settings
    from core.tracking import get_tracking
    from jobs import control
    from jobs.progress import job_progress
    from jobs.records import get_job, queue

    monkeypatch.setenv("STUDIO_MAX_LOCAL_JOBS", "1")
    reset_settings()
    # A long job launched by another process (a studio that then exits): its supervisor lives on.
    cli = subprocess.run(
        [sys.executable, "-m", "app.cli", "job", "launch", "--dataset", demo, "--json", "--detach",
         *(a for o in [*TINY_OVERRIDES, "stage=unet", "unet.steps=100000", "checkpoint_every=100000", "validate_every=100000", "sample_every=100000"] for a in ("--set", o))],
        cwd=REPO, env={**os.environ}, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    long_id = json.loads(cli.stdout)["id"]

    # The queue: one slot, so these wait, in order; reorder and cancel them.
    a, b, c = (control.launch(tiny(demo, "stage=unet")) for _ in range(3))
    assert [j.status for j in (a, b, c)] == ["queued"] * 3
    assert [j.id for j in queue()] == [a.id, b.id, c.id]
    assert [j.id for j in control.move(c.id, -2)] == [c.id, a.id, b.id]
    assert [j.id for j in control.move(c.id, 5)] == [a.id, b.id, c.id]
    assert [j.id for j in control.move(c.id, -1)] == [a.id, c.id, b.id]
    assert control.cancel(b.id).status == "stopped"
    assert control.stop(a.id).status == "stopped"  # stopping a queued job cancels it
    assert [j.id for j in queue()] == [c.id]
    with pytest.raises(StudioError, match="only queued jobs can be cancelled"):
        control.cancel(long_id)
    with pytest.raises(StudioError, match="only queued jobs can be reordered"):
        control.move(long_id, 1)

    # "Restart" the studio: nothing in this process started the long job; it reads catalog + files.
    reset_settings()
    wait_until(lambda: len(job_progress(get_job(long_id)).metrics) >= 2, what="the long job's first metrics")
    long = get_job(long_id)
    assert long.status == "running" and long.attempts == 1
    assert "[unet] step 2/100000 loss=" in control.logs(long_id)
    assert job_progress(long).stage == "unet" and job_progress(long).step >= 2
    assert get_tracking().client.get_run(long.mlflow_run_id).info.status == "RUNNING"

    # kill -9 of the training process (the supervisor's child): failed, with the code and last lines.
    child = int(Path(f"/proc/{long.pid}/task/{long.pid}/children").read_text().split()[0])
    os.kill(child, signal.SIGKILL)
    wait_until(lambda: get_job(long_id).status == "failed", timeout=60, what="the killed job to be marked failed")
    long = get_job(long_id)
    assert long.exit_code == -9
    assert long.failure_reason.startswith("The training process was killed by signal 9. Last lines:")
    assert "[unet] step" in long.failure_reason
    assert get_tracking().client.get_run(long.mlflow_run_id).info.status == "FAILED"

    # The freed slot goes to the head of the queue; then a stop ends it cleanly.
    wait_until(lambda: get_job(c.id).status == "running", timeout=60, what="the next queued job to start")
    assert get_job(b.id).status == "stopped" and get_job(a.id).status == "stopped"
    with pytest.raises(StudioError, match="only stopped or failed jobs can be resumed"):
        control.resume(c.id)
    control.stop(c.id)
    wait_until(lambda: get_job(c.id).status == "stopped", timeout=240, what="the stopped job to end")


def test_a_job_reads_as_ended_only_once_its_run_has(demo: str, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whoever sees a job succeed (the Train page, `studio job wait`, a script polling it) must find
    its MLflow run FINISHED: the supervisor ends the run before the job's row."""
    import jobs.local
    import jobs.records
    from core.tracking import get_tracking
    from jobs import control, supervise
    from jobs.records import transition

    monkeypatch.setattr(jobs.local, "schedule", lambda: [])  # this test runs the supervisor itself, in this process
    job = control.launch(tiny(demo, "stage=unet"))
    seen: dict[str, str] = {}
    real_update = jobs.records.update_job

    def update_job(job_id: str, **fields: object):  # type: ignore[no-untyped-def]
        if fields.get("status") in ("succeeded", "failed", "stopped"):
            seen[str(fields["status"])] = get_tracking().client.get_run(job.mlflow_run_id).info.status
        return real_update(job_id, **fields)

    monkeypatch.setattr(jobs.records, "update_job", update_job)
    assert transition(job.id, ("queued",), status="starting")
    assert supervise.main(job.id) == 0
    assert seen == {"succeeded": "FINISHED"}
