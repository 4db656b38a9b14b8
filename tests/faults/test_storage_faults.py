"""S3 that throttles, answers 500 or drops the connection, and a disk that fills up while saving.

The S3 faults are injected through botocore's own event system (`before-send`), in front of moto's
real server, so botocore's real retry handler decides what is retried; the full disk is a real
write limit (RLIMIT_FSIZE) in a subprocess running the real saving code.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from core import aws
from core.datasets.ingest import import_dataset
from core.datasets.push import push_version
from core.datasets.versions import MANIFEST, list_versions, materialize, version_prefix
from core.errors import StudioError
from core.settings import get_settings, reset_settings
from tests.servers import moto_bucket
from tests.test_datasets import sidecar_folder

BUCKET = "studio-faults"
ROOT = Path(__file__).resolve().parents[2]
SLOWDOWN = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
REAL_SESSION = aws.session
INTERNAL = b"<Error><Code>InternalError</Code><Message>We encountered an internal error.</Message></Error>"


class Faults:
    """Answers chosen requests of an operation with an S3 error (or a dropped connection) instead of sending them."""

    def __init__(self, operation: str, fail: Callable[[int], int | str | None]) -> None:
        self.operation, self.fail, self.calls = operation, fail, 0

    def __call__(self, request: Any, **_: Any) -> Any:
        from botocore.awsrequest import AWSResponse
        from botocore.exceptions import ConnectionClosedError
        from urllib3 import HTTPResponse

        self.calls += 1
        fault = self.fail(self.calls)
        if fault is None:
            return None  # sent to moto
        if fault == "drop":
            raise ConnectionClosedError(endpoint_url=request.url)
        body = SLOWDOWN if fault == 503 else INTERNAL
        raw = HTTPResponse(body=io.BytesIO(body), status=int(fault), preload_content=False)
        return AWSResponse(request.url, int(fault), {"Content-Type": "application/xml"}, raw)


@pytest.fixture
def s3(home: Path, moto_url: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    return moto_bucket(monkeypatch, moto_url, BUCKET)


def inject(monkeypatch: pytest.MonkeyPatch, faults: Faults) -> None:
    """Every session the studio makes (core.aws.session, the one factory) carries the faults."""

    def with_faults(region: str | None = None):  # type: ignore[no-untyped-def]
        found = REAL_SESSION(region)
        found.events.register(f"before-send.s3.{faults.operation}", faults)
        return found

    monkeypatch.setattr(aws, "session", with_faults)


def test_the_session_factory_retries_with_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_MAX_ATTEMPTS", raising=False)
    monkeypatch.delenv("AWS_RETRY_MODE", raising=False)
    retries = aws.client("s3", "us-east-1").meta.config.retries
    assert retries["mode"] == "standard" and retries["total_max_attempts"] == aws.MAX_ATTEMPTS
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    assert aws.client("s3", "us-east-1").meta.config.retries["total_max_attempts"] == 1


def test_push_retries_throttling_500s_and_drops(s3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    version = import_dataset("cats", folder=sidecar_folder(tmp_path / "src", 3)).version
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "4")
    faults = Faults("PutObject", lambda n: {1: 503, 2: 500, 3: "drop"}.get(n))
    inject(monkeypatch, faults)
    result = push_version(f"cats@{version}", bucket=BUCKET)
    assert (result.uploaded, result.skipped) == (4, 0) and faults.calls == 4 + 3
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert f"datasets/cats/{version}/{MANIFEST}" in keys and len(keys) == 4


def test_a_push_that_keeps_failing_says_so_and_resumes(s3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    version = import_dataset("dogs", folder=sidecar_folder(tmp_path / "src", 4)).version
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    inject(monkeypatch, Faults("PutObject", lambda n: 503 if n >= 3 else None))  # two images arrive, then S3 throttles
    with pytest.raises(StudioError) as raised:
        push_version(f"dogs@{version}", bucket=BUCKET)
    assert (
        str(raised.value)
        == "S3 kept failing (SlowDown: Please reduce your request rate.) after 2 attempts; try again later."
    )
    arrived = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="datasets/dogs/").get("Contents", [])}
    assert len(arrived) == 2 and f"datasets/dogs/{version}/{MANIFEST}" not in arrived  # no manifest: not a whole push

    inject(monkeypatch, Faults("PutObject", lambda n: "drop"))  # now the network drops every request
    with pytest.raises(StudioError) as raised:
        push_version(f"dogs@{version}", bucket=BUCKET)
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    assert str(raised.value).startswith(f"S3 at {endpoint}/{BUCKET}/datasets/dogs/") and str(raised.value).endswith(
        " kept dropping the connection; check the network and try again."
    )

    monkeypatch.setattr(aws, "session", REAL_SESSION)  # S3 answers again
    again = push_version(f"dogs@{version}", bucket=BUCKET)
    assert (again.uploaded, again.skipped) == (3, 2)
    assert len(s3.list_objects_v2(Bucket=BUCKET, Prefix="datasets/dogs/")["Contents"]) == 5


def test_fetching_a_version_retries_then_says_one_sentence(s3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("STUDIO_S3_BUCKET", BUCKET)
    reset_settings()
    version = import_dataset("birds", folder=sidecar_folder(tmp_path / "src", 3)).version
    cache = get_settings().cache_dir / version_prefix("birds", version)

    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    inject(monkeypatch, Faults("GetObject", lambda n: 500 if n >= 3 else None))  # the manifest and one image, then 500s
    with pytest.raises(StudioError) as raised:
        materialize("birds", version)
    assert (
        str(raised.value)
        == "S3 kept failing (InternalError: We encountered an internal error.) after 2 attempts; try again later."
    )
    assert not (cache / MANIFEST).exists()  # the folder is not taken for whole
    assert not [p for p in cache.rglob("*") if p.is_file() and not p.name.endswith(".png")]  # no partial downloads

    faults = Faults("GetObject", lambda n: {1: 503, 2: "drop"}.get(n))
    inject(monkeypatch, faults)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "3")
    folder = materialize("birds", version)
    assert (folder / MANIFEST).is_file() and len(list((folder / "images").iterdir())) == 3
    assert faults.calls == 1 + 2 + 2  # the manifest after two retries, then only the two images that were missing


# ---- a full disk ------------------------------------------------------------------------------------

LIMITED = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG, as a full disk fails with ENOSPC
{setup}
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
from core.errors import StudioError
try:
{body}
except StudioError as exc:
    print(exc)
    sys.exit(3)
"""


def run_limited(
    setup: str, body: str, limit: int, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    script = LIMITED.format(
        setup=textwrap.dedent(setup), limit=limit, body=textwrap.indent(textwrap.dedent(body), "    ")
    )
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_full_disk_while_saving_a_checkpoint(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    setup = f"""
        import torch
        from pathlib import Path
        from core.training.checkpoint import save_checkpoint, save_state
        root = Path({str(root)!r})
        def write(big):
            return lambda folder: save_state(folder / "state.pt", {{"w": torch.zeros(big)}})
        save_checkpoint(root, "step-2unet-0000001", write(16), keep=3)
    """
    done = run_limited(setup, 'save_checkpoint(root, "step-2unet-0000002", write(1 << 20), keep=3)', limit=1 << 20)
    assert done.returncode == 3, done.stderr
    assert done.stdout.strip() == f"No space left on the disk holding {root} while saving step-2unet-0000002."
    from core.training.checkpoint import latest_checkpoint

    assert latest_checkpoint(root) == root / "step-2unet-0000001"  # the previous one intact, and still the latest
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-2unet-0000001"]  # no temp left behind


def test_a_full_disk_while_saving_a_dataset_version(home: Path, tmp_path: Path) -> None:
    first = import_dataset("cats", folder=sidecar_folder(tmp_path / "src", 2)).version
    setup = """
        import os
        from core.datasets.versions import NewItem, write_version
        items = [NewItem(os.urandom(4 << 20), "png", f"a cat {i}", 8, 8) for i in range(3)]
    """
    # a limit per file: the catalog (SQLite, far smaller) still writes; each 4 MiB image cannot
    done = run_limited(setup, "write_version('cats', items)", limit=2 << 20, env={"STUDIO_HOME": str(home)})
    assert done.returncode == 3, done.stderr
    objects = get_settings().objects_dir / "datasets" / "cats"
    said = done.stdout.strip()
    assert said.startswith(f"No space left on the disk holding {objects} while saving ") and said.count(".") == 1, said
    assert [p.name for p in objects.iterdir()] == [first]  # the previous version intact, no temp left behind
    assert [v.version for v in list_versions("cats")] == [first]
    assert len(list((materialize("cats", first) / "images").iterdir())) == 2


# ---- the tracking store down when a job ends -----------------------------------------------------


def test_a_finished_jobs_leftovers_are_retried_with_backoff(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from core.db import new_id
    from core.tracking import create_run, get_tracking
    from core.tracking.outbox import NEXT_ATTEMPT, Outbox
    from jobs.local import refresh
    from jobs.records import create_job
    from jobs.relay import metrics_file
    from tests.servers import free_port

    run_id = create_run("leftovers")  # in the studio's own SQLite store
    job = create_job(
        new_id(),
        "train",
        "local",
        {"checkpoint_dir": str(tmp_path / "checkpoints")},
        "train.log",
        status="succeeded",
        mlflow_run_id=run_id,
    )
    metrics = metrics_file(job)
    metrics.parent.mkdir(parents=True)
    metrics.write_text(
        "".join(json.dumps({"step": i, "time": 1.0 + i, "loss": 1.0 / (i + 1)}) + "\n" for i in range(3))
    )
    outbox = Outbox(metrics)
    outbox.add("params", params={"lr": "0.1"})  # what the training and its supervisor could not send
    backoff = outbox.folder / NEXT_ATTEMPT

    monkeypatch.setenv("STUDIO_MLFLOW_URI", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    reset_settings()
    refresh()
    first = json.loads(backoff.read_text())
    assert first["wait"] == 10 and outbox.pending()
    refresh()  # the next page refresh, inside the window: no second try
    assert json.loads(backoff.read_text()) == first

    monkeypatch.delenv("STUDIO_MLFLOW_URI")  # the store answers again
    reset_settings()
    refresh()
    client = get_tracking().client
    assert client.get_metric_history(run_id, "loss") == [] and outbox.pending()  # still inside the window
    backoff.write_text(json.dumps({**first, "at": 0}))  # the window has passed
    refresh()
    refresh()
    assert [m.value for m in client.get_metric_history(run_id, "loss")] == [1.0, 0.5, 1.0 / 3]  # landed once
    assert client.get_run(run_id).data.params == {"lr": "0.1"}
    assert not outbox.pending() and not backoff.exists()
