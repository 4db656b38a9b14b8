"""The catalog on SQLite (the embedded default) and on PostgreSQL (team mode), with its schema
kept by Alembic: the same catalog functions on both, a pre-Alembic catalog upgraded in place with
every row kept, a newer schema refused with one sentence, and `studio db`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select, text

from core.errors import StudioError


def items(*captions: str) -> list:
    from core.datasets.versions import NewItem

    return [NewItem(data=c.encode(), ext="png", caption=c, width=8, height=8, split="val" if c.endswith("v") else "train") for c in captions]


def test_the_schema_migrations_make_is_the_models_schema(catalog: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from core.db import Base, get_engine, head_revision
    from core.migrations import VERSION_TABLE

    with get_engine().connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}), Base.metadata) == []
        assert conn.execute(text("SELECT version_num FROM studio_schema_version")).scalar() == head_revision()


def test_datasets_and_versions(catalog: str) -> None:
    from core.datasets.versions import find_version, list_datasets, list_versions, resolve, write_version

    first = write_version("cats", items("a", "b", "cv"), note="three")
    second = write_version("cats", items("a", "b", "c", "dv"), parent=first)
    assert write_version("cats", items("a", "b", "cv")) == first  # same content, same version, no new row
    write_version("dogs", items("x"))
    assert [d.name for d in list_datasets()] == ["cats", "dogs"]
    assert [v.version for v in list_versions("cats")] == [second, first]
    found = find_version("cats", second)
    assert found is not None and found.parent == first and found.n_items == 4 and found.stats == {"items": 4, "train": 3, "val": 1}
    assert find_version("cats", "0" * 12) is None
    assert resolve("cats") == ("cats", second)


def test_job_rows_transitions_and_the_queue(catalog: str) -> None:
    from jobs.records import cancel, create_job, get_job, list_jobs, move, queue, transition, update_job

    for job_id in ("j1", "j2", "j3"):
        create_job(job_id, "train", "local", {"preset": "tiny"}, "train.log", dataset="cats@1")
    assert [j.id for j in queue()] == ["j1", "j2", "j3"]
    assert [j.id for j in move("j3", -2)] == ["j3", "j1", "j2"]
    assert [j.id for j in move("j3", 5)] == ["j1", "j2", "j3"]

    assert transition("j1", ("queued",), status="running", attempts=1)
    assert not transition("j1", ("queued",), status="running")  # the other process lost the race
    running = get_job("j1")
    assert running.status == "running" and running.started_at is not None and running.config == {"preset": "tiny"}
    update_job("j1", status="succeeded", exit_code=0, pid_started=2**40)
    done = get_job("j1")
    assert done.finished_at is not None and done.pid_started == 2**40

    assert cancel("j2").status == "stopped"
    with pytest.raises(StudioError, match="only queued jobs can be cancelled"):
        cancel("j1")
    assert [j.id for j in queue()] == ["j3"]
    assert {j.id for j in list_jobs(statuses=("succeeded", "stopped"))} == {"j1", "j2"}
    with pytest.raises(StudioError, match="does not exist"):
        get_job("nope")


def test_the_pipeline_claim(catalog: str, tmp_path: Path) -> None:
    from sqlalchemy import update

    from core.db import Pipeline, PipelineStep, session_scope
    from jobs.pipeline.config import STEPS, load_pipeline_config
    from jobs.pipeline.runner import _claim, get_pipeline, pipeline_steps, prepare
    from jobs.processes import current
    from tests.test_pipeline import pipeline_yaml

    pipeline = prepare(load_pipeline_config(pipeline_yaml(tmp_path)))
    assert [s.name for s in pipeline_steps(pipeline.id)] == list(STEPS)
    assert prepare(load_pipeline_config(pipeline_yaml(tmp_path))).id == pipeline.id  # not succeeded: continued
    _claim(pipeline.id)
    me = current()
    assert (get_pipeline(pipeline.id).pid, get_pipeline(pipeline.id).pid_started) == (me.pid, me.started)
    _claim(pipeline.id)  # its own claim again

    parent = os.getppid()  # a live process that is not this one holds it
    started = int(Path(f"/proc/{parent}/stat").read_text().rsplit(") ", 1)[1].split()[19])
    with session_scope() as session:
        session.execute(update(Pipeline).where(Pipeline.id == pipeline.id).values(pid=parent, pid_started=started))
        assert session.scalar(select(func.count()).select_from(PipelineStep)) == len(STEPS)
    with pytest.raises(StudioError, match="is already running"):
        _claim(pipeline.id)


def test_a_catalog_made_before_migrations_upgrades_in_place_keeping_every_row(catalog: str) -> None:
    from core.db import Dataset, DatasetVersion, Export, Job, Pipeline, PipelineStep, get_engine, head_revision, session_scope, utcnow

    from core.migrations.baseline import metadata as before_alembic

    old = create_engine(catalog)  # the release before Alembic: create_all, no studio_schema_version
    before_alembic.create_all(old)
    with old.begin() as conn:
        now = utcnow()
        conn.execute(Dataset.__table__.insert(), [{"id": "d1", "name": "cats", "description": "old", "created_at": now}])
        conn.execute(DatasetVersion.__table__.insert(), [{"dataset_id": "d1", "version": "v1", "note": "", "n_items": 2, "stats": {"train": 2}, "created_at": now}])
        conn.execute(Job.__table__.insert(), [
            {"id": f"j{i}", "kind": "train", "backend": "local", "status": "succeeded", "config": {"i": i}, "attempts": 1, "queue_position": 0, "created_at": now}
            for i in range(5)
        ])  # fmt: skip
        conn.execute(Export.__table__.insert(), [{"id": "e1", "source": "run", "path": "/x", "fp16": False, "parity": {}, "size_bytes": 3, "created_at": now}])
        conn.execute(Pipeline.__table__.insert(), [{"id": "p1", "name": "weekly", "status": "succeeded", "config": {}, "created_at": now}])
        conn.execute(PipelineStep.__table__.insert(), [{"pipeline_id": "p1", "name": "dataset", "position": 0, "status": "succeeded", "inputs": {}, "outputs": {}, "attempts": 1}])
    assert "studio_schema_version" not in old.dialect.get_table_names(old.connect())
    old.dispose()

    with get_engine().connect() as conn:
        assert conn.execute(text("SELECT version_num FROM studio_schema_version")).scalar() == head_revision()
    with session_scope() as session:
        counts = {model.__tablename__: session.scalar(select(func.count()).select_from(model)) for model in (Dataset, DatasetVersion, Job, Export, Pipeline, PipelineStep)}
        assert counts == {"datasets": 1, "dataset_versions": 1, "jobs": 5, "exports": 1, "pipelines": 1, "pipeline_steps": 1}
        assert session.get(Job, "j3").config == {"i": 3}
        assert session.scalar(select(DatasetVersion.stats)) == {"train": 2}


def test_a_schema_newer_than_the_studio_is_refused_in_one_sentence(catalog: str, capsys: pytest.CaptureFixture) -> None:
    from app.cli import main
    from core.db import get_engine, reset_engines, session_scope

    with get_engine().begin() as conn:
        conn.execute(text("UPDATE studio_schema_version SET version_num = '0099_from_the_future'"))
    reset_engines()
    sentence = "The catalog's schema (revision 0099_from_the_future) is newer than this studio; upgrade the studio."
    with pytest.raises(StudioError) as refused, session_scope():
        pass
    assert str(refused.value) == sentence
    assert main(["db", "upgrade"]) == 2
    assert capsys.readouterr().err.strip() == f"error: {sentence}"
    assert main(["db", "current", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "newer than this studio"


def test_studio_db_upgrade_and_current(catalog: str, capsys: pytest.CaptureFixture) -> None:
    from app.cli import main
    from core.db import head_revision

    assert main(["db", "current", "--json"]) == 0
    before = json.loads(capsys.readouterr().out)
    assert before["revision"] is None and before["head"] == head_revision() and before["dialect"] == catalog.split("+")[0].split(":")[0]
    assert main(["db", "upgrade", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) | {"url": None} == {"url": None, "from": None, "to": head_revision()}
    assert main(["db", "upgrade", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["from"] == head_revision()
    assert main(["db", "current"]) == 0
    assert capsys.readouterr().out.strip().endswith(f"revision {head_revision()} (this studio's head: {head_revision()}); up to date.")


def test_processes_opening_a_new_catalog_at_once_migrate_it_once(catalog: str) -> None:
    import subprocess
    import sys

    from core.db import head_revision
    from tests.conftest import REPO

    code = "from core.db import get_engine, current_revision; c = get_engine().connect(); print(current_revision(c))"
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env={**os.environ}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=120) for p in procs]
    assert [(p.returncode, out.strip()) for p, (out, _) in zip(procs, results, strict=True)] == [(0, head_revision())] * 2, [err for _, err in results]


def test_mlflow_tables_in_the_same_database_are_not_the_catalogs(catalog: str) -> None:
    """MLflow's store keeps its own `alembic_version`; sharing a database must not read as a newer schema."""
    from core.db import get_engine, reset_engines, session_scope

    with get_engine().begin() as conn:
        conn.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)"))
        conn.execute(text("INSERT INTO alembic_version VALUES ('1b5f0d9ad7c1')"))  # an MLflow revision
    reset_engines()
    with session_scope():
        pass
