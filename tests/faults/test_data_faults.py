"""Data faults from the hardening issue: a tampered S3 store, zip entries too large for memory (and
headers that lie), two imports of one name, names with a newline, Finder's zip litter, captions
and file names that are Markdown, and empty image files."""

from __future__ import annotations

import io
import json
import struct
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.datasets import ingest_workers, safety
from core.datasets.draft import draft_dir, drafts_dir, load_draft
from core.datasets.export import export_folder
from core.datasets.ingest import import_dataset
from core.datasets.versions import (
    ManifestItem,
    check_name,
    list_versions,
    manifest_bytes,
    materialize,
    read_manifest,
    version_id,
)
from core.errors import StudioError
from tests.servers import moto_bucket
from tests.test_datasets import make_zip, png, sidecar_folder


def bmp(seed: int, side: int = 32) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (side, side, 3), dtype=np.uint8)).save(buf, "BMP")
    return buf.getvalue()


# ---- 1. an S3 store's manifests are checked, downloads stay in their folder --------------------

BUCKET = "studio-store"


@pytest.fixture
def s3_store(home: Path, moto_url: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """The studio's object store in an S3 bucket (moto's server); returns the boto3 client."""
    from core.settings import reset_settings

    client = moto_bucket(monkeypatch, moto_url, BUCKET)
    monkeypatch.setenv("STUDIO_S3_BUCKET", BUCKET)
    reset_settings()
    yield client
    reset_settings()


def add_version_row(name: str, version: str) -> None:
    """A catalog row for a version someone else wrote into the shared bucket."""
    from sqlalchemy import select

    from core.db import Dataset, DatasetVersion, session_scope

    with session_scope() as session:
        dataset = session.scalar(select(Dataset).where(Dataset.name == name))
        session.add(DatasetVersion(dataset_id=dataset.id, version=version, n_items=1, stats={}))


def test_s3_downloads_stay_inside_their_folder(s3_store, home: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    version = import_dataset("cats", folder=sidecar_folder(tmp_path / "src", 2)).version
    # a key beside the version's files that climbs out of the download folder
    s3_store.put_object(Bucket=BUCKET, Key=f"datasets/cats/{version}/../../../../../escaped.txt", Body=b"x")
    folder = materialize("cats", version)
    assert sorted(p.name for p in (folder / "images").iterdir()) == sorted(Path(m.file).name for m in read_manifest("cats", version))
    assert not list(home.parent.rglob("escaped.txt"))


def test_s3_manifest_entries_and_hash_are_checked(s3_store, home: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    version = import_dataset("cats", folder=sidecar_folder(tmp_path / "src", 2)).version
    prefix = f"datasets/cats/{version}"

    # a manifest entry naming a local file, in a version whose id matches its manifest
    secret = tmp_path / "secret.txt"
    secret.write_text("private")
    good = read_manifest("cats", version)[0]
    evil = manifest_bytes([ManifestItem(**{**good.model_dump(), "file": str(secret)})])
    evil_version = version_id(evil)
    s3_store.put_object(Bucket=BUCKET, Key=f"datasets/cats/{evil_version}/manifest.jsonl", Body=evil)
    add_version_row("cats", evil_version)
    with pytest.raises(StudioError, match="names the file .* not an image of the version"):
        export_folder(f"cats@{evil_version}", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    from core.datasets.push import push_version

    s3_store.create_bucket(Bucket="elsewhere")
    with pytest.raises(StudioError, match="not an image of the version"):
        push_version(f"cats@{evil_version}", bucket="elsewhere")
    assert "Contents" not in s3_store.list_objects_v2(Bucket="elsewhere")

    # a manifest changed in place no longer matches its version id
    s3_store.put_object(Bucket=BUCKET, Key=f"{prefix}/manifest.jsonl", Body=evil)
    with pytest.raises(StudioError, match="does not match its version id"):
        read_manifest("cats", version)


# ---- 2. one zip entry too large for memory ------------------------------------------------------


def test_one_entry_over_the_limit_is_refused(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.settings import reset_settings

    monkeypatch.setenv("STUDIO_IMPORT_MAX_ENTRY_BYTES", "1000000")
    reset_settings()
    big = np.random.default_rng(0).integers(0, 255, 1_500_000, dtype=np.uint8).tobytes()  # incompressible: no bomb
    archive = make_zip(tmp_path / "big.zip", {"a.png": png(0), "a.txt": b"a cat", "huge.bin": big})
    with pytest.raises(StudioError, match="huge.bin.*limit for one file.*STUDIO_IMPORT_MAX_ENTRY_BYTES"):
        import_dataset("big", zip_path=archive)
    assert not draft_dir("big").exists() and not list_versions("big")


def understated(path: Path, name: str, data: bytes, claimed: int) -> Path:
    """A stored zip entry whose local and central headers both say it holds `claimed` bytes."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(name, data)
    raw = bytearray(path.read_bytes())
    local, central = raw.find(b"PK\x03\x04"), raw.find(b"PK\x01\x02")
    struct.pack_into("<I", raw, local + 22, claimed)
    struct.pack_into("<I", raw, central + 24, claimed)
    path.write_bytes(bytes(raw))
    return path


def test_a_header_that_understates_the_size_is_refused(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.settings import reset_settings

    monkeypatch.setenv("STUDIO_IMPORT_MAX_ENTRY_BYTES", "1000000")
    reset_settings()
    archive = understated(tmp_path / "liar.zip", "liar.bin", b"\0" * 3_000_000, claimed=1000)
    with zipfile.ZipFile(archive) as zf:
        assert zf.getinfo("liar.bin").file_size == 1000  # the header passes the limit
    with pytest.raises(StudioError, match="liar.bin"):
        import_dataset("liar", zip_path=archive)
    assert not draft_dir("liar").exists()
    assert not list(drafts_dir().glob(".tmp-*"))

    # whatever a header (or a growing file) claims, reading stops at the limit
    entry = safety.Entry(safety.PurePosixPath("liar.bin"), lambda: io.BytesIO(b"\0" * 5000), size=10, limit=1000)
    with pytest.raises(StudioError, match="limit for one file"):
        entry.read()
    with pytest.raises(StudioError, match="limit for one file"):
        entry.copy_to(tmp_path / "copy")
    assert not (tmp_path / "copy").exists()


def test_large_entries_are_streamed_not_read_whole(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ingest_workers, "STREAM_ABOVE", 2000)
    read_whole: list[str] = []
    original_read = safety.Entry.read
    monkeypatch.setattr(safety.Entry, "read", lambda self: (read_whole.append(str(self.path)), original_read(self))[1])
    kept, converted = png(1, (64, 64)), bmp(2)
    archive = make_zip(
        tmp_path / "s.zip",
        {"kept.png": kept, "kept.txt": b"kept", "conv.bmp": converted, "conv.txt": b"converted", "copy.png": kept, "copy.txt": b"copy",
         "notes.bin": b"\1" * 5000, "bad.png": b"\2" * 5000},
    )
    report = import_dataset("streamed", zip_path=archive)
    assert report.imported == 3 and {p.file for p in report.problems} == {"notes.bin", "bad.png"}
    assert not [p for p in read_whole if p.endswith((".png", ".bmp", ".bin"))]  # only the small captions
    folder = draft_dir("streamed")
    assert not list(folder.glob(".incoming-*"))
    assert (folder / "quarantine" / "notes.bin").read_bytes() == b"\1" * 5000
    draft = load_draft("streamed")
    by_id = draft.by_id()
    assert (folder / by_id["kept.png"].file).read_bytes() == kept
    assert (folder / by_id["conv.bmp"].original).read_bytes() == converted


# ---- 3. two imports of one name ------------------------------------------------------------------


def test_two_concurrent_imports_of_one_name(home: Path, tmp_path: Path) -> None:
    first_src = sidecar_folder(tmp_path / "first", 3)
    second_src = sidecar_folder(tmp_path / "second", 2)
    inside, release = threading.Event(), threading.Event()
    outcome: dict[str, object] = {}

    def slow_progress(_fraction: float, _text: str) -> None:
        if not inside.is_set():
            inside.set()
            release.wait(60)

    def first() -> None:
        try:
            outcome["first"] = import_dataset("cats", folder=first_src, progress=slow_progress)
        except StudioError as exc:
            outcome["first"] = exc

    thread = threading.Thread(target=first)
    thread.start()
    assert inside.wait(60)
    try:
        with pytest.raises(StudioError, match="being imported"):
            import_dataset("cats", folder=second_src)
    finally:
        release.set()
        thread.join(120)
    assert not isinstance(outcome["first"], StudioError), outcome["first"]
    assert len(load_draft("cats").items) == 3 and len(list_versions("cats")) == 1

    # afterwards: refused with one sentence; the draft and its unsaved edits stay as they were
    from core.datasets.draft import set_captions

    draft = load_draft("cats")
    set_captions(draft, {"cat_0.png": "an unsaved edit"})
    with pytest.raises(StudioError, match="already exists"):
        import_dataset("cats", folder=second_src)
    assert load_draft("cats").by_id()["cat_0.png"].caption == "an unsaved edit"
    assert not list(drafts_dir().glob(".tmp-*"))


# ---- 4. names ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cats\n", "cats\n\n", "\ncats"])
def test_a_name_with_a_newline_is_refused(home: Path, name: str) -> None:
    with pytest.raises(StudioError, match="is not valid"):
        check_name(name)
    with pytest.raises(StudioError, match="is not valid"):
        import_dataset(name, uploads=[("a.png", png(0))])
    assert not list(drafts_dir().glob("*")) if drafts_dir().exists() else True


# ---- 5. a zip made by macOS Finder ---------------------------------------------------------------


def test_finder_zip_keeps_splits_and_labels_and_ignores_litter(home: Path, tmp_path: Path) -> None:
    entries = {
        "pets/train/cat/c0.png": png(0), "pets/train/cat/c0.txt": b"a cat",
        "pets/train/dog/d0.png": png(1), "pets/train/dog/d0.txt": b"a dog",
        "pets/val/cat/c1.png": png(2), "pets/val/cat/c1.txt": b"another cat",
        "pets/.DS_Store": b"\0\0\0\1Bud1", "pets/train/Thumbs.db": b"\xd0\xcf", "pets/train/cat/._c0.png": b"\0\5\26\7",
        "__MACOSX/pets/train/cat/._c0.png": b"\0\5\26\7", "__MACOSX/pets/._.DS_Store": b"\0\5\26\7",
    }
    report = import_dataset("pets", zip_path=make_zip(tmp_path / "finder.zip", entries))
    assert report.problems == [] and report.quarantined == 0 and report.imported == 3
    items = {m.source: m for m in read_manifest("pets", report.version)}
    assert {k: v.split for k, v in items.items()} == {"train/cat/c0.png": "train", "train/dog/d0.png": "train", "val/cat/c1.png": "val"}
    assert {i.id: i.label for i in load_draft("pets").items} == {"train/cat/c0.png": "cat", "train/dog/d0.png": "dog", "val/cat/c1.png": "cat"}


# ---- 6. captions and file names are text, not Markdown --------------------------------------------

EVIL = "![x](http://evil/x.png)"


def rendered(markdown: str) -> str:
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark").render(markdown)


def test_captions_and_file_names_are_shown_literally(home: Path) -> None:
    from streamlit.testing.v1 import AppTest

    import_dataset("pics", uploads=[("[a](evil).png", png(0)), ("[a](evil).txt", EVIL.encode())])
    at = AppTest.from_file(str(Path(__file__).parent.parent / "datasets_page_app.py"), default_timeout=60).run()
    at.selectbox(key="dataset_choice").set_value("pics")
    at = at.run()
    assert not at.exception, at.exception
    shown = [c.value for c in at.caption if "http" in c.value]
    assert shown, [c.value for c in at.caption]
    for value in shown:
        html = rendered(value)
        assert "<img" not in html and "<a " not in html and EVIL in html
    details = next(b for b in at.button if b.label == "Details")
    assert "<a " not in rendered(details.help) and "[a](evil).png" in rendered(details.help)


def test_run_links_escape_the_run_id() -> None:
    from datetime import datetime

    from core.tracking.runs import RunRow
    from pages.runs import run_table

    row = RunRow(run_id='x" onmouseover="alert(1)', name="<b>n</b>", status="FINISHED", dataset="d", preset="p", stage="s",
                 backend="local", steps=1, last_loss=None, val_loss=None, started=datetime(2026, 1, 1), duration_s=None)
    html = run_table([row])
    assert 'onmouseover="' not in html and "<b>n</b>" not in html
    assert 'href="?run=x%22%20onmouseover%3D%22alert%281%29"' in html


# ---- 7. empty files ------------------------------------------------------------------------------


def test_an_empty_image_is_reported_as_empty(home: Path) -> None:
    report = import_dataset("empty", uploads=[("empty.jpg", b""), ("cat.png", png(0)), ("cat.txt", b"a cat")])
    assert [(p.file, p.reason) for p in report.problems] == [("empty.jpg", "empty file (0 bytes)")]
    assert json.loads(json.dumps(report.model_dump()))["quarantined"] == 1
