"""Writing files and folders so that a reader never sees half of one (DESIGN.md, Conventions).

Everything is written under a unique hidden name beside its destination (`.tmp-<name>-<random>`,
on the same filesystem, so the final rename is atomic) and renamed into place only when complete;
a failed write removes its temporary. Two writers of the same destination never share a
temporary, so each leaves a complete file or folder and the last one wins. A write that runs out
of space (ENOSPC, EDQUOT, or EFBIG past a file size limit) leaves what was there before and says so
in one sentence naming what was being saved (`DiskFull`).
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from core.errors import StudioError

TEMP_PREFIX = ".tmp-"  # listings skip names that start with it (see `is_temp`)


NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class DiskFull(StudioError):
    """A write that ran out of space; the destination keeps what it held before."""


def _out_of_space(exc: BaseException) -> bool:
    """Whether `exc`, or an error it was raised from (torch.save wraps the OSError of its file), is a full disk."""
    seen: set[int] = set()
    found: BaseException | None = exc
    while found is not None and id(found) not in seen:
        if isinstance(found, DiskFull) or (isinstance(found, OSError) and found.errno in NO_SPACE):
            return True
        seen.add(id(found))
        found = found.__cause__ or found.__context__
    return False


def _no_space(dest: Path) -> DiskFull:
    return DiskFull(f"No space left on the disk holding {dest.parent} while saving {dest.name}.")


def temp_sibling(dest: Path) -> Path:
    """A fresh, unused name beside `dest`. Not created: the writer creates it with the usual permissions."""
    return dest.with_name(f"{TEMP_PREFIX}{dest.name}-{secrets.token_hex(8)}")


def is_temp(rel: Path) -> bool:
    """Whether a relative path is, or lies inside, a temporary not yet renamed into place."""
    return any(part.startswith(TEMP_PREFIX) for part in rel.parts)


@contextmanager
def atomic_path(dest: Path) -> Iterator[Path]:
    """A temporary path for a writer that wants a file name (zip, ONNX, torch.save); renamed onto
    `dest` when the block succeeds, removed when it fails."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(dest)
    try:
        yield tmp
        os.replace(tmp, dest)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if _out_of_space(exc):
            raise _no_space(dest) from None
        raise


def atomic_write_bytes(dest: Path, data: bytes) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(dest: Path, text: str, encoding: str = "utf-8") -> None:
    with atomic_path(dest) as tmp:
        tmp.write_text(text, encoding=encoding)


def atomic_copy(src: Path, dest: Path) -> None:
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)


def replace_folder(src: Path, dest: Path) -> None:
    """Move the finished folder `src` onto `dest`. A folder already at `dest` is moved aside and
    removed once `src` is in place; a writer racing to the same `dest` is moved aside the same way."""
    aside: list[Path] = []
    while True:
        try:
            os.rename(src, dest)  # succeeds when dest is absent or an empty folder
            break
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        old = temp_sibling(dest)
        try:
            os.rename(dest, old)
            aside.append(old)
        except FileNotFoundError:
            pass  # another writer moved it aside first; try again
    for old in aside:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def staged_folder(dest: Path, staging: Path | None = None) -> Iterator[Path]:
    """A folder to write into that replaces `dest` when the block succeeds and is removed when it fails.

    `staging` is a folder other processes already began writing (DeepSpeed ranks); by default a
    fresh one beside `dest`.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    folder = staging or temp_sibling(dest)
    folder.mkdir(parents=True, exist_ok=staging is not None)
    try:
        yield folder
        replace_folder(folder, dest)
    except BaseException as exc:
        shutil.rmtree(folder, ignore_errors=True)
        if _out_of_space(exc):
            raise _no_space(dest) from None
        raise


def zip_folder(folder: Path, dest: Path, prefix: str = "", compression: int = zipfile.ZIP_DEFLATED) -> Path:
    """Every file under `folder` into the zip `dest` (written atomically), as `prefix/relative/path`."""
    with atomic_path(dest) as tmp, zipfile.ZipFile(tmp, "w", compression) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                rel = path.relative_to(folder).as_posix()
                archive.write(path, f"{prefix}/{rel}" if prefix else rel)
    return dest
