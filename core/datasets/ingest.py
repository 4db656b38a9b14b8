"""Import images and captions from a zip, a folder or uploaded files into a new dataset.

Caption sources, in the order they win: Hugging Face `imagefolder` `metadata.jsonl` (`file_name`,
`text`), CSV or Parquet tables (a file column and a caption column), kohya-style `.txt` sidecars,
and, when the upload has none of these, the file names. Images are normalised to RGB (EXIF
orientation applied, first GIF frame, alpha on white); a converted image keeps its original.
Everything is built in a temporary folder inside `drafts/` and moved into place only when the
first version is saved, so a failed import leaves nothing behind.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import shutil
import tempfile
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import imagehash
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import BaseModel

from core.datasets import safety
from core.datasets.draft import Draft, DraftItem, Problem, caption_problems, draft_dir, ensure_drafts_dir, replace_dir, save_draft, save_version
from core.datasets.versions import check_name, list_versions
from core.errors import StudioError
from core.settings import get_settings

Progress = Callable[[float, str], None]

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
KEEP_FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
READ_FORMATS = {"JPEG", "MPO", "PNG", "WEBP", "BMP", "TIFF", "GIF"}
FILE_COLUMNS = ("file_name", "filename", "file", "image", "path")
TEXT_COLUMNS = ("text", "caption", "prompt")
SPLIT_DIRS = {"train": "train", "validation": "val", "val": "val", "test": "val"}
DUPLICATE = re.compile(r"\.dup\d+(\.[^./]*)?\.duplicate$")


class ImportReport(BaseModel):
    name: str
    version: str | None
    files: int
    imported: int
    needs_caption_fix: int
    quarantined: int
    caption_sources: dict[str, int]
    problems: list[Problem]


@dataclass
class Caption:
    text: str
    source: str
    note: str = ""


class BadImage(Exception):
    """An image that cannot be used; its message is the reason shown in the report."""


def normalise(raw: bytes) -> tuple[bytes, str, Image.Image, bool]:
    """(bytes to store, extension, RGB image, converted?) of an encoded image."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(raw))
            if im.format not in READ_FORMATS:
                raise BadImage(f"unsupported image format {im.format}")
            im.seek(0)
            im.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise BadImage(f"decompression bomb: {str(exc).split(', could be')[0]} (Pillow's limit)") from None
        except UnidentifiedImageError:
            raise BadImage("not an image Pillow can read (corrupt or unsupported)") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise BadImage(f"corrupt or truncated image ({exc})") from None
    fmt = im.format
    converted = fmt not in KEEP_FORMATS or getattr(im, "n_frames", 1) > 1
    if im.getexif().get(0x0112, 1) != 1:
        im = ImageOps.exif_transpose(im)
        converted = True
    if im.mode != "RGB":
        im = to_rgb(im)
        converted = True
    if not converted:
        return raw, KEEP_FORMATS[fmt], im, False
    buffer = io.BytesIO()
    im.save(buffer, format="PNG")
    return buffer.getvalue(), "png", im, True


def to_rgb(im: Image.Image) -> Image.Image:
    """Palette, CMYK, 16-bit, greyscale and alpha images as 8-bit RGB (transparency on white)."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
        return Image.fromarray((arr / top * 255.0).clip(0, 255).astype(np.uint8)).convert("RGB")
    if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return im.convert("RGB")


def read_text(path: Path) -> tuple[str, str]:
    """(text, note): a caption file that is not UTF-8 is read as Latin-1 and noted."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig").strip(), ""
    except UnicodeDecodeError:
        return raw.decode("latin-1").strip(), "caption file is not UTF-8"


def table_captions(path: Path, base: Path) -> dict[str, Caption]:
    """Captions from metadata.jsonl, CSV or Parquet, keyed by the image path relative to `base`."""
    if path.suffix == ".jsonl":
        rows = []
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    elif path.suffix == ".csv":
        with path.open(encoding="utf-8", errors="replace", newline="") as f:
            rows = list(csv.DictReader(f))
    else:
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
    if not rows:
        return {}
    file_col = next((c for c in FILE_COLUMNS if c in rows[0]), None)
    text_col = next((c for c in TEXT_COLUMNS if c in rows[0]), None)
    if file_col is None or text_col is None:
        return {}
    folder = path.parent.relative_to(base)
    source = "metadata.jsonl" if path.name == "metadata.jsonl" else path.suffix.lstrip(".").upper()
    captions = {}
    for row in rows:
        if row.get(file_col) is None:
            continue
        rel = (folder / str(row[file_col]).replace("\\", "/")).as_posix()
        captions[str(PurePosixPath(rel))] = Caption(str(row.get(text_col) or "").strip(), source)
    return captions


def filename_caption(rel: PurePosixPath) -> str:
    return re.sub(r"[_\-]+", " ", re.sub(r"\d+$", "", rel.stem)).strip()


def label_and_split(rel: PurePosixPath) -> tuple[str, str]:
    parents = list(rel.parent.parts)
    split = "train"
    if parents and parents[0].lower() in SPLIT_DIRS:
        split = SPLIT_DIRS[parents.pop(0).lower()]
    return (parents[-1] if parents else ""), split


def collect_captions(root: Path, files: list[Path]) -> dict[str, Caption]:
    captions: dict[str, Caption] = {}
    for path in files:
        if path.name == "metadata.jsonl" or path.suffix.lower() in (".csv", ".parquet"):
            try:
                captions.update(table_captions(path, root))
            except Exception as exc:  # a broken table is reported through the images it leaves captionless
                raise StudioError(f"The caption table {path.relative_to(root)} could not be read: {exc}") from None
    for path in files:
        if path.suffix.lower() == ".txt":
            for ext in IMAGE_EXTS:
                key = path.relative_to(root).with_suffix(ext).as_posix()
                if key not in captions:
                    text, note = read_text(path)
                    captions[key] = Caption(text, ".txt sidecar", note)
    return captions


def ingest_tree(root: Path, name: str, dest: Path, progress: Progress | None = None) -> Draft:
    """Read every file under `root` into a draft written to `dest` (images/, originals/, quarantine/)."""
    settings = get_settings()
    files = sorted(p for p in root.rglob("*") if p.is_file())
    captions = collect_captions(root, files)
    any_caption_source = bool(captions)
    for sub in ("images", "originals", "quarantine"):
        (dest / sub).mkdir(parents=True, exist_ok=True)
    items: list[DraftItem] = []
    problems: list[Problem] = []
    sources: Counter[str] = Counter()
    stems: dict[str, str] = {}

    def quarantine(path: Path, display: str, reason: str) -> None:
        problems.append(Problem(file=display, reason=reason))
        target = dest / "quarantine" / display
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(path, target)

    images = [p for p in files if p.suffix.lower() in IMAGE_EXTS or p.name.endswith(".duplicate")]
    image_set = set(images)
    others = [p for p in files if p not in image_set]
    for path in others:
        if path.suffix.lower() not in (".txt", ".csv", ".parquet", ".jsonl"):
            quarantine(path, path.relative_to(root).as_posix(), f"unsupported file type {path.suffix or '(none)'}")

    for i, path in enumerate(images):
        if progress and i % 25 == 0:
            progress(i / max(len(images), 1), f"Read {i}/{len(images)} images")
        rel = PurePosixPath(path.relative_to(root).as_posix())
        if DUPLICATE.search(rel.name):
            display = DUPLICATE.sub(r"\1", rel.as_posix())
            quarantine(path, rel.as_posix(), f"duplicate file name: {display} appears more than once")
            continue
        stem = rel.with_suffix("").as_posix()
        if stem in stems:
            quarantine(path, rel.as_posix(), f"duplicate file name: {stems[stem]} has the same name, so the caption is ambiguous")
            continue
        stems[stem] = rel.as_posix()
        raw = path.read_bytes()
        try:
            data, ext, im, converted = normalise(raw)
        except BadImage as exc:
            quarantine(path, rel.as_posix(), str(exc))
            continue
        if min(im.size) < settings.min_image_side:
            quarantine(path, rel.as_posix(), f"too small: {im.width}×{im.height}, the minimum side is {settings.min_image_side} (STUDIO_MIN_IMAGE_SIDE)")
            continue
        sha = hashlib.sha256(data).hexdigest()
        (dest / "images" / f"{sha}.{ext}").write_bytes(data)
        original = ""
        if converted:
            original = f"originals/{sha}{rel.suffix.lower()}"
            shutil.move(path, dest / original)
        caption = captions.get(rel.as_posix())
        if caption is None and not any_caption_source:
            caption = Caption(filename_caption(rel), "file name")
        label, split = label_and_split(rel)
        item = DraftItem(
            id=rel.as_posix(),
            sha256=sha,
            ext=ext,
            caption=caption.text if caption else "",
            width=im.width,
            height=im.height,
            split=split,  # type: ignore[arg-type]
            label=label,
            phash=str(imagehash.phash(im)),
            original=original,
            caption_note=caption.note if caption else "",
        )
        sources[caption.source if caption else "none"] += 1
        for reason in caption_problems(item):
            problems.append(Problem(file=item.id, reason=reason))
        items.append(item)
    if progress:
        progress(1.0, f"Read {len(images)} images")
    ids = {item.id for item in items}
    draft = Draft(name=name, items=items, quarantine=[p for p in problems if p.file not in ids], caption_sources=dict(sources))
    save_draft(draft, dest)
    return draft


def scaled(progress: Progress | None, start: float, span: float) -> Progress | None:
    """A progress callback for one stage of a longer task."""
    if progress is None:
        return None
    return lambda fraction, text: progress(start + span * fraction, text)


def import_dataset(
    name: str,
    *,
    zip_path: Path | None = None,
    folder: Path | None = None,
    uploads: list[tuple[str, bytes]] | None = None,
    note: str = "",
    progress: Progress | None = None,
) -> ImportReport:
    """Import a zip, a folder or uploaded files as the new dataset `name` and save its first version."""
    check_name(name)
    if list_versions(name) or draft_dir(name).exists():
        raise StudioError(f"A dataset named {name!r} already exists; choose another name.")
    if sum(x is not None for x in (zip_path, folder, uploads)) != 1:
        raise StudioError("Import one thing at a time: a zip, a folder or uploaded files.")
    tmp = Path(tempfile.mkdtemp(dir=ensure_drafts_dir(), prefix=".tmp-"))
    try:
        incoming = tmp / "incoming"
        incoming.mkdir()
        if progress:
            progress(0.0, "Unpacking…")
        if zip_path is not None:
            safety.extract_zip(zip_path, incoming)
        elif folder is not None:
            safety.copy_tree(folder, incoming)
        else:
            safety.write_uploads(uploads or [], incoming)
        files = sum(1 for p in incoming.rglob("*") if p.is_file())
        root = incoming
        while len(children := list(root.iterdir())) == 1 and children[0].is_dir():
            root = children[0]  # a zip of one folder: that folder is the dataset
        draft = ingest_tree(root, name, tmp / "draft", progress=scaled(progress, 0.0, 0.8))
        shutil.rmtree(incoming)
        version = None
        if any(not caption_problems(item) for item in draft.items):
            replace_dir(tmp / "draft", draft_dir(name))
            try:
                version = save_version(draft, note=note or "imported", progress=scaled(progress, 0.8, 0.2))
            except BaseException:
                shutil.rmtree(draft_dir(name), ignore_errors=True)
                raise
        elif draft.items:
            replace_dir(tmp / "draft", draft_dir(name))  # every caption needs a fix first: keep the draft
        else:
            reasons = "; ".join(f"{p.file}: {p.reason}" for p in draft.quarantine[:3])
            raise StudioError(f"No usable image was found in the upload ({reasons or 'it holds no images'}).")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    needs_fix = sum(bool(caption_problems(item)) for item in draft.items)
    return ImportReport(
        name=name,
        version=version,
        files=files,
        imported=len(draft.items) - needs_fix,
        needs_caption_fix=needs_fix,
        quarantined=len(draft.quarantine),
        caption_sources=draft.caption_sources,
        problems=[*draft.quarantine, *(Problem(file=i.id, reason=r) for i in draft.items for r in caption_problems(i))],
    )
