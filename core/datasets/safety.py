"""Untrusted uploads: every zip entry, file and name is checked before a byte is read or written.

Refused: entries with `..`, absolute paths or drive letters, symlinks, more files than
`import_max_files`, more uncompressed bytes than `import_max_bytes`, entries compressed better than
`import_max_ratio` (a zip bomb). Entries are read straight from the zip (or the folder, or memory)
when the import needs them; nothing is unpacked to disk. A path written later (the quarantine) is
resolved and must stay inside its folder.
"""

from __future__ import annotations

import stat
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from core.errors import StudioError
from core.settings import Settings, get_settings

CHUNK = 1 << 20


@dataclass(frozen=True)
class Entry:
    """One file of an upload: its checked relative path and how to read its bytes."""

    path: PurePosixPath
    read: Callable[[], bytes]


def safe_relative(name: str) -> PurePosixPath:
    """A member or upload name as a relative path that cannot leave its folder."""
    cleaned = name.replace("\\", "/")
    path = PurePosixPath(cleaned)
    if not cleaned or cleaned.startswith("/") or (len(cleaned) > 1 and cleaned[1] == ":"):
        raise StudioError(f"The file {name!r} has an absolute path; only relative paths are accepted.")
    if any(part == ".." for part in path.parts):
        raise StudioError(f"The file {name!r} points outside the upload ('..'); the upload was refused.")
    return PurePosixPath(*[p for p in path.parts if p not in ("", ".")])


def inside(dest: Path, rel: PurePosixPath) -> Path:
    target = (dest / rel).resolve()
    if not target.is_relative_to(dest.resolve()):
        raise StudioError(f"The file {str(rel)!r} points outside the dataset folder; the upload was refused.")
    return target


def check_totals(count: int, total: int, settings: Settings) -> None:
    if count > settings.import_max_files:
        raise StudioError(f"The upload holds {count} files, more than the limit of {settings.import_max_files} (STUDIO_IMPORT_MAX_FILES).")
    if total > settings.import_max_bytes:
        raise StudioError(
            f"The upload unpacks to {total / 1e9:.2f} GB, more than the limit of {settings.import_max_bytes / 1e9:.2f} GB (STUDIO_IMPORT_MAX_BYTES)."
        )


def kept_apart(rel: PurePosixPath, seen: set[str], index: int) -> PurePosixPath:
    """A repeated name gets its own name, so validation reports the duplicate instead of losing it."""
    if str(rel) in seen:
        return rel.with_name(f"{rel.stem}.dup{index}{rel.suffix}.duplicate")
    seen.add(str(rel))
    return rel


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return (info.external_attr >> 16) & 0o170000 == stat.S_IFLNK


def _zip_reader(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> Callable[[], bytes]:
    def read() -> bytes:
        # zipfile never returns more than the header's size (and checks the CRC), so the totals
        # checked from the headers bound what is read.
        try:
            return zf.read(info)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
            raise StudioError(f"The zip entry {info.filename!r} is corrupt ({exc}); the upload was refused.") from None

    return read


@contextmanager
def zip_entries(archive: Path, settings: Settings | None = None) -> Iterator[list[Entry]]:
    """Check every entry of the zip; yield them, readable while the block runs."""
    settings = settings or get_settings()
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError):
        raise StudioError(f"{archive.name} is not a readable zip file.") from None
    with zf:
        members = [info for info in zf.infolist() if not info.is_dir()]
        paths = []
        for info in members:
            if _is_symlink(info):
                raise StudioError(f"The zip entry {info.filename!r} is a symbolic link; links are refused.")
            paths.append(safe_relative(info.filename))
            if info.file_size > CHUNK and info.file_size > settings.import_max_ratio * max(info.compress_size, 1):
                raise StudioError(
                    f"The zip entry {info.filename!r} expands {info.file_size / max(info.compress_size, 1):.0f}× "
                    f"(limit {settings.import_max_ratio:.0f}×, STUDIO_IMPORT_MAX_RATIO); it looks like a zip bomb."
                )
        check_totals(len(members), sum(info.file_size for info in members), settings)
        seen: set[str] = set()
        yield [Entry(kept_apart(path, seen, i), _zip_reader(zf, info)) for i, (path, info) in enumerate(zip(paths, members, strict=True))]


def folder_entries(src: Path, settings: Settings | None = None) -> list[Entry]:
    """A folder's regular files, read in place; symlinks are refused, limits apply."""
    settings = settings or get_settings()
    if not src.is_dir():
        raise StudioError(f"The folder {src} does not exist.")
    files = []
    for path in sorted(src.rglob("*")):
        if path.is_symlink():
            raise StudioError(f"{path.relative_to(src)} is a symbolic link; links are refused.")
        if path.is_file():
            files.append(path)
    check_totals(len(files), sum(p.stat().st_size for p in files), settings)
    return [Entry(PurePosixPath(path.relative_to(src).as_posix()), path.read_bytes) for path in files]


def upload_entries(files: list[tuple[str, bytes]], settings: Settings | None = None) -> list[Entry]:
    """Uploaded (name, bytes) pairs; a repeated name is kept apart for the report."""
    settings = settings or get_settings()
    check_totals(len(files), sum(len(data) for _, data in files), settings)
    seen: set[str] = set()
    return [Entry(kept_apart(safe_relative(name), seen, i), (lambda data=data: data)) for i, (name, data) in enumerate(files)]


def dataset_root(entries: list[Entry]) -> list[Entry]:
    """Entries relative to the dataset's root: an upload of one folder is that folder's content."""
    while entries and all(len(e.path.parts) > 1 for e in entries) and len({e.path.parts[0] for e in entries}) == 1:
        entries = [replace(e, path=PurePosixPath(*e.path.parts[1:])) for e in entries]
    return entries
