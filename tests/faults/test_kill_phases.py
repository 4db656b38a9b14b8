"""kill -9 at each phase of a local job, on real processes and the real catalog: the trainer (the
supervisor's child) at its first step and in the middle of a checkpoint write, and the studio (the
process that calls `control.launch`) while its job is queued and while it is starting. After each,
the job ends in one sentence or runs on, no process is left behind, `refresh()` converges, a
resume continues the loss curve from the last checkpoint that verifies, and no two trainers of one
job (nor, with one slot, two at all) ever run at once. The supervisor is killed mid-checkpoint
here too (at the first step: test_jobs_faults.py)."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import REPO, TINY_OVERRIDES
from tests.test_jobs_local import tiny, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("kill")]

# One metrics row and one checkpoint after every step: most of the trainer's time goes to writing
# checkpoints, so a paused trainer is often caught in the middle of one.
EVERY_STEP = ["stage=unet", "unet.steps=100000", "log_every=1", "checkpoint_every=1", "validate_every=100000", "sample_every=100000"]
LONG = ["stage=unet", "unet.steps=100000", "checkpoint_every=100000", "validate_every=100000", "sample_every=100000"]


def argvs() -> dict[int, list[str]]:
    """The command line of every live process (a zombie's is empty, so it is left out)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")[:-1]
            except OSError:
                continue
            if argv:
                found[int(entry.name)] = [a.decode(errors="replace") for a in argv]
    return found


def parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])  # the field after the state; the name may hold spaces


def trainers(home: Path) -> dict[str, list[int]]:
    """The training processes of this studio's jobs, by job id (from the config each one reads).

    A process whose parent is a trainer is that trainer's own child caught between fork and exec
    (it still shows the trainer's command line), not a second trainer: a second one would be
    started by a supervisor."""
    jobs_dir = str(home.resolve() / "jobs") + "/"
    found: dict[str, list[int]] = {}
    for pid, argv in argvs().items():
        if argv[1:3] == ["-m", "core.training"] and "--config" in argv:
            config = argv[argv.index("--config") + 1]
            if config.startswith(jobs_dir):
                found.setdefault(config[len(jobs_dir) :].split("/")[0], []).append(pid)
    return {job: [pid for pid in pids if parent_of(pid) not in pids] for job, pids in found.items()}


def processes_of(job_id: str) -> list[int]:
    """Every live process working for the job: its supervisor (the id is its argument) and its trainer (its config path)."""
    return [pid for pid, argv in argvs().items() if any(job_id in a for a in argv)]


@contextmanager
def watching_trainers(home: Path) -> Iterator[dict[str, int]]:
    """Samples the running trainers until the block ends; yields the most seen at once, per job and in all ("*")."""
    most: dict[str, int] = {"*": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.1):
            now = trainers(home)
            most["*"] = max(most["*"], sum(len(p) for p in now.values()))
            for job_id, pids in now.items():
                most[job_id] = max(most.get(job_id, 0), len(pids))

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield most
    finally:
        done.set()
        thread.join()


def the_trainer(job_id: str) -> int:
    from jobs.records import get_job

    supervisor = get_job(job_id).pid
    (child,) = (int(c) for task in Path(f"/proc/{supervisor}/task").glob("*") for c in (task / "children").read_text().split())
    return child


def rows(job) -> list[dict]:  # type: ignore[no-untyped-def]
    from jobs.progress import job_progress

    return job_progress(job).metrics


def paused_mid_checkpoint(trainer: int, checkpoints: Path, timeout: float = 120) -> Path:
    """Pause the trainer (SIGSTOP) until it is caught with a checkpoint half written (a staged folder
    holding files but no manifest.json yet), and leave it paused there. Returns that staged folder."""
    from jobs.processes import _stat

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        os.kill(trainer, signal.SIGSTOP)
        while (_stat(trainer) or ("T",))[0] not in ("T", "t"):
            time.sleep(0.001)
        staged = [p for p in checkpoints.glob(".tmp-step-*") if not (p / "manifest.json").exists() and any(p.rglob("*"))]
        if staged:
            return staged[0]
        os.kill(trainer, signal.SIGCONT)
        time.sleep(0.02)
    raise AssertionError("timed out waiting for the trainer to be caught in the middle of a checkpoint write")


def resumed_step(log: str) -> int:
    """The step the newest attempt in the job's log resumed from (0: from the beginning)."""
    attempt = log.rsplit("--- attempt ", 1)[1]
    if "No checkpoint in" in attempt:
        return 0
    return int(attempt.split("Resuming from ", 1)[1].split("(stage unet, step ", 1)[1].split(")")[0])


def test_kill_9_of_the_trainer_at_its_first_step_and_mid_checkpoint_then_the_curve_continues(demo: str, home: Path, tmp_path: Path) -> None:
    from core.training.checkpoint import verify_checkpoint
    from jobs import control
    from jobs.records import get_job

    checkpoints = tmp_path / "checkpoints"  # known before launch, to hold its lock
    checkpoints.mkdir()
    with watching_trainers(home) as most:
        # Attempt 1 meets another trainer's lock: it fails with that sentence and writes nothing.
        with open(checkpoints / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            job = control.launch(tiny(demo, *EVERY_STEP, f"checkpoint_dir={checkpoints}"))
            wait_until(lambda: get_job(job.id).status == "failed", timeout=240, what="the first attempt to meet the lock")
        assert get_job(job.id).failure_reason == f"Another training process is writing checkpoints to {checkpoints}; stop it before starting this one."
        wait_until(lambda: not processes_of(job.id), timeout=60, what="the failed attempt's processes to end")

        # Attempt 2, killed at its first step: failed in one sentence of its own (not attempt 1's), nothing left.
        control.resume(job.id)
        wait_until(lambda: len(rows(get_job(job.id))) >= 1, timeout=240, what="the first step")
        os.kill(the_trainer(job.id), signal.SIGKILL)
        wait_until(lambda: get_job(job.id).status == "failed", timeout=60, what="the killed trainer's job to fail")
        killed = get_job(job.id)
        assert killed.exit_code == -9
        assert killed.failure_reason.startswith("The training process was killed by signal 9. Last lines: ")
        wait_until(lambda: not processes_of(job.id), timeout=60, what="the killed trainer's supervisor to end")
        control.refresh()
        assert get_job(job.id).failure_reason == killed.failure_reason

        # Attempt 3 continues from the last checkpoint attempt 2 completed (or from the start if none).
        before = len(rows(get_job(job.id)))
        control.resume(job.id)
        wait_until(lambda: len(rows(get_job(job.id))) >= before + 2, timeout=240, what="the resumed trainer's steps")
        start = resumed_step(control.logs(job.id, 400))
        assert rows(get_job(job.id))[before]["step"] == start + 1

        # ... and is killed in the middle of writing a checkpoint.
        staged = paused_mid_checkpoint(trainer := the_trainer(job.id), checkpoints)
        os.kill(trainer, signal.SIGKILL)
        wait_until(lambda: get_job(job.id).status == "failed", timeout=60, what="the job killed mid-checkpoint to fail")
        assert get_job(job.id).failure_reason.startswith("The training process was killed by signal 9. Last lines: ")
        wait_until(lambda: not processes_of(job.id), timeout=60, what="the processes of the job killed mid-checkpoint to end")
        half = int(staged.name.rsplit("-", 1)[1])  # the step whose checkpoint was cut short
        assert not (checkpoints / staged.name.removeprefix(".tmp-")).exists()
        assert (checkpoints / "latest").read_text() == f"step-2unet-{half - 1:07d}"
        cut = rows(get_job(job.id))
        assert cut[-1]["step"] == half  # its metrics were logged before its checkpoint began

        # Attempt 4 resumes from the checkpoint before the cut one: the same step again, the same loss.
        control.resume(job.id)
        wait_until(lambda: len(rows(get_job(job.id))) >= len(cut) + 2, timeout=240, what="the second resumed trainer's steps")
        assert resumed_step(control.logs(job.id, 400)) == half - 1
        again = rows(get_job(job.id))[len(cut) :]
        assert [r["step"] for r in again[:2]] == [half, half + 1]
        assert again[0]["loss"] == pytest.approx(cut[-1]["loss"], rel=1e-4)

        # Last, kill -9 of the supervisor while its trainer writes a checkpoint: the trainer, told by
        # SIGTERM, saves a checkpoint and stops on its own; nothing is left.
        staged = paused_mid_checkpoint(trainer := the_trainer(job.id), checkpoints)
        # Let it go on first: a stopped process whose group loses its parent gets SIGHUP from the kernel.
        os.kill(trainer, signal.SIGCONT)
        os.kill(get_job(job.id).pid, signal.SIGKILL)
        wait_until(lambda: not processes_of(job.id), timeout=120, what="the trainer to stop with its supervisor")
        control.refresh()
        assert (get_job(job.id).status, get_job(job.id).failure_reason) == ("failed", "The job's supervisor process ended unexpectedly.")
    assert "SIGTERM received: saving a checkpoint and stopping." in control.logs(job.id, 20)
    stopped = json.loads((Path(get_job(job.id).config["output_dir"]) / "status.json").read_text())
    assert stopped["status"] == "stopped" and stopped["step"] > int(staged.name.rsplit("-", 1)[1])
    assert (checkpoints / "latest").read_text() == f"step-2unet-{stopped['step']:07d}"
    verify_checkpoint(checkpoints / f"step-2unet-{stopped['step']:07d}")
    assert not list(checkpoints.glob(".tmp-*"))  # each checkpoint cut short was written again, whole
    assert get_job(job.id).attempts == 4
    assert most[job.id] == 1


# A studio that dies at a chosen point of `control.launch`: a profile hook acts as a breakpoint on
# one real function of the launch and kill -9s the process there (nothing of the studio's code is replaced).
STUDIO = """
import json, os, signal, sys
from core.training.config import build_config
from jobs import control, local, processes
function, event = {"spawn": processes.spawn, "schedule": local.schedule}[sys.argv[1]], sys.argv[2]
config = build_config({"preset": "tiny", "dataset": sys.argv[3]}, json.loads(sys.argv[4]))

def die_here(frame, what, arg):
    if frame.f_code is function.__code__ and what == event:
        os.kill(os.getpid(), signal.SIGKILL)

sys.setprofile(die_here)
control.launch(config)
"""


def studio_killed_at(function: str, event: str, demo: str, *extra: str) -> str:
    """Run a studio launching one job and kill -9 it on `event` ("call" or "return") of `function`; the job's id."""
    from jobs.records import list_jobs

    before = {j.id for j in list_jobs(limit=None)}
    studio = subprocess.run(
        [sys.executable, "-c", STUDIO, function, event, demo, json.dumps([*TINY_OVERRIDES, *extra])],
        cwd=REPO, env={**os.environ}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert studio.returncode == -signal.SIGKILL, studio.stderr[-3000:]
    (job_id,) = {j.id for j in list_jobs(limit=None)} - before
    return job_id


def test_kill_9_of_the_studio_while_its_job_is_starting_or_queued_converges(demo: str, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.settings import reset_settings
    from jobs import control
    from jobs.processes import job_alive
    from jobs.records import get_job

    monkeypatch.setenv("STUDIO_MAX_LOCAL_JOBS", "1")
    reset_settings()
    with watching_trainers(home) as most:
        # Killed after marking its job "starting", before it started the supervisor: the job must
        # not stay "starting" (holding the only slot) for ever.
        lost = studio_killed_at("spawn", "call", demo, *LONG)
        assert (get_job(lost).status, get_job(lost).pid) == ("starting", None)
        control.refresh()
        assert (get_job(lost).status, get_job(lost).failure_reason) == (
            "failed", "The studio process starting the job ended before the job's supervisor started; resume it to try again."
        )  # fmt: skip

        # Killed after starting the supervisor, before recording it: the job runs, and is known to run.
        orphan = studio_killed_at("spawn", "return", demo, *LONG)
        wait_until(lambda: get_job(orphan).status == "running", timeout=120, what="the orphaned launch to run")
        control.refresh()
        running = get_job(orphan)
        assert running.status == "running" and job_alive(running)  # its supervisor recorded itself

        # Killed while its job waits for the slot (before it even asked for one): the job stays queued ...
        waiting = studio_killed_at("schedule", "call", demo, *LONG)
        control.refresh()
        assert get_job(waiting).status == "queued"
        # ... until the slot frees, here by the running job's supervisor vanishing (kill -9): a refresh starts it.
        os.kill(running.pid, signal.SIGKILL)
        wait_until(lambda: not processes_of(orphan), timeout=120, what="the killed supervisor's trainer to end")
        control.refresh()
        assert get_job(orphan).status == "failed"
        assert get_job(waiting).status in ("starting", "running")
        wait_until(lambda: waiting in trainers(home), timeout=120, what="the queued job's trainer")

        control.stop(waiting)
        wait_until(lambda: get_job(waiting).status == "stopped", timeout=240, what="the job to stop")
        wait_until(lambda: not processes_of(waiting), timeout=60, what="the stopped job's processes to end")
    assert most["*"] == 1  # one slot: never two trainers, whichever process died
    assert not processes_of(lost) and not processes_of(orphan)


EVALUATOR = """
import os, signal, sys
from core.evaluation.request import EvalRequest
from jobs import control, processes

def die_here(frame, what, arg):
    if frame.f_code is processes.spawn.__code__ and what == "call":
        os.kill(os.getpid(), signal.SIGKILL)

sys.setprofile(die_here)
control.evaluate_run(EvalRequest(model=sys.argv[1], dataset=sys.argv[2]))
"""


def test_kill_9_of_the_studio_while_an_evaluation_is_starting(demo: str, home: Path) -> None:
    from core.tracking import create_run
    from jobs import control
    from jobs.records import get_job, list_jobs

    run_id = create_run("evaluated")
    studio = subprocess.run([sys.executable, "-c", EVALUATOR, run_id, demo], cwd=REPO, env={**os.environ}, capture_output=True, text=True, timeout=300)
    assert studio.returncode == -signal.SIGKILL, studio.stderr[-3000:]
    (job,) = list_jobs(limit=None)
    assert get_job(job.id).status == "starting"
    control.refresh()  # the row's process (the studio submitting it) is gone: it must not stay "starting"
    ended = get_job(job.id)
    assert (ended.status, ended.failure_reason) == ("failed", "The evaluation process ended unexpectedly.")
