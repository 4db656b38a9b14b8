"""The working draft of a dataset: the curation state between imports and "Save version".

It lives in `STUDIO_HOME/drafts/<name>/`: `draft.json` (items, quarantine, undo history),
`images/<sha256>.<ext>` (what a version will hold), `originals/` (files that were converted),
`quarantine/` (files that could not be used) and `thumbs/` (cached on first view). Every change is
written to disk at once (temp file + rename), so a page reload finds the draft as it was.
"""

from __future__ import annotations

import errno
import fcntl
import io
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Literal

from PIL import Image
from pydantic import BaseModel, Field

from core.access import require
from core.datasets.versions import (
    NewItem,
    check_name,
    find_version,
    link_or_copy,
    list_versions,
    materialize,
    read_manifest,
    write_version,
)
from core.errors import StudioError
from core.files import atomic_write_bytes, atomic_write_text, temp_sibling
from core.settings import get_settings

DRAFT_FILE = "draft.json"
HISTORY_LIMIT = 30
THUMB_SIDE = 192


class Problem(BaseModel):
    file: str
    reason: str


class DraftItem(BaseModel):
    id: str = Field(description="The file name it was imported as; unique within the draft.")
    sha256: str
    ext: str
    caption: str
    width: int
    height: int
    split: Literal["train", "val"] = "train"
    label: str = ""
    phash: str = ""
    original: str = Field("", description="originals/<name> when the image was converted on import.")
    caption_note: str = Field("", description="A problem found when the caption was read; cleared by an edit.")

    @property
    def file(self) -> str:
        return f"images/{self.sha256}.{self.ext}"


class Change(BaseModel):
    """What one edit undid: old captions by id, items it removed (with their positions)."""

    label: str
    captions: dict[str, str] = {}
    notes: dict[str, str] = {}
    splits: dict[str, str] = {}
    removed: list[tuple[int, DraftItem]] = []


class Draft(BaseModel):
    name: str
    base_version: str | None = None
    caption_sources: dict[str, int] = {}
    items: list[DraftItem] = []
    quarantine: list[Problem] = []
    history: list[Change] = []

    def by_id(self) -> dict[str, DraftItem]:
        return {item.id: item for item in self.items}


@lru_cache(maxsize=8192)
def caption_tokens(caption: str) -> int:
    from core.modeling.tokenizer import count_tokens

    return count_tokens(caption)


def caption_problems(item: DraftItem) -> list[str]:
    from core.modeling.tokenizer import MAX_LENGTH

    problems = [item.caption_note] if item.caption_note else []
    if not item.caption.strip():
        problems.append("missing or empty caption")
    elif (n := caption_tokens(item.caption)) > MAX_LENGTH:
        problems.append(f"caption has {n} tokens, more than the text encoder's {MAX_LENGTH}")
    return problems


def drafts_dir() -> Path:
    return get_settings().home.resolve() / "drafts"


def draft_dir(name: str) -> Path:
    return drafts_dir() / check_name(name)


@contextmanager
def name_lock(name: str) -> Iterator[None]:
    """Held while a draft of `name` is created (an import, a draft started from a version): a second
    one, in this process or another, is refused with one sentence instead of replacing the first."""
    folder = drafts_dir()
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / f".{check_name(name)}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StudioError(f"The dataset {name!r} is being imported or prepared right now; try again when that is done.") from None
        yield
    finally:
        os.close(fd)  # releases the lock


@contextmanager
def new_draft_folder(name: str) -> Iterator[Path]:
    """A folder to build a new draft in, moved into place when the block succeeds and removed when it
    fails. Call it holding `name_lock`. It never replaces a draft: one already there (with its unsaved
    edits) stays, and the new one is refused; a folder left empty is taken over by the rename itself."""
    dest = draft_dir(name)
    tmp = temp_sibling(dest)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        try:
            os.rename(tmp, dest)  # atomic; fails when dest holds anything
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            raise StudioError(f"A draft of the dataset {name!r} already exists; it was kept as it is.") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_draft(draft: Draft, folder: Path | None = None) -> None:
    require("import")  # every curation edit ends here
    folder = folder or draft_dir(draft.name)
    draft.history = draft.history[-HISTORY_LIMIT:]
    atomic_write_text(folder / DRAFT_FILE, draft.model_dump_json())


def load_draft(name: str) -> Draft:
    """The draft of a dataset; made from its newest version when there is none yet."""
    path = draft_dir(name) / DRAFT_FILE
    if path.is_file():
        return Draft.model_validate_json(path.read_text(encoding="utf-8"))
    versions = list_versions(name)
    if not versions:
        raise StudioError(f"The dataset {name!r} does not exist; import it first.")
    return draft_from_version(name, versions[0].version)


def draft_from_version(name: str, version: str) -> Draft:
    """Start a draft from a saved version (its images are already content-addressed: hard-linked when local)."""
    source = materialize(name, version)
    with name_lock(name):
        path = draft_dir(name) / DRAFT_FILE
        if path.is_file():  # made by another session while this one waited
            return Draft.model_validate_json(path.read_text(encoding="utf-8"))
        if draft_dir(name).exists():  # no draft.json: left by a failed write, it holds no edits
            shutil.rmtree(draft_dir(name))
        return _draft_from_version(name, version, source)


def _draft_from_version(name: str, version: str, source: Path) -> Draft:
    from core.datasets.images import perceptual_hash

    with new_draft_folder(name) as tmp:
        (tmp / "images").mkdir()
        items = []
        for entry in read_manifest(name, version):
            target = tmp / entry.file
            if not target.exists():
                link_or_copy(source / entry.file, target)
            with Image.open(target) as im:
                phash = perceptual_hash(im)
            items.append(
                DraftItem(
                    id=entry.source or entry.file,
                    sha256=entry.sha256,
                    ext=entry.file.rsplit(".", 1)[-1],
                    caption=entry.caption,
                    width=entry.width,
                    height=entry.height,
                    split=entry.split,
                    phash=phash,
                )
            )
        draft = Draft(name=name, base_version=version, items=items, caption_sources={f"version {version}": len(items)})
        save_draft(draft, tmp)
    return draft


def record(draft: Draft, change: Change) -> None:
    """Keep an edit on the undo stack and write the draft."""
    if change.captions or change.removed or change.splits or change.notes:
        draft.history.append(change)
    save_draft(draft)


def undo(draft: Draft) -> str | None:
    """Revert the newest unsaved edit; return its label (None when there is nothing to undo)."""
    if not draft.history:
        return None
    change = draft.history.pop()
    for index, item in sorted(change.removed, key=lambda pair: pair[0]):
        draft.items.insert(min(index, len(draft.items)), item)
    items = draft.by_id()
    for item_id, caption in change.captions.items():
        if item_id in items:
            items[item_id].caption = caption
    for item_id, note in change.notes.items():
        if item_id in items:
            items[item_id].caption_note = note
    for item_id, split in change.splits.items():
        if item_id in items:
            items[item_id].split = split  # type: ignore[assignment]
    save_draft(draft)
    return change.label


def set_captions(draft: Draft, captions: dict[str, str], label: str = "edit captions") -> int:
    """Set captions by item id; return how many changed. An edited caption clears its import note."""
    items = draft.by_id()
    change = Change(label=label)
    for item_id, caption in captions.items():
        item = items.get(item_id)
        if item is None or item.caption == caption:
            continue
        change.captions[item_id] = item.caption
        if item.caption_note:
            change.notes[item_id] = item.caption_note
            item.caption_note = ""
        item.caption = caption
    record(draft, change)
    return len(change.captions)


def remove_items(draft: Draft, ids: set[str], label: str = "remove images") -> int:
    change = Change(label=label)
    kept = []
    for index, item in enumerate(draft.items):
        if item.id in ids:
            change.removed.append((index, item))
        else:
            kept.append(item)
    draft.items = kept
    record(draft, change)
    return len(change.removed)


def set_splits(draft: Draft, splits: dict[str, str], label: str = "split") -> int:
    change = Change(label=label)
    for item in draft.items:
        new = splits.get(item.id)
        if new and new != item.split:
            change.splits[item.id] = item.split
            item.split = new  # type: ignore[assignment]
    record(draft, change)
    return len(change.splits)


def delete_quarantined(draft: Draft, files: set[str]) -> int:
    """Drop unusable files from the quarantine (and their stored copies)."""
    folder = draft_dir(draft.name) / "quarantine"
    before = len(draft.quarantine)
    for problem in draft.quarantine:
        if problem.file in files:
            (folder / problem.file).unlink(missing_ok=True)
    draft.quarantine = [p for p in draft.quarantine if p.file not in files]
    save_draft(draft)
    return before - len(draft.quarantine)


def image_path(draft: Draft, item: DraftItem) -> Path:
    return draft_dir(draft.name) / item.file


def thumbnail(draft: Draft, item: DraftItem) -> Path:
    """A cached WebP thumbnail of an item, made on first view."""
    path = draft_dir(draft.name) / "thumbs" / f"{item.sha256}.webp"
    if not path.is_file():
        path.parent.mkdir(exist_ok=True)
        with Image.open(image_path(draft, item)) as im:
            im.thumbnail((THUMB_SIDE, THUMB_SIDE))
            buffer = io.BytesIO()
            im.save(buffer, format="WEBP", quality=80)
        atomic_write_bytes(path, buffer.getvalue())
    return path


def usable(draft: Draft) -> list[DraftItem]:
    """Items a version may hold: the ones whose caption has no problem."""
    return [item for item in draft.items if not caption_problems(item)]


def save_version(draft: Draft, note: str = "", progress=None) -> str:  # type: ignore[no-untyped-def]
    """Freeze the draft's usable items into an immutable version; the undo history starts afresh."""
    items = usable(draft)
    if not items:
        raise StudioError("No image has a usable caption yet; fix the captions in the quarantine first.")
    folder = draft_dir(draft.name)
    new_items = [
        NewItem(
            data=folder / item.file,
            sha256=item.sha256,
            ext=item.ext,
            caption=item.caption,
            width=item.width,
            height=item.height,
            split=item.split,
            source=item.id,
        )
        for item in items
    ]
    version = write_version(draft.name, new_items, parent=draft.base_version, note=note, progress=progress)
    draft.base_version = version
    draft.history = []
    save_draft(draft)
    return version


def has_unsaved_changes(draft: Draft) -> bool:
    return bool(draft.history) or draft.base_version is None or find_version(draft.name, draft.base_version) is None
