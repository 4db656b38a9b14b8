"""Team mode end to end: the catalog on PostgreSQL, objects in S3 (moto), and a real `mlflow server`
with a PostgreSQL backend store and proxied artifacts in the same S3 bucket. A tiny local training
launched as the Train page does lands its run, metrics, sample images and model on the server (the
files in the bucket under the server's prefix), and the Runs page, the registry and the Playground's
model list read them back through the server."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.conftest import TINY_OVERRIDES, new_postgres_database
from tests.servers import free_port, mlflow_server, moto_bucket

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("team")]

BUCKET = "studio-team"


def test_a_training_on_the_team_stack(
    home: Path,
    postgres_server: str,
    moto_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    from core.datasets.demo import demo_items
    from core.datasets.versions import write_version
    from core.db import get_engine, reset_engines
    from core.inference.models import list_models
    from core.settings import reset_settings
    from core.tracking import artifacts, get_tracking, registry, samples
    from core.tracking.runs import RunQuery, list_runs, run_detail
    from core.training.config import build_config
    from jobs import control
    from jobs.records import FINAL

    s3 = moto_bucket(monkeypatch, moto_url, BUCKET)  # the studio's boto3 (and the server's) talk to moto
    catalog, store = new_postgres_database(postgres_server), new_postgres_database(postgres_server)
    port = free_port()
    server_env = {"MLFLOW_S3_ENDPOINT_URL": moto_url}
    with mlflow_server(tmp_path / "mlflow", port, store, f"s3://{BUCKET}/mlflow", server_env):
        monkeypatch.setenv("STUDIO_DATABASE_URL", catalog)
        monkeypatch.setenv("STUDIO_MLFLOW_URI", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("STUDIO_S3_BUCKET", BUCKET)
        reset_settings()
        reset_engines()
        request.addfinalizer(reset_engines)
        assert get_engine().dialect.name == "postgresql"

        items = demo_items()
        mini = [i for i in items if i.split == "train"][:64] + [i for i in items if i.split == "val"][:16]
        ref = "digits-mini@" + write_version("digits-mini", mini, note="80 demo digits")
        assert s3.list_objects_v2(Bucket=BUCKET, Prefix="datasets/digits-mini/")["KeyCount"] > 0
        job = control.launch(build_config({"preset": "tiny", "dataset": ref}, TINY_OVERRIDES))
        deadline = time.monotonic() + 600
        while (status := control.poll(job.id).status) not in FINAL:
            assert time.monotonic() < deadline, f"job {job.id} did not finish"
            time.sleep(1.0)
        assert status == "succeeded", control.logs(job.id, 40)
        run_id = control.poll(job.id).mlflow_run_id

        # The run and its metrics, as the Runs page lists and opens them.
        rows = list_runs(RunQuery(status=["FINISHED"])).rows
        assert [r.run_id for r in rows] == [run_id] and rows[0].dataset == ref
        detail = run_detail(run_id)
        assert detail.row.last_loss is not None and detail.params["unet.steps"] == "6"
        assert "model/" in detail.artifacts and "model/model_index.json" in dict(detail.model_files)

        # Every artifact is an object in the bucket under the server's prefix, none on this machine.
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="mlflow/")
        keys = {o["Key"] for page in pages for o in page.get("Contents", [])}
        run_keys = {k.split(f"/{run_id}/artifacts/", 1)[1]: k for k in keys if f"/{run_id}/artifacts/" in k}
        assert {path for path, _ in detail.model_files} <= run_keys.keys()
        assert not (home / "mlartifacts").exists()
        index = samples.image_index(run_id)
        sample = index["samples"][max(index["samples"])]
        assert sample in run_keys
        local = artifacts.artifact_file(run_id, sample)
        assert local.read_bytes() == s3.get_object(Bucket=BUCKET, Key=run_keys[sample])["Body"].read()

        # The model comes back through the server, whole.
        folder = artifacts.model_folder(run_id)
        downloaded = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
        assert {f"model/{p}" for p in downloaded} == {path for path, _ in detail.model_files}

        # Promotion in the server's registry, and the Playground's model list.
        version = registry.promote(run_id, "team-digits")
        assert [(v.version, v.run_id) for v in registry.registered_versions(run_id)] == [(str(version), run_id)]
        assert get_tracking().client.get_model_version_by_alias("team-digits", "champion").run_id == run_id
        assert [m.id for m in list_models()] == [run_id]
