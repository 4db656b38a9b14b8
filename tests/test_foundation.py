"""Settings, catalog, object store, tracking and dataset versions: the foundation, on real components."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from core.errors import StudioError


def test_settings_read_studio_env(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.settings import get_settings, reset_settings

    monkeypatch.setenv("STUDIO_S3_BUCKET", "my-bucket")
    monkeypatch.setenv("STUDIO_DEVICE", "cpu")
    reset_settings()
    settings = get_settings()
    assert settings.s3_bucket == "my-bucket" and settings.device == "cpu"
    assert settings.catalog_url == f"sqlite:///{home.resolve() / 'catalog.db'}"
    assert settings.tracking_uri.endswith("mlflow.db")


def test_catalog_migrates_an_older_schema(tmp_path: Path) -> None:
    from core.db import migrate

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    with engine.begin() as conn:  # a jobs table from an older release, missing newer columns
        conn.execute(text("CREATE TABLE jobs (id VARCHAR(32) PRIMARY KEY, status VARCHAR(32))"))
        conn.execute(text("INSERT INTO jobs (id, status) VALUES ('old', 'succeeded')"))
    migrate(engine)
    columns = {c["name"] for c in inspect(engine).get_columns("jobs")}
    assert {"mlflow_run_id", "failure_reason", "sagemaker_job_name"} <= columns
    assert {"datasets", "dataset_versions"} <= set(inspect(engine).get_table_names())
    with engine.connect() as conn:
        assert conn.execute(text("SELECT status FROM jobs WHERE id='old'")).scalar() == "succeeded"


def test_local_store_writes_atomically_and_refuses_escapes(home: Path) -> None:
    from core.storage import LocalStore

    store = LocalStore(home / "objects")
    store.put_bytes("a/b.txt", b"hello")
    assert store.get_bytes("a/b.txt") == b"hello"
    assert list(store.list("a")) == ["a/b.txt"]
    with pytest.raises(StudioError):
        store.put_bytes("../outside.txt", b"x")
    with pytest.raises(StudioError, match="does not exist"):
        store.get_bytes("missing")


def test_tracking_uses_a_wal_sqlite_store(home: Path) -> None:
    from core.tracking import create_run, get_tracking

    run_id = create_run("first", {"dataset": "x@1"})
    tracking = get_tracking()
    assert tracking.client.get_run(run_id).data.tags["dataset"] == "x@1"
    with sqlite3.connect(home / "mlflow.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_demo_dataset_is_a_content_addressed_version(demo: str) -> None:
    from core.datasets.demo import ensure_demo_dataset
    from core.datasets.versions import manifest_bytes, materialize, read_manifest, resolve, version_id

    name, version = resolve(demo)
    assert name == "digits" and demo == f"digits@{version}"
    items = read_manifest(name, version)
    assert len(items) == 1797
    assert version_id(manifest_bytes(items)) == version  # the id is the hash of the manifest
    assert {i.caption for i in items} >= {"a handwritten digit seven", "a handwritten digit zero"}
    assert sum(i.split == "val" for i in items) == 179
    folder = materialize(name, version)
    first = items[0]
    assert (folder / first.file).is_file() and first.width == first.height == 32
    assert ensure_demo_dataset() == demo  # idempotent


def test_version_write_failure_leaves_nothing(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.datasets import versions
    from core.datasets.versions import NewItem, list_versions, write_version

    def broken_stats(items):  # fails inside the catalog transaction, after the files were stored
        raise RuntimeError("database is gone")

    monkeypatch.setattr(versions, "split_stats", broken_stats)
    with pytest.raises(RuntimeError):
        write_version("broken", [NewItem(b"\x89PNG fake", "png", "a cat", 1, 1)])
    monkeypatch.undo()
    assert not any((home / "objects" / "datasets").rglob("*.png"))
    assert list_versions("broken") == []


def test_bad_dataset_refs_are_one_sentence(home: Path) -> None:
    from core.datasets.versions import resolve

    with pytest.raises(StudioError, match="does not exist"):
        resolve("nothing")
    with pytest.raises(StudioError, match="not valid"):
        resolve("Bad Name!")


def test_version_manifest_is_jsonl(demo: str) -> None:
    from core.datasets.versions import materialize, resolve

    folder = materialize(*resolve(demo))
    line = (folder / "manifest.jsonl").read_text().splitlines()[0]
    assert set(json.loads(line)) == {"file", "sha256", "caption", "width", "height", "split", "source"}


def test_config_overrides_leave_the_recipe_untouched() -> None:
    from core.training.config import build_config
    from core.training.recipes import RECIPES

    before = repr(RECIPES)
    for name, recipe in RECIPES.items():
        config = build_config(recipe, ["vae.steps=3", "unet.lr=0.5"])
        assert (config.vae.steps, config.unet.lr) == (3, 0.5), name
    assert repr(RECIPES) == before
