"""Datasets in core: import from every caption source and image kind, every hostile input refused
or reported, curation with undo, duplicates, splits, versions and diffs, export and re-import,
the demo digits through the same code, and the `studio dataset` CLI."""

from __future__ import annotations

import csv
import io
import json
import stat
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.datasets import curate, dedupe, stats
from core.datasets.draft import caption_problems, draft_dir, drafts_dir, load_draft, save_version, set_captions, undo
from core.datasets.export import export_folder, export_zip
from core.datasets.ingest import import_dataset
from core.datasets.versions import diff_versions, list_datasets, list_versions, read_manifest
from core.errors import StudioError


def png(seed: int, size: tuple[int, int] = (48, 48), mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).convert(mode).save(buf, "PNG")
    return buf.getvalue()


def encode(im: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def make_zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


def sidecar_folder(root: Path, n: int = 4) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (root / f"cat_{i}.png").write_bytes(png(i))
        (root / f"cat_{i}.txt").write_text(f"photo of a cat, number {i}")
    return root


def assert_nothing_left(name: str) -> None:
    assert name not in [d.name for d in list_datasets()]
    assert not draft_dir(name).exists()
    assert not list(drafts_dir().glob(".tmp-*"))


# ---- caption sources and image kinds ----------------------------------------------------------


def test_sidecar_import_makes_a_version(home: Path, tmp_path: Path) -> None:
    report = import_dataset("cats", folder=sidecar_folder(tmp_path / "src"))
    assert report.version and report.imported == 4 and report.caption_sources == {".txt sidecar": 4}
    manifest = read_manifest("cats", report.version)
    assert sorted(m.caption for m in manifest) == [f"photo of a cat, number {i}" for i in range(4)]
    assert {m.source for m in manifest} == {f"cat_{i}.png" for i in range(4)}


def test_a_sidecar_captions_its_image_whatever_the_case_of_the_extension(home: Path, tmp_path: Path) -> None:
    # Cameras write IMG_0001.JPG; kohya-style sidecars are named by the stem alone.
    zipped = make_zip(tmp_path / "camera.zip", {"IMG_0001.JPG": encode(Image.new("RGB", (64, 64), "red"), "JPEG"), "IMG_0001.txt": b"a red square", "IMG_0002.Png": png(2), "IMG_0002.txt": b"noise"})
    report = import_dataset("camera", zip_path=zipped)
    assert report.caption_sources == {".txt sidecar": 2}
    assert sorted(m.caption for m in read_manifest("camera", report.version)) == ["a red square", "noise"]


@pytest.mark.parametrize("kind", ["metadata.jsonl", "csv", "parquet", "file names"])
def test_caption_tables_and_file_names(home: Path, tmp_path: Path, kind: str) -> None:
    entries = {f"data/img_{i}.png": png(i) for i in range(3)}
    rows = [{"file_name": f"img_{i}.png", "text": f"caption {i}"} for i in range(3)]
    if kind == "metadata.jsonl":
        entries["data/metadata.jsonl"] = "\n".join(json.dumps(r) for r in rows).encode()
    elif kind == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, ["file_name", "text"])
        writer.writeheader()
        writer.writerows(rows)
        entries["data/captions.csv"] = buf.getvalue().encode()
    elif kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        sink = io.BytesIO()
        pq.write_table(pa.Table.from_pylist([{"image": r["file_name"], "caption": r["text"]} for r in rows]), sink)
        entries["data/captions.parquet"] = sink.getvalue()
    report = import_dataset("tables", zip_path=make_zip(tmp_path / "t.zip", entries))
    captions = sorted(m.caption for m in read_manifest("tables", report.version))
    assert captions == (["img"] * 3 if kind == "file names" else [f"caption {i}" for i in range(3)])
    assert report.needs_caption_fix == 0


def test_image_kinds_become_rgb_with_originals_kept(home: Path, tmp_path: Path) -> None:
    base = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 64, 3), dtype=np.uint8))
    rotated = base.copy()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    frames = [Image.new("P", (32, 32), i) for i in range(3)]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:])
    files = {
        "jpeg.jpg": encode(base, "JPEG"),
        "webp.webp": encode(base, "WEBP"),
        "bmp.bmp": encode(base, "BMP"),
        "tiff.tif": encode(base, "TIFF"),
        "gif.gif": gif.getvalue(),
        "cmyk.jpg": encode(base.convert("CMYK"), "JPEG"),
        "palette.png": encode(base.convert("P"), "PNG"),
        "alpha.png": encode(Image.new("RGBA", (32, 32), (255, 0, 0, 0)), "PNG"),
        "sixteen.png": encode(Image.fromarray(np.full((32, 32), 65535, dtype=np.uint16)), "PNG"),
        "exif.jpg": encode(rotated, "JPEG", exif=exif),
    }
    for name in list(files):
        files[name.rsplit(".", 1)[0] + ".txt"] = b"an image"
    report = import_dataset("kinds", zip_path=make_zip(tmp_path / "k.zip", files))
    assert report.imported == 10, report.problems
    draft = load_draft("kinds")
    by_id = draft.by_id()
    for item in draft.items:
        with Image.open(draft_dir("kinds") / item.file) as im:
            assert im.mode == "RGB", item.id
    assert by_id["exif.jpg"].width == 40 and by_id["exif.jpg"].height == 64  # orientation applied
    with Image.open(draft_dir("kinds") / by_id["alpha.png"].file) as im:
        assert im.getpixel((0, 0)) == (255, 255, 255)  # transparency on white
    with Image.open(draft_dir("kinds") / by_id["sixteen.png"].file) as im:
        assert im.getpixel((0, 0)) == (255, 255, 255)
    converted = {i.id for i in draft.items if i.original}
    assert converted == {"bmp.bmp", "tiff.tif", "gif.gif", "cmyk.jpg", "palette.png", "alpha.png", "sixteen.png", "exif.jpg"}
    assert all((draft_dir("kinds") / by_id[c].original).is_file() for c in converted)


# ---- validation: every problem reported, never dropped ------------------------------------------


def test_validation_report_and_quarantine(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = png(1)
    truncated = encode(Image.fromarray(np.random.default_rng(2).integers(0, 255, (64, 64, 3), dtype=np.uint8)), "JPEG")[:600]
    entries = {
        "good.png": good,
        "good.txt": b"a fine picture",
        "corrupt.png": b"\x89PNG\r\n\x1a\nbroken",
        "corrupt.txt": b"x",
        "truncated.jpg": truncated,
        "truncated.txt": b"x",
        "tiny.png": png(3, (8, 8)),
        "tiny.txt": b"x",
        "bomb.png": png(4, (64, 64)),
        "bomb.txt": b"x",
        "nocaption.png": png(5),
        "empty.png": png(6),
        "empty.txt": b"   ",
        "long.png": png(7),
        "long.txt": " ".join(["word"] * 90).encode(),
        "latin.png": png(8),
        "latin.txt": "caf\xe9 au lait".encode("latin-1"),
        "twin.png": png(9),
        "twin.jpg": encode(Image.new("RGB", (32, 32)), "JPEG"),
        "twin.txt": b"which one?",
        "notes.pdf": b"%PDF",
    }
    import PIL.Image

    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 3000)  # 64×64 is over the limit, 48×48 under it
    archive = make_zip(tmp_path / "v.zip", entries)
    with zipfile.ZipFile(archive, "a") as zf, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zf.writestr("good.png", png(10))  # a second entry with the same name
    report = import_dataset("checked", zip_path=archive)
    reasons = {p.file: p.reason for p in report.problems}
    assert "corrupt" in reasons["corrupt.png"] or "Pillow" in reasons["corrupt.png"]
    assert "truncated" in reasons["truncated.jpg"]
    assert "too small" in reasons["tiny.png"]
    assert "bomb" in reasons["bomb.png"]
    assert "missing or empty" in reasons["nocaption.png"] and "missing or empty" in reasons["empty.png"]
    assert "tokens" in reasons["long.png"]
    assert "not UTF-8" in reasons["latin.png"]
    assert "duplicate file name" in reasons["twin.png"] + reasons.get("twin.jpg", "")
    assert any("duplicate file name" in r and "good.png" in r for r in reasons.values())
    assert "unsupported" in reasons["notes.pdf"]
    manifest = read_manifest("checked", report.version)
    assert {m.source for m in manifest} == {"good.png", "twin.jpg"} or {m.source for m in manifest} == {"good.png", "twin.png"}
    draft = load_draft("checked")
    assert all((draft_dir("checked") / "quarantine" / p.file).is_file() for p in draft.quarantine)

    # fixing a caption takes the image out of quarantine; deleting empties the quarantine
    set_captions(draft, {"latin.png": "a cup of café au lait", "long.png": "a short caption"})
    assert not caption_problems(draft.by_id()["latin.png"])
    version = save_version(draft, note="fixed")
    assert {"latin.png", "long.png"} <= {m.source for m in read_manifest("checked", version)}
    from core.datasets.draft import delete_quarantined

    assert delete_quarantined(draft, {"notes.pdf"}) == 1 and not (draft_dir("checked") / "quarantine" / "notes.pdf").exists()


# ---- hostile archives: refused, nothing written, nothing half-created ------------------------------


def hostile_zip(path: Path, kind: str) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ok.png", png(0))
        zf.writestr("ok.txt", "fine")
        if kind == "traversal":
            zf.writestr("../../escaped.png", png(1))
        elif kind == "absolute":
            zf.writestr("/tmp/absolute.png", png(1))
        elif kind == "symlink":
            info = zipfile.ZipInfo("link.png")
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
        elif kind == "bomb":
            zf.writestr("zeros.png", b"\0" * (20 << 20))
    return path


@pytest.mark.parametrize("kind", ["traversal", "absolute", "symlink", "bomb"])
def test_hostile_zip_is_refused(home: Path, tmp_path: Path, kind: str) -> None:
    archive = hostile_zip(tmp_path / "evil.zip", kind)
    with pytest.raises(StudioError, match="outside|absolute|link|bomb"):
        import_dataset("evil", zip_path=archive)
    assert_nothing_left("evil")
    assert not (tmp_path / "escaped.png").exists() and not Path("/tmp/absolute.png").exists()


@pytest.mark.parametrize(("setting", "value"), [("STUDIO_IMPORT_MAX_FILES", "2"), ("STUDIO_IMPORT_MAX_BYTES", "1000")])
def test_import_limits_are_configurable(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setting: str, value: str) -> None:
    from core.settings import reset_settings

    monkeypatch.setenv(setting, value)
    reset_settings()
    with pytest.raises(StudioError, match=setting):
        import_dataset("big", folder=sidecar_folder(tmp_path / "src"))
    assert_nothing_left("big")


def test_upload_names_cannot_escape(home: Path) -> None:
    with pytest.raises(StudioError, match="outside"):
        import_dataset("up", uploads=[("a.png", png(0)), ("../b.png", png(1))])
    assert_nothing_left("up")


def test_existing_name_and_empty_upload_are_refused(home: Path, tmp_path: Path) -> None:
    import_dataset("cats", folder=sidecar_folder(tmp_path / "src", 1))
    with pytest.raises(StudioError, match="already exists"):
        import_dataset("cats", folder=tmp_path / "src")
    with pytest.raises(StudioError, match="No usable image"):
        import_dataset("junk", uploads=[("readme.md", b"hello")])
    assert_nothing_left("junk")


# ---- curation -------------------------------------------------------------------------------------


def test_bulk_edits_preview_undo_and_filters(home: Path, tmp_path: Path) -> None:
    import_dataset("cats", folder=sidecar_folder(tmp_path / "src"))
    draft = load_draft("cats")
    replace = curate.BulkEdit(operation="replace", find=r"number (\d)", text=r"#\1")
    assert len(curate.preview(draft.items, replace)) == 4
    assert curate.apply_bulk(draft, replace) == 4
    assert curate.apply_bulk(draft, curate.BulkEdit(operation="prepend", text="sks")) == 4
    assert curate.apply_bulk(draft, curate.BulkEdit(operation="prepend", text="sks")) == 0  # already there
    reloaded = load_draft("cats")  # the draft survives a reload
    assert reloaded.by_id()["cat_1.png"].caption == "sks, photo of a cat, #1"
    assert curate.preview(reloaded.items, curate.BulkEdit(operation="lowercase")) == {}
    assert curate.preview(reloaded.items, curate.BulkEdit(operation="from_filename"))["cat_2.png"] == "cat"
    with pytest.raises(StudioError, match="regular expression"):
        curate.preview(reloaded.items, curate.BulkEdit(operation="replace", find="(", text=""))
    assert undo(reloaded) == "Prepend a trigger word"
    assert load_draft("cats").by_id()["cat_1.png"].caption == "photo of a cat, #1"
    assert [i.id for i in curate.filter_items(reloaded.items, curate.Filter(text="#3"))] == ["cat_3.png"]
    assert len(curate.filter_items(reloaded.items, curate.Filter(tag="photo of a cat"))) == 4
    assert curate.filter_items(reloaded.items, curate.Filter(min_side=100)) == []


def test_stratified_seeded_split(home: Path, tmp_path: Path) -> None:
    entries = {f"{cls}/{i}.png": png(i + 10 * c) for c, cls in enumerate(["cat", "dog"]) for i in range(10)}
    entries.update({f"{k[:-4]}.txt": b"a pet" for k in list(entries)})
    import_dataset("pets", zip_path=make_zip(tmp_path / "p.zip", entries))
    draft = load_draft("pets")
    splits = curate.assign_split(draft.items, 0.2, seed=3)
    assert splits == curate.assign_split(draft.items, 0.2, seed=3)
    for cls in ("cat", "dog"):
        assert sum(v == "val" for k, v in splits.items() if k.startswith(cls)) == 2
    curate.resplit(draft, 0.2, 3)
    balance = stats.class_balance(draft.items)
    assert dict(zip(balance["class"], balance["count"], strict=True)) == {"cat": 10, "dog": 10}
    frame = stats.item_frame(draft.items)
    assert (frame["split"] == "val").sum() == 4 and frame["tokens"].min() > 2


def test_near_duplicates_cluster_and_keep_one(home: Path, tmp_path: Path) -> None:
    base = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    entries = {
        "a.png": encode(Image.fromarray(base), "PNG"),
        "a_copy.png": encode(Image.fromarray(base), "PNG"),
        "a_bright.png": encode(Image.fromarray(np.clip(base.astype(int) + 6, 0, 255).astype(np.uint8)), "PNG"),
        "a_small.jpg": encode(Image.fromarray(base).resize((48, 48)), "JPEG", quality=90),
        "other.png": png(99, (64, 64)),
    }
    entries.update({f"{k.rsplit('.', 1)[0]}.txt": b"noise" for k in list(entries)})
    import_dataset("dups", zip_path=make_zip(tmp_path / "d.zip", entries))
    draft = load_draft("dups")
    assert [sorted(i.id for i in c) for c in dedupe.exact_clusters(draft.items)] == [["a.png", "a_copy.png"]]
    near = dedupe.near_clusters(draft.items, threshold=6)
    assert [sorted(i.id for i in c) for c in near] == [["a.png", "a_bright.png", "a_copy.png", "a_small.jpg"]]
    assert dedupe.keep_one_per_cluster(draft, near) == 3
    assert sorted(i.id for i in draft.items) == ["a.png", "other.png"]
    undo(draft)
    assert len(draft.items) == 5
    hashes = np.random.default_rng(1).integers(0, 2**63, 3000, dtype=np.uint64)
    assert dedupe.near_pairs(np.concatenate([hashes, hashes[:5]]), 0)[:5] == [(i, 3000 + i) for i in range(5)]


def test_perceptual_hash_is_imagehash_phash(tmp_path: Path) -> None:
    import imagehash

    from core.datasets.images import perceptual_hash, prepare_image

    rng = np.random.default_rng(5)
    for _ in range(20):  # on phash's own 32×32 greyscale input the bits are the library's
        thumb = Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8), "L")
        assert perceptual_hash(thumb) == str(imagehash.phash(thumb))
    # a JPEG hashed from its reduced-scale decode agrees with the library on the full-size image
    from PIL import ImageDraw

    photo = Image.new("RGB", (512, 384), (30, 60, 90))
    for i in range(6):
        x, y = rng.integers(0, 400, 2)
        ImageDraw.Draw(photo).ellipse((int(x), int(y), int(x) + 100, int(y) + 80), fill=(40 * i, 255 - 40 * i, 90))
    raw = encode(photo, "JPEG", quality=90)
    stored, data = prepare_image(raw, Path("p.jpg"), 16)  # type: ignore[misc]
    assert data == raw and (stored.width, stored.height) == (512, 384) and not stored.original
    assert imagehash.hex_to_hash(stored.phash) - imagehash.phash(Image.open(io.BytesIO(raw))) <= 2


def test_zip_is_read_in_place_and_the_version_shares_the_draft_files(home: Path, tmp_path: Path) -> None:
    entries = {f"pics/{i}.png": png(i) for i in range(3)} | {f"pics/{i}.txt": b"a picture" for i in range(3)}
    report = import_dataset("linked", zip_path=make_zip(tmp_path / "l.zip", entries))
    from core.datasets.versions import materialize

    version = materialize("linked", report.version)
    for item in read_manifest("linked", report.version):
        assert (version / item.file).stat().st_ino == (draft_dir("linked") / item.file).stat().st_ino
    assert sorted(p.name for p in draft_dir("linked").iterdir()) == ["draft.json", "images", "originals", "quarantine"]


# ---- versions, export, demo, CLI ------------------------------------------------------------------


def test_versions_diff_export_and_reimport(home: Path, tmp_path: Path) -> None:
    first = import_dataset("cats", folder=sidecar_folder(tmp_path / "src")).version
    draft = load_draft("cats")
    set_captions(draft, {"cat_0.png": "a sleeping cat"})
    from core.datasets.draft import remove_items

    remove_items(draft, {"cat_3.png"})
    second = save_version(draft, note="edited")
    assert second != first and [v.version for v in list_versions("cats")] == [second, first]
    assert list_versions("cats")[0].parent == first
    diff = diff_versions("cats", first, second)
    assert [i.source for i in diff.removed] == ["cat_3.png"] and diff.added == []
    assert [(a.caption, b.caption) for a, b in diff.caption_changed] == [("photo of a cat, number 0", "a sleeping cat")]

    archive = export_zip(f"cats@{second}", tmp_path / "out" / "cats.zip")
    names = zipfile.ZipFile(archive).namelist()
    assert "cats/train/metadata.jsonl" in names and sum(n.endswith(".png") for n in names) == 3
    folder = export_folder(f"cats@{second}", tmp_path / "out" / "folder")
    assert len((folder / "train" / "metadata.jsonl").read_text().splitlines()) == 3
    back = import_dataset("cats-again", zip_path=archive)
    assert sorted(m.caption for m in read_manifest("cats-again", back.version)) == sorted(m.caption for m in read_manifest("cats", second))
    assert back.caption_sources == {"metadata.jsonl": 3}


def test_demo_digits_through_the_same_import(demo: str, tmp_path: Path) -> None:
    name, version = demo.split("@")
    archive = export_zip(demo, tmp_path / "digits.zip")
    report = import_dataset("digits-imported", zip_path=archive)
    assert report.imported == 1797 and report.quarantined == 0
    original = read_manifest(name, version)
    imported = read_manifest("digits-imported", report.version)
    assert sorted((m.sha256, m.caption, m.split) for m in imported) == sorted((m.sha256, m.caption, m.split) for m in original)
    # a draft opens on a dataset that was written without one (the demo)
    assert len(load_draft(name).items) == 1797


def test_cli(home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from app.cli import main

    src = sidecar_folder(tmp_path / "src")
    assert main(["dataset", "import", str(src), "--name", "cats", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)["version"]
    set_captions(load_draft("cats"), {"cat_1.png": "a cat"})
    assert main(["dataset", "version", "cats", "--note", "n", "--json"]) == 0
    second = json.loads(capsys.readouterr().out)["version"]
    assert main(["dataset", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"name": "cats", "versions": [second, first], "items": 4}]
    assert main(["dataset", "show", "cats", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["draft"]["items"] == 4
    assert main(["dataset", "diff", f"cats@{first}", second, "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["caption_changed"]) == 1
    assert main(["dataset", "export", "cats", str(tmp_path / "c.zip"), "--json"]) == 0
    assert Path(json.loads(capsys.readouterr().out)["out"]).is_file()
    assert main(["dataset", "import", str(tmp_path / "missing.zip"), "--name", "x"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_an_import_without_a_split_gets_the_default_one(home: Path, tmp_path: Path) -> None:
    """Validation loss and evaluation need held-out images: an upload that names no split gets a
    seeded 10% one, stratified by class; one with its own `val/` folder keeps it."""
    report = import_dataset("plain", folder=sidecar_folder(tmp_path / "plain", 20))
    assert report.val_seeded and report.val_images == 2
    manifest = read_manifest("plain", report.version)
    assert sum(m.split == "val" for m in manifest) == 2
    again = import_dataset("plain-again", folder=sidecar_folder(tmp_path / "again", 20))
    assert sorted(m.source for m in read_manifest("plain-again", again.version) if m.split == "val") == sorted(
        m.source for m in manifest if m.split == "val"
    )  # seeded: the same files every time

    classes = tmp_path / "classes"
    for label in ("cat", "dog"):
        sidecar_folder(classes / label, 10)
    by_class = import_dataset("classes", folder=classes)
    held = [m for m in read_manifest("classes", by_class.version) if m.split == "val"]
    assert sorted(m.source.split("/")[0] for m in held) == ["cat", "dog"]  # one of each class

    own = tmp_path / "own"
    sidecar_folder(own / "train", 12)
    sidecar_folder(own / "val", 3)
    report = import_dataset("own", folder=own)
    assert not report.val_seeded and report.val_images == 3
