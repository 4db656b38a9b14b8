"""Untrusted uploads: every zip entry, file and name is checked before a byte is read or written.

Refused: entries with `..`, absolute paths or drive letters, symlinks, more files than
`import_max_files`, more uncompressed bytes than `import_max_bytes`, entries compressed better than
`import_max_ratio` (a zip bomb), and any one file larger than `import_max_entry_bytes`, checked
from the zip header and again while its bytes are read (headers can lie). Entries are read straight from the zip (or the folder, or memory)
when the import needs them; nothing is unpacked to disk. A path written later (the quarantine) is
resolved and must stay inside its folder.
"""

from __future__ import annotations

import io
import os
import stat
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from core.errors import StudioError
from core.settings import Settings, get_settings

CHUNK = 1 << 20


@dataclass(frozen=True)
class Origin:
    """Where another process can open an entry again: member number `member` of the zip `archive`
    (a zip may repeat a name), or, when `archive` is None, the file `name`; both paths absolute."""

    archive: str | None
    name: str
    member: int = -1


@dataclass(frozen=True)
class Entry:
    """One file of an upload: its checked relative path and how to read its bytes.

    `read` returns them whole, `copy_to` streams them into a new file; both stop with one sentence
    past `import_max_entry_bytes`, whatever the header said. `size` is the size the header (or the
    file system) declares. `origin` is None for bytes held in memory.
    """

    path: PurePosixPath
    open: Callable[[], BinaryIO]
    size: int
    limit: int
    origin: Origin | None = None

    def __reduce__(self) -> tuple[Callable[..., Entry], tuple[PurePosixPath, Origin, int, int]]:
        """Pickled for a worker process, which opens the entry again from its origin."""
        if self.origin is None:
            raise TypeError(f"{self.path} is held in memory and is read in this process only")
        return reopen, (self.path, self.origin, self.size, self.limit)

    def read(self) -> bytes:
        with self.open() as f:
            # The declared size in one read (no buffer the size of the limit for a small file) ...
            data = f.read(min(self.size, self.limit) + 1)
            if len(data) > self.size:  # ... and, when there is more than declared, on to the limit
                parts, total = [data], len(data)
                while total <= self.limit and (chunk := f.read(min(CHUNK, self.limit + 1 - total))):
                    parts.append(chunk)
                    total += len(chunk)
                data = b"".join(parts)
        if len(data) > self.limit:
            raise too_large(str(self.path), self.limit)
        return data

    def copy_to(self, target: Path) -> None:
        """Stream the bytes into the new file `target` (removed again when the copy fails)."""
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            with os.fdopen(fd, "wb") as out, self.open() as f:
                copied = 0
                while chunk := f.read(CHUNK):
                    copied += len(chunk)
                    if copied > self.limit:
                        raise too_large(str(self.path), self.limit)
                    out.write(chunk)
        except BaseException:
            target.unlink(missing_ok=True)
            raise


def too_large(name: str, limit: int) -> StudioError:
    return StudioError(
        f"The file {name!r} unpacks to more than {limit / 1e6:.0f} MB, the limit for one file (STUDIO_IMPORT_MAX_ENTRY_BYTES); the upload was refused."
    )


def safe_relative(name: str) -> PurePosixPath:
    """A member or upload name as a relative path that cannot leave its folder."""
    cleaned = name.replace("\\", "/")
    if not cleaned or cleaned.startswith("/") or (len(cleaned) > 1 and cleaned[1] == ":"):
        raise StudioError(f"The file {name!r} has an absolute path; only relative paths are accepted.")
    parts = [p for p in cleaned.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise StudioError(f"The file {name!r} points outside the upload ('..'); the upload was refused.")
    return PurePosixPath("/".join(parts))  # one parse: a zip may hold a hundred thousand names


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
    key = str(rel)
    if key in seen:
        return rel.with_name(f"{rel.stem}.dup{index}{rel.suffix}.duplicate")
    seen.add(key)
    return rel


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return (info.external_attr >> 16) & 0o170000 == stat.S_IFLNK


class _ZipMember(io.RawIOBase):
    """A zip member's stream whose read errors are one sentence about a corrupt entry."""

    def __init__(self, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
        self.info = info
        with self._errors():
            self.stream = zf.open(info)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
            raise StudioError(f"The zip entry {self.info.filename!r} is corrupt ({exc}); the upload was refused.") from None

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        with self._errors():
            return self.stream.read(size)

    def close(self) -> None:
        self.stream.close()
        super().close()


def _zip_opener(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> Callable[[], BinaryIO]:
    # zipfile itself never returns more than the header's size and checks the CRC; the entry's
    # `read`/`copy_to` count the bytes again, so the limit holds whatever the header says.
    return lambda: _ZipMember(zf, info)  # type: ignore[return-value]


# In a worker process: each zip its entries come from, open for the process's life (one import).
_reopened_zips: dict[str, zipfile.ZipFile] = {}


def reopen(path: PurePosixPath, origin: Origin, size: int, limit: int) -> Entry:
    """An entry checked in another process, opened again from its origin."""
    if origin.archive is None:
        file = Path(origin.name)
        return Entry(path, lambda: file.open("rb"), size, limit, origin)
    zf = _reopened_zips.get(origin.archive)
    if zf is None:
        zf = _reopened_zips[origin.archive] = zipfile.ZipFile(origin.archive)
    return Entry(path, _zip_opener(zf, zf.infolist()[origin.member]), size, limit, origin)


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
            if info.file_size > settings.import_max_entry_bytes:
                raise too_large(info.filename, settings.import_max_entry_bytes)
        check_totals(len(members), sum(info.file_size for info in members), settings)
        seen: set[str] = set()
        limit = settings.import_max_entry_bytes
        where, number = str(archive.absolute()), {id(info): i for i, info in enumerate(zf.infolist())}
        yield [
            Entry(kept_apart(path, seen, i), _zip_opener(zf, info), info.file_size, limit, Origin(where, info.filename, number[id(info)]))
            for i, (path, info) in enumerate(zip(paths, members, strict=True))
        ]


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
    sizes = [p.stat().st_size for p in files]
    check_totals(len(files), sum(sizes), settings)
    limit = settings.import_max_entry_bytes
    for path, size in zip(files, sizes, strict=True):
        if size > limit:
            raise too_large(path.relative_to(src).as_posix(), limit)
    return [
        Entry(PurePosixPath(path.relative_to(src).as_posix()), (lambda path=path: path.open("rb")), size, limit, Origin(None, str(path.absolute())))
        for path, size in zip(files, sizes, strict=True)
    ]


def upload_entries(files: list[tuple[str, bytes]], settings: Settings | None = None) -> list[Entry]:
    """Uploaded (name, bytes) pairs; a repeated name is kept apart for the report."""
    settings = settings or get_settings()
    check_totals(len(files), sum(len(data) for _, data in files), settings)
    limit = settings.import_max_entry_bytes
    for name, data in files:
        if len(data) > limit:
            raise too_large(name, limit)
    seen: set[str] = set()
    return [
        Entry(kept_apart(safe_relative(name), seen, i), (lambda data=data: io.BytesIO(data)), len(data), limit)
        for i, (name, data) in enumerate(files)
    ]


def dataset_root(entries: list[Entry]) -> list[Entry]:
    """Entries relative to the dataset's root: an upload of one folder is that folder's content."""
    depth = 0
    while entries and all(len(e.path.parts) > depth + 1 for e in entries) and len({e.path.parts[depth] for e in entries}) == 1:
        depth += 1
    if depth == 0:
        return entries
    return [Entry(PurePosixPath("/".join(e.path.parts[depth:])), e.open, e.size, e.limit, e.origin) for e in entries]
