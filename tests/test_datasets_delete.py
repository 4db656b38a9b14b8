"""Deleting datasets and versions: what runs (MLflow `dataset` tags) and jobs used is kept, the rest
leaves the catalog and the store together; the CLI and the page ask for confirmation first."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.datasets.delete import delete_dataset, plan_deletion
from core.datasets.draft import draft_dir, load_draft, remove_items, save_version, set_captions
from core.datasets.versions import find_version, list_datasets, list_versions, materialize, read_manifest, version_prefix
from core.db import Job, session_scope
from core.settings import get_settings
from core.storage import get_store
from core.tracking import create_run
from tests.test_datasets import import_dataset, sidecar_folder


def four_versions(tmp_path: Path) -> list[str]:
    """cats@v1..v4, oldest first; v1 is named by a run's tag, v2 is what a run tagged only `cats`
    resolved to (it started before v3), v3 is named by a job row, v4 is used by nothing."""
    v1 = import_dataset("cats", folder=sidecar_folder(tmp_path / "src")).version
    create_run("explicit", {"dataset": f"cats@{v1}"})
    draft = load_draft("cats")
    set_captions(draft, {"cat_0.png": "a sleeping cat"})
    v2 = save_version(draft)
    create_run("bare-name", {"dataset": "cats"})
    remove_items(draft, {"cat_3.png"})
    v3 = save_version(draft)
    with session_scope() as session:
        session.add(Job(id="job-v3", dataset=f"cats@{v3}"))
    set_captions(draft, {"cat_1.png": "a cat on a mat"})
    v4 = save_version(draft)
    return [v1, v2, v3, v4]


def version_folder(name: str, version: str) -> Path:
    return get_settings().objects_dir / version_prefix(name, version)


def test_used_versions_are_kept_and_the_rest_goes_in_one_transaction(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    v1, v2, v3, v4 = four_versions(tmp_path)
    plan = plan_deletion("cats")
    assert plan.remove == [v4] and set(plan.keep) == {v1, v2, v3}
    assert [(u.kind, u.name) for u in plan.keep[v1]] == [("run", "explicit")]
    assert [(u.kind, u.name) for u in plan.keep[v2]] == [("run", "bare-name")]
    assert [(u.kind, u.id) for u in plan.keep[v3]] == [("job", "job-v3")]
    assert "cats@" + v1 + " kept: used by run explicit" in plan.summary()
    one = plan_deletion(f"cats@{v1}")
    assert one.remove == [] and list(one.keep) == [v1]

    # a failure half-way leaves catalog and store as they were
    import core.datasets.delete as deletion

    calls = {"n": 0}
    real_mkdtemp = deletion.tempfile.mkdtemp

    def failing_mkdtemp(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk went away")
        return real_mkdtemp(*args, **kwargs)

    import_dataset("dogs", folder=sidecar_folder(tmp_path / "dogs", 2))
    dogs = load_draft("dogs")
    set_captions(dogs, {"cat_0.png": "a dog"})
    dog_versions = [v.version for v in list_versions("dogs")] + [save_version(dogs)]
    monkeypatch.setattr(deletion.tempfile, "mkdtemp", failing_mkdtemp)
    with pytest.raises(OSError, match="disk went away"):
        delete_dataset("dogs")
    monkeypatch.undo()
    assert sorted(v.version for v in list_versions("dogs")) == sorted(dog_versions)
    assert all((version_folder("dogs", v) / "manifest.jsonl").is_file() for v in dog_versions)
    assert not list(version_folder("dogs", dog_versions[0]).parent.glob(".tmp-*"))

    # the whole of cats: v4 and the draft go, the used versions stay readable
    done = delete_dataset("cats")
    assert done.remove == [v4]
    assert [v.version for v in list_versions("cats")] == [v3, v2, v1]
    assert not version_folder("cats", v4).exists() and find_version("cats", v4) is None
    assert not draft_dir("cats").exists()
    assert len(read_manifest("cats", v1)) == 4 and (materialize("cats", v3) / "manifest.jsonl").is_file()
    assert not list(version_folder("cats", v1).parent.glob(".tmp-*"))

    # a dataset no run used disappears entirely
    delete_dataset("dogs")
    assert "dogs" not in [d.name for d in list_datasets()]
    assert not list(get_store().list("datasets/dogs")) and not draft_dir("dogs").exists()


def test_cli_and_page_ask_before_deleting(home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from app.cli import main

    first = import_dataset("cats", folder=sidecar_folder(tmp_path / "cats", 2)).version
    create_run("uses-cats", {"dataset": f"cats@{first}"})
    import_dataset("birds", folder=sidecar_folder(tmp_path / "birds", 2))

    # not a terminal and no --yes: nothing happens, the sentence says why and what would
    assert main(["dataset", "delete", "birds"]) == 2
    err = capsys.readouterr().err
    assert "--yes" in err and "1 version(s) of birds removed" in err
    assert "birds" in [d.name for d in list_datasets()]
    assert main(["dataset", "delete", f"cats@{first}", "--yes", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["remove"] == [] and out["keep"][first][0]["name"] == "uses-cats"
    assert find_version("cats", first) is not None

    # the page: Delete… shows the plan, Yes deletes
    at = AppTest.from_file(str(Path(__file__).with_name("datasets_page_app.py")), default_timeout=60).run()
    at.selectbox(key="dataset_choice").set_value("birds")
    at = at.run()
    next(b for b in at.button if b.label == "🗑️ Delete…").click()
    at = at.run()
    assert any("1 version(s) of birds removed" in w.value for w in at.warning)
    assert "birds" in [d.name for d in list_datasets()]  # asking is not deleting
    next(b for b in at.button if b.label == "Yes, delete").click()
    at = at.run()
    assert not at.exception
    assert any("Deleted the dataset birds" in s.value for s in at.success)
    assert "birds" not in [d.name for d in list_datasets()]
    assert at.selectbox(key="dataset_choice").value == "cats"
