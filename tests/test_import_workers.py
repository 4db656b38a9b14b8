"""How an import runs. A large one reads, checks and stores its images in worker processes: the
draft they make is the one the studio's own process makes, byte for byte, from a zip or a folder,
and a read error, in a worker or in the studio, ends the import in one sentence with nothing left
behind. The garbage collector pauses during an import and is on again after it."""

from __future__ import annotations

import os
import signal
import sys
import time
import types
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.datasets import ingest_workers, safety
from core.datasets.draft import DRAFT_FILE, draft_dir, drafts_dir, load_draft
from core.datasets.ingest import import_dataset
from core.errors import StudioError
from core.settings import reset_settings
from tests.test_datasets import assert_nothing_left, encode, make_zip, png

pytestmark = pytest.mark.xdist_group("import-workers")


def upload_files() -> dict[str, bytes]:
    """Every path through one image: kept as uploaded, converted (original kept), shared bytes,
    corrupt, too small, an upper-case extension, captions from sidecars, split and class folders."""
    files: dict[str, bytes] = {}
    for i in range(24):
        folder = f"shapes/{'val' if i % 6 == 0 else 'train'}/{'circle' if i % 2 else 'square'}"
        files[f"{folder}/img_{i:02d}.png"] = png(i)
        files[f"{folder}/img_{i:02d}.txt"] = f"a shape, number {i}".encode()
    base = Image.fromarray(np.random.default_rng(7).integers(0, 255, (40, 64, 3), dtype=np.uint8))
    files["shapes/train/square/copy.png"] = png(1)  # the same bytes as img_01
    files["shapes/train/square/copy.txt"] = b"the same image again"
    files["shapes/train/circle/PHOTO.JPG"] = encode(base, "JPEG")
    files["shapes/train/circle/PHOTO.txt"] = b"a photo from a camera"
    files["shapes/train/circle/old.bmp"] = encode(base, "BMP")
    files["shapes/train/circle/broken.png"] = b"\x89PNG\r\n\x1a\n but nothing after"
    files["shapes/train/circle/tiny.png"] = png(3, (4, 4))
    return files


def imported(name: str, workers: int, monkeypatch: pytest.MonkeyPatch, **source: Path) -> tuple[dict, dict[str, bytes]]:  # type: ignore[type-arg]
    monkeypatch.setenv("STUDIO_IMPORT_WORKERS", str(workers))
    reset_settings()
    import_dataset(name, **source)  # type: ignore[arg-type]
    folder = draft_dir(name)
    files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file() and p.name != DRAFT_FILE}
    return load_draft(name).model_dump(exclude={"name"}), files


def test_worker_processes_store_what_the_studio_process_stores(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ingest_workers, "PARALLEL_ABOVE", 1)  # this small upload goes to the workers too
    files = upload_files()
    folder = tmp_path / "folder"
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    archive = tmp_path / "shapes.zip"
    with warnings.catch_warnings(), zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        warnings.simplefilter("ignore")  # zipfile warns of the repeated name below
        for name, data in files.items():
            zf.writestr(name, data)
        zf.writestr("shapes/train/square/img_02.png", png(99))  # a repeated name: a worker must read the first one

    with safety.zip_entries(archive) as entries:
        assert ingest_workers.worker_count(2, entries) == 2
        assert ingest_workers.worker_count(0, entries) == min(os.cpu_count() or 1, ingest_workers.MAX_WORKERS)
    assert ingest_workers.worker_count(2, safety.upload_entries([("a.png", png(0))])) == 1  # bytes in memory are read here
    for source in ({"zip_path": archive}, {"folder": folder}):
        kind = next(iter(source))
        one = imported(f"one-{kind}", 1, monkeypatch, **source)
        assert imported(f"workers-{kind}", 2, monkeypatch, **source) == one, kind
    draft, stored = one
    items = {item["id"]: item for item in draft["items"]}
    assert items["train/circle/PHOTO.JPG"]["caption"] == "a photo from a camera"
    assert items["train/circle/old.bmp"]["original"]
    assert items["train/square/copy.png"]["sha256"] == items["train/circle/img_01.png"]["sha256"]
    assert {p["file"] for p in draft["quarantine"]} == {"train/circle/broken.png", "train/circle/tiny.png"}
    assert "quarantine/train/circle/broken.png" in stored


def test_workers_never_run_the_main_module(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under Streamlit (and AppTest) `__main__` is the page script; multiprocessing would run it
    again in every worker. Here it is a script that must not run: the import still succeeds."""
    script = tmp_path / "page.py"
    script.write_text("raise SystemExit('the main module ran in a worker process')\n")
    page = types.ModuleType("__main__")
    page.__file__ = str(script)
    monkeypatch.setitem(sys.modules, "__main__", page)
    monkeypatch.setattr(ingest_workers, "PARALLEL_ABOVE", 1)
    monkeypatch.setenv("STUDIO_IMPORT_WORKERS", "2")
    reset_settings()
    archive = make_zip(tmp_path / "a.zip", {f"img_{i}.png": png(i) for i in range(8)})
    assert import_dataset("main-module", zip_path=archive).imported == 8
    assert sys.modules["__main__"] is page


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended meanwhile
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_a_killed_worker_ends_the_import_in_one_sentence_and_leaves_nothing(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """kill -9 of the workers (the out-of-memory killer, say) while they read the images."""
    monkeypatch.setattr(ingest_workers, "PARALLEL_ABOVE", 1)
    monkeypatch.setenv("STUDIO_IMPORT_WORKERS", "2")
    reset_settings()
    archive = make_zip(tmp_path / "a.zip", {f"img_{i:03d}.png": png(i) for i in range(600)})

    def kill_the_workers(fraction: float, text: str) -> None:
        if text.startswith("Read 0/"):  # the workers have just started: the fork server's children
            servers = [pid for pid in children(os.getpid()) if b"multiprocessing.forkserver" in Path(f"/proc/{pid}/cmdline").read_bytes()]
            for worker in [w for server in servers for w in children(server)]:
                os.kill(worker, signal.SIGKILL)

    with pytest.raises(StudioError, match=r"^A process reading the images stopped unexpectedly; nothing was imported\. .*STUDIO_IMPORT_WORKERS=1"):
        import_dataset("killed", zip_path=archive, progress=kill_the_workers)
    assert_nothing_left("killed")
    assert import_dataset("killed", zip_path=archive).imported == 600  # the next import starts new workers


@pytest.mark.parametrize("corrupt", ["img_33.png", "img_33.txt"])  # read by a worker; read by the studio while workers run
def test_a_corrupt_entry_ends_the_import_in_one_sentence_and_leaves_nothing(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, corrupt: str) -> None:
    monkeypatch.setattr(ingest_workers, "PARALLEL_ABOVE", 1)
    monkeypatch.setenv("STUDIO_IMPORT_WORKERS", "2")
    reset_settings()
    archive = tmp_path / "corrupt.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for i in range(60):
            zf.writestr(f"img_{i:02d}.png", png(i))
            zf.writestr(f"img_{i:02d}.txt", f"caption number {i} of a long enough text".encode())
        target = zf.getinfo(corrupt)
    data = bytearray(archive.read_bytes())
    data[target.header_offset + 30 + len(target.filename) + 20] ^= 0xFF  # inside its bytes: the CRC no longer matches
    archive.write_bytes(bytes(data))

    with pytest.raises(StudioError, match=rf"^The zip entry '{corrupt}' is corrupt .*; the upload was refused\.$"):
        import_dataset("corrupt", zip_path=archive)
    assert_nothing_left("corrupt")
    time.sleep(1)  # no worker was still writing when the import ended
    assert not [p for p in drafts_dir().iterdir() if p.suffix != ".lock"]


@pytest.mark.browser
def test_a_large_upload_in_the_browser_is_read_by_worker_processes(tmp_path: Path) -> None:
    """The studio's Streamlit process starts the workers (from its fork server) as the CLI does."""
    from playwright.sync_api import expect, sync_playwright

    from tests.browser import launch, studio_server, upload_zip

    count = ingest_workers.PARALLEL_ABOVE + 20
    archive = tmp_path / "many.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(count):
            zf.writestr(f"many/img_{i:03d}.png", png(i, (24, 24)))
            zf.writestr(f"many/img_{i:03d}.txt", f"noise, sample {i}")
    with studio_server(tmp_path / "home", env={"STUDIO_IMPORT_WORKERS": "2"}) as url, sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        upload_zip(page, url, "many", archive)
        expect(page.get_by_text(f"Imported {count} images")).to_be_visible(timeout=120_000)
        expect(page.get_by_text("0 quarantined")).to_be_visible()
        browser.close()


def test_an_import_leaves_the_garbage_collector_as_it_found_it(home: Path, tmp_path: Path) -> None:
    """The collector is paused while an import runs (bench/ingest.py), and on again after it, failed or not."""
    import gc

    import_dataset("on", zip_path=make_zip(tmp_path / "ok.zip", {"a.png": png(1), "a.txt": b"a caption"}))
    assert gc.isenabled()
    with pytest.raises(StudioError, match="No usable image"):
        import_dataset("failed", zip_path=make_zip(tmp_path / "bad.zip", {"a.txt": b"a caption, no image"}))
    assert gc.isenabled()
    gc.disable()  # a process that turned it off itself keeps it off
    try:
        import_dataset("off", zip_path=make_zip(tmp_path / "ok2.zip", {"b.png": png(2), "b.txt": b"another"}))
        assert not gc.isenabled()
    finally:
        gc.enable()
