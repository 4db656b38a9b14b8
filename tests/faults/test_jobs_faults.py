"""Faults of processes and jobs, on real processes and the real catalog: a supervisor killed with
kill -9 takes its trainer with it and the job resumes; two trainers never share a checkpoint folder;
a `latest` checkpoint that is missing, or a checkpoint file changed after it was saved; two
concurrent claims of one pipeline; a SageMaker submission that fails outside botocore."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from core.errors import StudioError
from tests.conftest import REPO, TINY_OVERRIDES
from tests.test_jobs_local import tiny, wait_until
from tests.test_jobs_sagemaker import aws, launch_options  # noqa: F401 - a fixture

LONG = ["stage=unet", "unet.steps=100000", "checkpoint_every=100000", "validate_every=100000", "sample_every=100000"]


def children(pid: int) -> list[int]:
    return [int(c) for task in Path(f"/proc/{pid}/task").glob("*") for c in (task / "children").read_text().split()]


@pytest.mark.slow
def test_kill_9_of_the_supervisor_takes_the_trainer_and_the_job_resumes_alone(demo: str, home: Path) -> None:
    from jobs import control
    from jobs.processes import ProcessId, _stat, alive
    from jobs.progress import job_progress
    from jobs.records import get_job

    job = control.launch(tiny(demo, *LONG))
    wait_until(lambda: len(job_progress(get_job(job.id)).metrics) >= 1, what="the job's first metrics")
    supervisor = get_job(job.id).pid
    (trainer_pid,) = children(supervisor)
    trainer = ProcessId(trainer_pid, _stat(trainer_pid)[1])

    os.kill(supervisor, signal.SIGKILL)
    wait_until(lambda: not alive(trainer), timeout=120, what="the trainer to end with its supervisor")
    control.refresh()
    failed = get_job(job.id)
    assert failed.status == "failed" and failed.failure_reason == "The job's supervisor process ended unexpectedly."

    # Resume: one trainer again, continuing from the checkpoint the first one saved on its way out.
    control.resume(job.id)
    wait_until(lambda: "Resuming from" in control.logs(job.id, 400), what="the resumed trainer to load its checkpoint")
    assert get_job(job.id).status == "running"

    # A second trainer on the same checkpoint folder refuses, in one sentence, and writes nothing.
    config = Path(get_job(job.id).log_path).parent / "config.yaml"
    second = subprocess.run([sys.executable, "-m", "core.training", "--config", str(config), "--resume", "latest"],
                            cwd=REPO, env={**os.environ}, capture_output=True, text=True, timeout=300)  # fmt: skip
    checkpoints = Path(get_job(job.id).config["output_dir"]) / "checkpoints"
    assert second.returncode == 2
    assert second.stderr.strip().splitlines()[-1] == (
        f"error: Another training process is writing checkpoints to {checkpoints}; stop it before starting this one."
    )

    control.stop(job.id)
    wait_until(lambda: get_job(job.id).status == "stopped", timeout=240, what="the resumed job to stop")


CLAIM = """
import sys
from core.errors import StudioError
from jobs.pipeline.runner import _claim
print("ready", flush=True)
try:
    _claim(sys.argv[1])
    print("claimed", flush=True)
except StudioError as exc:
    print(f"refused: {exc}", flush=True)
"""


def sleeping(pid: int) -> bool:
    """Whether the process sits in a sleep syscall (SQLite's busy handler waiting for the write lock)."""
    try:
        return Path(f"/proc/{pid}/syscall").read_text().split()[0] in ("35", "230")  # nanosleep, clock_nanosleep
    except (OSError, IndexError):
        return False


def test_two_concurrent_claims_of_one_pipeline_let_exactly_one_run(home: Path) -> None:
    import sqlite3

    from core.db import Pipeline, get_engine, session_scope
    from jobs.pipeline.runner import get_pipeline

    with session_scope() as session:
        session.add(Pipeline(id="p1", name="digits-weekly", config={}))
    # Hold the catalog's write lock so both claimers read the free row before either can write it.
    blocker = sqlite3.connect(get_engine().url.database, isolation_level=None, timeout=30)
    blocker.execute("BEGIN IMMEDIATE")
    claimers = [
        subprocess.Popen([sys.executable, "-c", CLAIM, "p1"], cwd=REPO, env={**os.environ}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    try:
        for claimer in claimers:
            assert claimer.stdout.readline().strip() == "ready"
        wait_until(lambda: all(sleeping(c.pid) for c in claimers), timeout=120, what="both claimers to wait for the write lock")
    finally:
        blocker.execute("COMMIT")
        blocker.close()
    results = {c.pid: c.communicate(timeout=120)[0].strip() for c in claimers}
    holder = get_pipeline("p1").pid
    loser = next(pid for pid in results if pid != holder)
    assert results == {holder: "claimed", loser: f"refused: The pipeline digits-weekly is already running (process {holder})."}


def test_a_sagemaker_submission_failing_outside_botocore_leaves_a_clear_row(aws: str) -> None:  # noqa: F811
    from core.tracking import get_tracking
    from core.training.config import build_config
    from jobs import control
    from jobs.records import list_jobs

    # A real bad argument: the SDK finds no training image for this instance type (a ValueError).
    with pytest.raises(StudioError) as raised:
        control.launch(build_config({"dataset": aws}), backend="sagemaker", sagemaker=launch_options(instance_type="gpu-box"))
    assert str(raised.value).startswith("The SageMaker job was never created: ValueError: Invalid SageMaker instance type: gpu-box.")
    (row,) = list_jobs(backend="sagemaker")
    assert (row.status, row.failure_reason, row.sagemaker_job_name) == ("failed", str(raised.value), None)
    assert get_tracking().client.get_run(row.mlflow_run_id).info.status == "FAILED"
    control.refresh()  # the row has no cloud job; nothing asks SageMaker about it


def test_one_sagemaker_job_that_cannot_sync_does_not_break_the_others(aws: str) -> None:  # noqa: F811
    from core.training.config import build_config
    from jobs import control
    from jobs.records import get_job, update_job

    config = build_config({"dataset": aws})
    good, lost, orphan, unborn = (control.launch(config, backend="sagemaker", sagemaker=launch_options()) for _ in range(4))
    # Real catalog states: a cloud job deleted behind the studio's back, and two rows a killed
    # submission left without a cloud job (their submitting process is gone).
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    update_job(lost.id, sagemaker_job_name=f"studio-{lost.id}-gone")
    for row in (orphan, unborn):
        update_job(row.id, status="starting", sagemaker_job_name=None, pid=int(dead.stdout), pid_started=1)

    control.stop(unborn.id)  # a row without a cloud job can be stopped
    control.refresh()
    assert get_job(good.id).status == "succeeded"  # moto completes jobs at once
    assert get_job(lost.id).status == "starting"
    assert get_job(lost.id).failure_reason.startswith("The last refresh from SageMaker failed: ")
    assert (get_job(orphan.id).status, get_job(orphan.id).failure_reason) == (
        "failed", "The SageMaker job was never created: the process submitting it ended first."
    )  # fmt: skip
    assert (get_job(unborn.id).status, get_job(unborn.id).failure_reason) == ("stopped", "The SageMaker job was never created: it was stopped first.")


@pytest.fixture(scope="module")
def checkpointed(tmp_path_factory: pytest.TempPathFactory, demo_home: Path) -> Path:
    """A tiny VAE stage really trained for 6 steps, checkpointed at steps 3 and 6; copy it before changing it."""
    from tests.conftest import run_training

    out = tmp_path_factory.mktemp("checkpointed")
    run_training([*TINY_OVERRIDES, "dataset=digits", "stage=vae", f"output_dir={out}"], {"STUDIO_HOME": str(demo_home)})
    return out


def copy_of(checkpointed: Path, tmp_path: Path) -> Path:
    import shutil

    shutil.copytree(checkpointed, tmp_path / "out")
    return tmp_path / "out" / "checkpoints"


def test_a_missing_or_incomplete_latest_falls_back_to_the_newest_that_verifies(checkpointed: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import shutil

    from core.training.checkpoint import resolve_resume

    root = copy_of(checkpointed, tmp_path)
    assert (root / "latest").read_text() == "step-1vae-0000006"
    assert resolve_resume(root, "latest") == root / "step-1vae-0000006"

    (root / "step-1vae-0000006" / "model" / "vae" / "config.json").unlink()  # incomplete: not loaded
    with caplog.at_level("WARNING", logger="core.training"):
        assert resolve_resume(root, "latest") == root / "step-1vae-0000003"
    assert "Resuming from step-1vae-0000003, the newest checkpoint that verifies: The checkpoint" in caplog.text
    assert "vae/config.json is missing" in caplog.text

    shutil.rmtree(root / "step-1vae-0000006")  # `latest` names a folder that is gone
    assert resolve_resume(root, "latest") == root / "step-1vae-0000003"
    (root / "latest").unlink()  # no pointer, a checkpoint all the same
    assert resolve_resume(root, "latest") == root / "step-1vae-0000003"

    (root / "step-1vae-0000003" / "state.pt").unlink()  # checkpoints, none of them usable: one sentence, not step 0
    with pytest.raises(StudioError, match=r"^No checkpoint in .* can be resumed: The checkpoint .* is incomplete \(state.pt is missing\)\.$"):
        resolve_resume(root, "latest")
    shutil.rmtree(root)
    assert resolve_resume(root, "latest") is None  # no checkpoint at all: the beginning


def test_a_checkpoint_changed_after_it_was_saved_is_refused(checkpointed: Path, tmp_path: Path, demo_home: Path) -> None:
    from tests.conftest import run_training

    root = copy_of(checkpointed, tmp_path)
    latest = root / "step-1vae-0000006"
    with open(latest / "state.pt", "ab") as f:
        f.write(b"\0")  # a zip still readable by torch.load: only the digest tells
    resumed = run_training([*TINY_OVERRIDES, "dataset=digits", "stage=vae", f"output_dir={root.parent}"], {"STUDIO_HOME": str(demo_home)}, "--resume", "latest", check=False)
    assert resumed.returncode == 2
    assert resumed.stderr.strip().splitlines()[-1] == (
        f"error: The checkpoint {latest} was changed after the studio saved it (state.pt does not match its recorded sha256); it will not be loaded."
    )
    resumed = run_training([*TINY_OVERRIDES, "dataset=digits", "stage=vae", f"output_dir={tmp_path / 'other'}"], {"STUDIO_HOME": str(demo_home)}, "--resume", str(latest), check=False)
    assert resumed.stderr.strip().splitlines()[-1].startswith(f"error: The checkpoint {latest} was changed after the studio saved it")


TREE = """
import subprocess, sys, time
worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)  # as torchrun starts its workers
print(worker.pid, flush=True)
time.sleep(600)
"""


def test_the_grace_kill_takes_the_trainers_whole_tree() -> None:
    from jobs.processes import ProcessId, _stat, alive
    from jobs.supervise import kill_tree

    launcher = subprocess.Popen([sys.executable, "-c", TREE], stdout=subprocess.PIPE, text=True, process_group=0)
    worker_pid = int(launcher.stdout.readline())
    worker = ProcessId(worker_pid, _stat(worker_pid)[1])
    kill_tree(launcher.pid)
    assert launcher.wait(timeout=60) == -9
    wait_until(lambda: not alive(worker), timeout=60, what="the launcher's worker (its own session) to be killed too")


def test_every_client_the_sagemaker_preflight_makes_retries_in_standard_mode(aws: str, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    import boto3

    from jobs.sagemaker import SageMakerLaunch, preflight

    monkeypatch.delenv("AWS_MAX_ATTEMPTS", raising=False)
    made: list[tuple[str, object]] = []
    real = boto3.Session.client

    def recording(self, service, *args, **kwargs):  # type: ignore[no-untyped-def]
        made.append((service, kwargs.get("config")))
        return real(self, service, *args, **kwargs)

    monkeypatch.setattr(boto3.Session, "client", recording)
    preflight(SageMakerLaunch(**launch_options()))
    assert {service for service, _ in made} >= {"s3", "iam"}
    assert all(config is not None and config.retries["mode"] == "standard" for _, config in made), made


def test_a_checkpoint_a_killed_trainer_left_half_written_is_cleared_when_the_next_one_takes_the_folder(tmp_path: Path) -> None:
    from core.training.checkpoint import hold_checkpoints

    root = tmp_path / "checkpoints"
    (root / ".tmp-step-2unet-0000004-0123abcd").mkdir(parents=True)
    (root / ".tmp-step-2unet-0000004-0123abcd" / "state.pt").write_bytes(b"cut short")
    (root / ".tmp-latest-89ab").write_text("step-2unet")
    (root / "step-2unet-0000002").mkdir()
    lock = hold_checkpoints(root)
    try:
        assert sorted(p.name for p in root.iterdir()) == [".lock", "step-2unet-0000002"]
    finally:
        assert lock is not None
        lock.close()
