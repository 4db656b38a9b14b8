"""Untrusted uploads: zip entries and file names are checked before a byte is written.

Refused: entries with `..`, absolute paths or drive letters, symlinks, more files than
`import_max_files`, more uncompressed bytes than `import_max_bytes`, entries compressed better than
`import_max_ratio` (a zip bomb). Every path is resolved and must stay inside the destination.
"""

from __future__ import annotations

import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath

from core.errors import StudioError
from core.settings import Settings, get_settings

CHUNK = 1 << 20


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


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return (info.external_attr >> 16) & 0o170000 == stat.S_IFLNK


def extract_zip(archive: Path, dest: Path, settings: Settings | None = None) -> list[Path]:
    """Check every entry of the zip, then extract it into `dest`; return the extracted files."""
    settings = settings or get_settings()
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError):
        raise StudioError(f"{archive.name} is not a readable zip file.") from None
    with zf:
        members = [info for info in zf.infolist() if not info.is_dir()]
        for info in members:
            if _is_symlink(info):
                raise StudioError(f"The zip entry {info.filename!r} is a symbolic link; links are refused.")
            inside(dest, safe_relative(info.filename))
            if info.file_size > CHUNK and info.file_size > settings.import_max_ratio * max(info.compress_size, 1):
                raise StudioError(
                    f"The zip entry {info.filename!r} expands {info.file_size / max(info.compress_size, 1):.0f}× "
                    f"(limit {settings.import_max_ratio:.0f}×, STUDIO_IMPORT_MAX_RATIO); it looks like a zip bomb."
                )
        check_totals(len(members), sum(info.file_size for info in members), settings)
        written: list[Path] = []
        budget = settings.import_max_bytes
        seen: set[str] = set()
        for info in members:
            rel = safe_relative(info.filename)
            # A zip may repeat a name; keep both so validation reports the duplicate instead of overwriting.
            key = str(rel)
            if key in seen:
                rel = rel.with_name(f"{rel.stem}.dup{len(seen)}{rel.suffix}.duplicate")
            seen.add(key)
            target = inside(dest, rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                # The header's sizes can lie: count what really comes out.
                while block := src.read(CHUNK):
                    budget -= len(block)
                    if budget < 0:
                        raise StudioError("The zip unpacks to more than its header claims and past the size limit; it was refused.")
                    out.write(block)
            written.append(target)
    return written


def copy_tree(src: Path, dest: Path, settings: Settings | None = None) -> list[Path]:
    """Copy a folder's regular files into `dest`; symlinks are refused, limits apply."""
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
    written = []
    for path in files:
        target = inside(dest, PurePosixPath(path.relative_to(src).as_posix()))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        written.append(target)
    return written


def write_uploads(files: list[tuple[str, bytes]], dest: Path, settings: Settings | None = None) -> list[Path]:
    """Write uploaded (name, bytes) pairs into `dest`; a repeated name is kept apart for the report."""
    settings = settings or get_settings()
    check_totals(len(files), sum(len(data) for _, data in files), settings)
    written, seen = [], set()
    for i, (name, data) in enumerate(files):
        rel = safe_relative(name)
        if str(rel) in seen:
            rel = rel.with_name(f"{rel.stem}.dup{i}{rel.suffix}.duplicate")
        seen.add(str(rel))
        target = inside(dest, rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        written.append(target)
    return written
