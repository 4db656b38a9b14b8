"""Browser uploads streamed to disk, waiting to be imported.

Streamlit's own uploader keeps a whole file in the server's memory, so uploads of any size come
through the studio's upload route instead (`app/uploads.py`), which hands the request body here a
chunk at a time. One upload is a batch: a folder under `STUDIO_HOME/cache/uploads/<id>/` whose
`files/` hold the files as the browser named them (a picked folder keeps its sub-folders), each
written under a temporary name and renamed when whole. A batch is offered for import only once the browser has
sent its last file (`complete`), is seen and imported only by the user who sent it, and is removed
by its import, by Discard, or a day after it was last written.

The import limits hold while the bytes arrive (`STUDIO_IMPORT_MAX_FILES`, `_MAX_BYTES` for the
batch, `_MAX_ENTRY_BYTES` for a file that is not a zip); a zip's own entries are checked again by
the import, as any zip is.
"""

from __future__ import annotations

import json
import secrets
import shutil
import time
from collections.abc import AsyncIterable
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel

from core.access import current_user, require
from core.datasets.ingest import ImportReport, import_dataset
from core.datasets.safety import inside, safe_relative
from core.errors import StudioError
from core.files import atomic_path, atomic_write_bytes, is_temp
from core.settings import get_settings

META = "batch.json"
COMPLETE = "complete"
FILES = "files"
KEEP_SECONDS = 24 * 3600


class Batch(BaseModel):
    id: str
    owner: str
    files: int
    bytes: int
    names: list[str]  # the first few, for the page
    created: datetime


def uploads_dir() -> Path:
    return get_settings().cache_dir / "uploads"


def _folder(batch_id: str) -> Path:
    if not batch_id.isalnum() or len(batch_id) > 64:
        raise StudioError("That upload does not exist; upload the files again.")
    return uploads_dir() / batch_id


def _owned(batch_id: str) -> Path:
    """The batch's folder, if it exists and the current user sent it."""
    folder = _folder(batch_id)
    try:
        owner = json.loads((folder / META).read_text())["owner"]
    except (OSError, ValueError, KeyError):
        raise StudioError("That upload does not exist; upload the files again.") from None
    if owner != current_user().name:
        raise StudioError("That upload was sent by another user.")
    return folder


def new_batch() -> str:
    """Start an upload for the current user (who must be allowed to import); returns its id."""
    user = require("import")
    forget_stale()
    batch_id = secrets.token_hex(12)
    folder = _folder(batch_id)
    (folder / FILES).mkdir(parents=True)
    atomic_write_bytes(folder / META, json.dumps({"owner": user.name, "created": time.time()}).encode())
    return batch_id


def _files(folder: Path) -> list[Path]:
    root = folder / FILES
    return sorted(p for p in root.rglob("*") if p.is_file() and not is_temp(p.relative_to(root)))


async def receive_file(batch_id: str, name: str, chunks: AsyncIterable[bytes]) -> int:
    """Stream one file of a batch to disk; returns its size. A refused or broken transfer leaves no file."""
    folder = _owned(batch_id)
    if (folder / COMPLETE).exists():
        raise StudioError("That upload is already complete; start a new one to add files.")
    settings = get_settings()
    rel = safe_relative(name)
    if not rel.parts:
        raise StudioError(f"The file name {name!r} cannot be used.")
    existing = _files(folder)
    if len(existing) >= settings.import_max_files:
        raise StudioError(f"The upload holds more than {settings.import_max_files} files, the limit (STUDIO_IMPORT_MAX_FILES).")
    # A zip holds the whole dataset, so only the batch limit applies; the import checks its entries.
    limit, setting = settings.import_max_bytes - sum(p.stat().st_size for p in existing), "STUDIO_IMPORT_MAX_BYTES"
    if rel.suffix.lower() != ".zip" and settings.import_max_entry_bytes < limit:
        limit, setting = settings.import_max_entry_bytes, "STUDIO_IMPORT_MAX_ENTRY_BYTES"
    received = 0
    with atomic_path(inside(folder / FILES, rel)) as tmp, tmp.open("xb") as out:
        async for chunk in chunks:
            received += len(chunk)
            if received > limit:
                raise StudioError(f"The upload of {rel.as_posix()!r} passed {limit / 1e6:.0f} MB, what is left under the limit ({setting}); it was refused.")
            out.write(chunk)
    return received


def complete(batch_id: str) -> Batch:
    """Mark a batch as sent in full: from now on the Datasets page offers it for import."""
    folder = _owned(batch_id)
    if not _files(folder):
        raise StudioError("The upload holds no files.")
    (folder / COMPLETE).touch()
    return _describe(batch_id, folder)


def _describe(batch_id: str, folder: Path) -> Batch:
    meta = json.loads((folder / META).read_text())
    files = _files(folder)
    return Batch(
        id=batch_id,
        owner=meta["owner"],
        files=len(files),
        bytes=sum(p.stat().st_size for p in files),
        names=[p.relative_to(folder / FILES).as_posix() for p in files[:5]],
        created=datetime.fromtimestamp(meta["created"], UTC),
    )


def ready_batches() -> list[Batch]:
    """The current user's complete uploads, newest first."""
    forget_stale()
    me = current_user().name
    found = []
    for folder in uploads_dir().glob("*") if uploads_dir().is_dir() else []:
        try:
            if (folder / COMPLETE).exists():
                batch = _describe(folder.name, folder)
                if batch.owner == me:
                    found.append(batch)
        except (OSError, ValueError, KeyError):
            continue  # removed meanwhile, or half-made: not offered
    return sorted(found, key=lambda b: b.created, reverse=True)


def import_batch(name: str, batch_id: str, note: str = "", progress=None) -> ImportReport:  # type: ignore[no-untyped-def]
    """Import a complete batch as the dataset `name`: a lone zip as a zip, anything else as a folder.
    The batch is removed once the import succeeded; after a refusal it stays, to try another name."""
    folder = _owned(batch_id)
    if not (folder / COMPLETE).exists():
        raise StudioError("That upload is still arriving; wait until the upload box says it is done.")
    files = _files(folder)
    if len(files) == 1 and files[0].suffix.lower() == ".zip":
        report = import_dataset(name, zip_path=files[0], note=note, progress=progress)
    else:
        report = import_dataset(name, folder=folder / FILES, note=note, progress=progress)
    shutil.rmtree(folder, ignore_errors=True)
    return report


def discard(batch_id: str) -> None:
    shutil.rmtree(_owned(batch_id), ignore_errors=True)


def forget_stale(now: float | None = None) -> None:
    """Remove batches last written more than a day ago (an abandoned upload or a closed tab)."""
    root = uploads_dir()
    if not root.is_dir():
        return
    cutoff = (now or time.time()) - KEEP_SECONDS
    for folder in root.iterdir():
        try:
            newest = max([folder.stat().st_mtime, *(p.stat().st_mtime for p in folder.rglob("*"))])
        except OSError:
            continue
        if newest < cutoff:
            shutil.rmtree(folder, ignore_errors=True)
