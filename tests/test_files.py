"""core.files: atomic files, staged folders and zips. A failed write leaves neither a partial
destination nor a temporary; concurrent writers of one destination each leave a complete one."""

from __future__ import annotations

import threading
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from core.files import atomic_path, atomic_write_bytes, atomic_write_text, staged_folder, zip_folder
from core.storage import LocalStore


class Interrupted(Exception):
    pass


def run_together(workers: list[Callable[[], None]]) -> None:
    """Start every worker at the same moment (a barrier) and re-raise the first failure."""
    barrier = threading.Barrier(len(workers))
    errors: list[BaseException] = []

    def run(work: Callable[[], None]) -> None:
        barrier.wait()
        try:
            work()
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def test_atomic_write_replaces_the_file_and_leaves_nothing_else(tmp_path: Path) -> None:
    dest = tmp_path / "sub" / "config.yaml"
    atomic_write_text(dest, "a: 1\n")
    atomic_write_text(dest, "a: 2\n")
    assert dest.read_text() == "a: 2\n"
    assert [p.name for p in dest.parent.iterdir()] == ["config.yaml"]


def test_a_write_that_fails_midway_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    dest = tmp_path / "model.onnx"
    dest.write_bytes(b"old")
    with pytest.raises(Interrupted), atomic_path(dest) as tmp:
        with tmp.open("wb") as f:
            f.write(b"half of the new")
        raise Interrupted
    assert dest.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_a_failed_first_write_leaves_no_file_at_all(tmp_path: Path) -> None:
    with pytest.raises(Interrupted), atomic_path(tmp_path / "out.zip") as tmp:
        tmp.write_bytes(b"PK")
        raise Interrupted
    assert list(tmp_path.iterdir()) == []


def test_concurrent_writers_of_one_file_each_leave_a_complete_file(tmp_path: Path) -> None:
    dest = tmp_path / "metrics.jsonl"
    payloads = [bytes([i]) * 2_000_000 for i in range(6)]
    complete_reads: list[bool] = []
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            if dest.exists():
                complete_reads.append(dest.read_bytes() in payloads)

    watcher = threading.Thread(target=reader)
    watcher.start()
    try:
        run_together([lambda p=p: [atomic_write_bytes(dest, p) for _ in range(3)] for p in payloads])
    finally:
        done.set()
        watcher.join()
    assert dest.read_bytes() in payloads
    assert all(complete_reads)  # a reader never saw a mixed or partial file
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]


def test_a_staged_folder_replaces_the_old_one_only_on_success(tmp_path: Path) -> None:
    dest = tmp_path / "model"
    with staged_folder(dest) as folder:
        (folder / "unet").mkdir()
        (folder / "unet" / "weights.safetensors").write_bytes(b"v1")
    with pytest.raises(Interrupted), staged_folder(dest) as folder:
        (folder / "model_index.json").write_text("{}")
        raise Interrupted
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*")) == ["unet", "unet/weights.safetensors"]
    with staged_folder(dest) as folder:
        (folder / "model_index.json").write_text("{}")
    assert [p.name for p in dest.iterdir()] == ["model_index.json"]  # replaced, not merged
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_a_staging_folder_begun_elsewhere_is_renamed_into_place(tmp_path: Path) -> None:
    staging = tmp_path / ".tmp-step-1"
    (staging / "deepspeed").mkdir(parents=True)  # what other ranks wrote first
    with staged_folder(tmp_path / "step-1", staging) as folder:
        (folder / "state.pt").write_bytes(b"state")
    assert sorted(p.name for p in (tmp_path / "step-1").iterdir()) == ["deepspeed", "state.pt"]
    assert not staging.exists()


def test_concurrent_writers_of_one_folder_each_leave_a_complete_folder(tmp_path: Path) -> None:
    dest = tmp_path / "evaluator"

    def writer(n: int) -> Callable[[], None]:
        def work() -> None:
            for _ in range(5):
                with staged_folder(dest) as folder:
                    for part in ("model.safetensors", "evaluator.json", "train_evaluator.py"):
                        (folder / part).write_text(f"writer {n}")

        return work

    run_together([writer(n) for n in range(6)])
    texts = {p.name: p.read_text() for p in dest.iterdir()}
    assert sorted(texts) == ["evaluator.json", "model.safetensors", "train_evaluator.py"]
    assert len(set(texts.values())) == 1  # all three files from the same writer
    assert [p.name for p in tmp_path.iterdir()] == ["evaluator"]


def test_zip_folder_holds_every_file_under_its_prefix(tmp_path: Path) -> None:
    folder = tmp_path / "export"
    (folder / "unet").mkdir(parents=True)
    (folder / "unet" / "model.onnx").write_bytes(b"onnx")
    (folder / "model_index.json").write_text("{}")
    dest = zip_folder(folder, tmp_path / "zips" / "export.zip", prefix="abc123")
    with zipfile.ZipFile(dest) as archive:
        assert sorted(archive.namelist()) == ["abc123/model_index.json", "abc123/unet/model.onnx"]
        assert archive.read("abc123/unet/model.onnx") == b"onnx"
    assert [p.name for p in dest.parent.iterdir()] == ["export.zip"]


def test_the_local_store_does_not_list_what_is_still_being_written(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "objects")
    store.put_bytes("datasets/cats/v1/manifest.jsonl", b"{}")
    with staged_folder(store.path("datasets/cats/v2")) as folder:
        (folder / "manifest.jsonl").write_text("{}")
        assert list(store.list("datasets/cats")) == ["datasets/cats/v1/manifest.jsonl"]
    assert list(store.list("datasets/cats")) == ["datasets/cats/v1/manifest.jsonl", "datasets/cats/v2/manifest.jsonl"]
