"""Import images and captions from a zip, a folder or uploaded files into a new dataset.

Caption sources, in the order they win: Hugging Face `imagefolder` `metadata.jsonl` (`file_name`,
`text`), CSV or Parquet tables (a file column and a caption column), kohya-style `.txt` sidecars,
and, when the upload has none of these, the file names. Images are normalised to RGB (EXIF
orientation applied, first GIF frame, alpha on white); a converted image keeps its original.

Entries are read straight from the zip (or folder, or memory), never unpacked, and each image is
written once, to the draft's content-addressed `images/<sha256>.<ext>`; the first version
hard-links those files when the store is local. Reading, checking and writing the images is
`ingest_workers`' (in worker processes for a large import). Everything is built in a temporary folder
inside `drafts/` and moved into place only when done, so a failed import leaves nothing behind;
an import holds the dataset name's lock, so a second import of the same name is refused, never
replacing the first one's draft.

Files that operating systems leave in archives (`__MACOSX/`, `._*`, `.DS_Store`, `Thumbs.db`,
`desktop.ini`) are ignored before anything else looks at the upload.
"""

from __future__ import annotations

import csv
import gc
import io
import json
import re
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pydantic import BaseModel

from core.access import require, server_path
from core.datasets import safety
from core.datasets.draft import (
    Draft,
    DraftItem,
    Problem,
    caption_problems,
    draft_dir,
    name_lock,
    new_draft_folder,
    save_draft,
    save_version,
)
from core.datasets.ingest_workers import quarantine_path, store_images, worker_count
from core.datasets.safety import Entry
from core.datasets.splits import default_split
from core.datasets.versions import check_name, list_versions
from core.errors import StudioError
from core.settings import get_settings

Progress = Callable[[float, str], None]

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
CAPTION_EXTS = {".txt", ".csv", ".parquet", ".jsonl"}
FILE_COLUMNS = ("file_name", "filename", "file", "image", "path")
TEXT_COLUMNS = ("text", "caption", "prompt")
SPLIT_DIRS = {"train": "train", "validation": "val", "val": "val", "test": "val"}
DUPLICATE = re.compile(r"\.dup\d+(\.[^./]*)?\.duplicate$")
JUNK_NAMES = {".ds_store", "thumbs.db", "desktop.ini"}


def is_junk(rel: PurePosixPath) -> bool:
    """A file an operating system left in the archive (macOS resource forks, Finder or Explorer state)."""
    return "__MACOSX" in rel.parts or rel.name.lower() in JUNK_NAMES or rel.name.startswith("._")


class ImportReport(BaseModel):
    name: str
    version: str | None
    files: int
    imported: int
    needs_caption_fix: int
    quarantined: int
    caption_sources: dict[str, int]
    val_images: int = 0
    val_seeded: bool = False  # the upload named no split: the default one was drawn (seeded, stratified)
    problems: list[Problem]


@dataclass
class Caption:
    text: str
    source: str
    note: str = ""


def decode_caption(raw: bytes) -> tuple[str, str]:
    """(text, note): a caption file that is not UTF-8 is read as Latin-1 and noted."""
    try:
        return raw.decode("utf-8-sig").strip(), ""
    except UnicodeDecodeError:
        return raw.decode("latin-1").strip(), "caption file is not UTF-8"


def table_captions(rel: PurePosixPath, raw: bytes) -> dict[str, Caption]:
    """Captions from metadata.jsonl, CSV or Parquet, keyed by the image path relative to the dataset."""
    if rel.suffix == ".jsonl":
        rows = []
        for line in raw.decode("utf-8", errors="replace").splitlines():
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    elif rel.suffix == ".csv":
        rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig", errors="replace"), newline="")))
    else:
        import pyarrow.parquet as pq

        rows = pq.read_table(io.BytesIO(raw)).to_pylist()
    if not rows:
        return {}
    file_col = next((c for c in FILE_COLUMNS if c in rows[0]), None)
    text_col = next((c for c in TEXT_COLUMNS if c in rows[0]), None)
    if file_col is None or text_col is None:
        return {}
    source = "metadata.jsonl" if rel.name == "metadata.jsonl" else rel.suffix.lstrip(".").upper()
    captions = {}
    for row in rows:
        if row.get(file_col) is None:
            continue
        path = (rel.parent / str(row[file_col]).replace("\\", "/")).as_posix()
        captions[str(PurePosixPath(path))] = Caption(str(row.get(text_col) or "").strip(), source)
    return captions


def filename_caption(rel: PurePosixPath) -> str:
    return re.sub(r"[_\-]+", " ", re.sub(r"\d+$", "", rel.stem)).strip()


def label_and_split(file: str) -> tuple[str, str]:
    """(class label, split) of an image from its folders: `[train|val|test/]<label>/<file>`."""
    parents = file.split("/")[:-1]
    split = "train"
    if parents and parents[0].lower() in SPLIT_DIRS:
        split = SPLIT_DIRS[parents.pop(0).lower()]
    return (parents[-1] if parents else ""), split


class Captions:
    """Each image's caption: a table row (metadata.jsonl, CSV, Parquet) first, else the `.txt`
    sidecar with the image's stem, whatever the case of the image's extension (`IMG_1.JPG` with
    `IMG_1.txt`); a sidecar is read along with its image (in the same worker process), and only
    when the image needs it."""

    def __init__(self, entries: list[Entry]) -> None:
        self.tables: dict[str, Caption] = {}
        self.sidecars: dict[str, Entry] = {}
        for entry in entries:
            if entry.path.name == "metadata.jsonl" or entry.path.suffix.lower() in (".csv", ".parquet"):
                try:
                    self.tables.update(table_captions(entry.path, entry.read()))
                except StudioError:
                    raise
                except Exception as exc:  # a broken table is one clear sentence, not a traceback
                    raise StudioError(f"The caption table {entry.path} could not be read: {exc}") from None
            elif entry.path.suffix.lower() == ".txt":
                self.sidecars[str(entry.path)[: -len(entry.path.suffix)]] = entry

    def __bool__(self) -> bool:
        """Whether the upload has any caption source (else captions come from the file names)."""
        return bool(self.tables or self.sidecars)

    def sidecar(self, image: PurePosixPath) -> Entry | None:
        """The `.txt` file to read along with the image: None when a table captions it."""
        path = str(image)
        return None if path in self.tables else self.sidecars.get(path[: -len(image.suffix)])

    def get(self, image: PurePosixPath, sidecar: bytes | None) -> Caption | None:
        """The image's caption, given the bytes of its sidecar when it has one."""
        found = self.tables.get(str(image))
        if found is None and sidecar is not None:
            text, note = decode_caption(sidecar)
            found = Caption(text, ".txt sidecar", note)
        return found


def ingest_entries(entries: list[Entry], name: str, dest: Path, progress: Progress | None = None) -> Draft:
    """Read every entry into a draft written to `dest` (images/, originals/, quarantine/)."""
    settings = get_settings()
    entries = sorted(entries, key=lambda e: e.path)  # the same order, so the same choices, from any source
    captions = Captions(entries)
    any_caption_source = bool(captions)
    for sub in ("images", "originals", "quarantine"):
        (dest / sub).mkdir(parents=True, exist_ok=True)
    items: list[DraftItem] = []
    problems: list[Problem] = []
    sources: Counter[str] = Counter()

    def quarantine(entry: Entry, reason: str) -> None:
        problems.append(Problem(file=entry.path.as_posix(), reason=reason))
        entry.copy_to(quarantine_path(dest, entry.path))  # streamed, never whole in memory

    images: list[Entry] = []
    stems: dict[str, str] = {}
    for entry in entries:
        file, suffix = entry.path.as_posix(), entry.path.suffix
        if DUPLICATE.search(file):
            original_name = DUPLICATE.sub(r"\1", file)
            quarantine(entry, f"duplicate file name: {original_name} appears more than once")
        elif suffix.lower() in IMAGE_EXTS:
            stem = file[: len(file) - len(suffix)]
            if stem in stems:
                quarantine(entry, f"duplicate file name: {stems[stem]} has the same name, so the caption is ambiguous")
            else:
                stems[stem] = file
                images.append(entry)
        elif suffix.lower() not in CAPTION_EXTS:
            quarantine(entry, f"unsupported file type {suffix or '(none)'}")

    workers = worker_count(settings.import_workers, images)
    pairs = [(image, captions.sidecar(image.path)) for image in images]
    with closing(store_images(pairs, dest, settings.min_image_side, workers, progress)) as stored:
        for entry, (image, sidecar) in zip(images, stored, strict=True):
            rel = entry.path
            if isinstance(image, str):  # the file is in the quarantine already
                problems.append(Problem(file=rel.as_posix(), reason=image))
                continue
            caption = captions.get(rel, sidecar)
            if caption is None and not any_caption_source:
                caption = Caption(filename_caption(rel), "file name")
            file = rel.as_posix()
            label, split = label_and_split(file)
            item = DraftItem(
                id=file,
                sha256=image.sha256,
                ext=image.ext,
                caption=caption.text if caption else "",
                width=image.width,
                height=image.height,
                split=split,  # type: ignore[arg-type]
                label=label,
                phash=image.phash,
                original=image.original,
                caption_note=caption.note if caption else "",
            )
            sources[caption.source if caption else "none"] += 1
            for reason in caption_problems(item):
                problems.append(Problem(file=item.id, reason=reason))
            items.append(item)
    if progress:
        progress(1.0, f"Read {len(images)} images")
    default_split(items)
    ids = {item.id for item in items}
    draft = Draft(name=name, items=items, quarantine=[p for p in problems if p.file not in ids], caption_sources=dict(sources))
    save_draft(draft, dest)
    return draft


def scaled(progress: Progress | None, start: float, span: float) -> Progress | None:
    """A progress callback for one stage of a longer task."""
    if progress is None:
        return None
    return lambda fraction, text: progress(start + span * fraction, text)


@contextmanager
def upload(zip_path: Path | None, folder: Path | None, uploads: list[tuple[str, bytes]] | None) -> Iterator[list[Entry]]:
    """The checked entries of whichever was given, readable while the block runs."""
    if zip_path is not None:
        with safety.zip_entries(zip_path) as entries:
            yield entries
    elif folder is not None:
        yield safety.folder_entries(folder)
    else:
        yield safety.upload_entries(uploads or [])


@contextmanager
def collection_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while an import runs. An import makes tens of
    thousands of objects that live on (entries, paths, items), and their number triggers full
    collections that walk the process's whole heap and free next to nothing: 0.11 s of an import's
    0.39 s of CPU in bench/ingest.py's process, more in the studio's larger one. Concurrent imports
    leave it on again: only the one that turned it off turns it back on."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _import_locked(
    name: str,
    zip_path: Path | None,
    folder: Path | None,
    uploads: list[tuple[str, bytes]] | None,
    note: str,
    progress: Progress | None,
) -> tuple[str | None, Draft, int]:
    if list_versions(name) or draft_dir(name).exists():
        raise StudioError(f"A dataset named {name!r} already exists; choose another name.")
    with new_draft_folder(name) as staging:
        if progress:
            progress(0.0, "Checking the upload…")
        with upload(zip_path, folder, uploads) as entries:
            entries = [e for e in entries if not is_junk(e.path)]
            files = len(entries)
            draft = ingest_entries(safety.dataset_root(entries), name, staging, progress=scaled(progress, 0.0, 0.8))
        if not draft.items:
            reasons = "; ".join(f"{p.file}: {p.reason}" for p in draft.quarantine[:3])
            raise StudioError(f"No usable image was found in the upload ({reasons or 'it holds no images'}).")
    # The draft is in place now; when every caption needs a fix first, it is all the import keeps.
    version = None
    if any(not caption_problems(item) for item in draft.items):
        try:
            version = save_version(draft, note=note or "imported", progress=scaled(progress, 0.8, 0.2))
        except BaseException:
            shutil.rmtree(draft_dir(name), ignore_errors=True)
            raise
    return version, draft, files


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
    require("import")
    zip_path, folder = (server_path(p) if p is not None else None for p in (zip_path, folder))
    check_name(name)
    if sum(x is not None for x in (zip_path, folder, uploads)) != 1:
        raise StudioError("Import one thing at a time: a zip, a folder or uploaded files.")
    with name_lock(name), collection_paused():
        version, draft, files = _import_locked(name, zip_path, folder, uploads, note, progress)
    needs_fix = sum(bool(caption_problems(item)) for item in draft.items)
    return ImportReport(
        name=name,
        version=version,
        files=files,
        imported=len(draft.items) - needs_fix,
        needs_caption_fix=needs_fix,
        quarantined=len(draft.quarantine),
        caption_sources=draft.caption_sources,
        val_images=sum(item.split == "val" for item in draft.items),
        val_seeded=not any(label_and_split(item.id)[1] == "val" for item in draft.items),
        problems=[*draft.quarantine, *(Problem(file=i.id, reason=r) for i in draft.items for r in caption_problems(i))],
    )
