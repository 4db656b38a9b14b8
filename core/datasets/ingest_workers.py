"""Reading, checking and storing an import's images, in worker processes when the import is large.

`store_image` is the whole per-image work: read the entry (streamed to a file when larger than
`STREAM_ABOVE`), decode and hash it, and write it into the draft folder, to its content-addressed
file (and its original, when converted) or, when it cannot be used, to the quarantine. `store_images`
runs it for every image in order, in the studio's own process for small imports or uploads held in
memory, and otherwise in a pool of `STUDIO_IMPORT_WORKERS` processes that reopen each zip member or
file themselves: decoding is CPU-bound Python and C that one process cannot spread over cores.

The pool's processes come from a fork server (a fresh interpreter that imports this module once),
never forked from the studio's own threaded process, and they never run this process's main
module: multiprocessing would run it again in each worker, and under Streamlit that is the page
script (the script runner makes it `__main__`), which must not run outside the studio.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import types
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path, PurePosixPath
from typing import NamedTuple

from core.datasets import safety
from core.datasets.images import StoredImage, prepare_image
from core.datasets.safety import Entry
from core.errors import StudioError

Progress = Callable[[float, str], None]

STREAM_ABOVE = 16 << 20  # larger entries go to disk in chunks, not through memory
PARALLEL_ABOVE = 500  # fewer images are stored in this process: starting workers would cost more
MAX_WORKERS = 8


def write_new(path: Path, data: bytes | Path) -> None:
    """Create a file in the private draft folder: three system calls, where `open()` makes five.
    A file already on disk (a streamed entry) is moved there instead."""
    if isinstance(data, Path):
        os.rename(data, path)
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def quarantine_path(dest: Path, rel: PurePosixPath) -> Path:
    """Where an unusable file of the upload is kept, inside the draft's quarantine."""
    target = safety.inside(dest / "quarantine", rel)
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


class Stored(NamedTuple):
    """One image of an import: what the draft records (or why it cannot be used; the file then
    sits in the quarantine), and the bytes of its caption file when one was given to read along."""

    image: StoredImage | str
    caption: bytes | None


def store_image(entry: Entry, dest: Path, index: int, min_side: int, caption: Entry | None = None) -> Stored:
    """Read, check and hash one image entry and write it into the draft at `dest`; read its
    caption file `caption` too, so that a worker process reads both."""
    raw: bytes | Path
    if entry.size > STREAM_ABOVE:
        raw = dest / f".incoming-{index}"
        entry.copy_to(raw)
    else:
        raw = entry.read()
    text = caption.read() if caption is not None else None
    prepared = prepare_image(raw, entry.path, min_side)
    if isinstance(prepared, str):
        write_new(quarantine_path(dest, entry.path), raw)
        return Stored(prepared, text)
    image, data = prepared
    for file, content in ((f"images/{image.sha256}.{image.ext}", data), (image.original, raw)):
        if file:
            try:
                write_new(dest / file, content)
            except FileExistsError:
                pass  # content-addressed: another entry stored the same bytes already
    if isinstance(raw, Path):
        raw.unlink(missing_ok=True)  # not moved: the same content was already stored
    return Stored(image, text)


def worker_count(setting: int, images: Sequence[Entry]) -> int:
    """Processes for this import: 1 (this process) for small imports and uploads held in memory."""
    if len(images) < PARALLEL_ABOVE or any(entry.origin is None for entry in images):
        return 1
    return min(setting or os.cpu_count() or 1, MAX_WORKERS)


def store_images(images: Sequence[tuple[Entry, Entry | None]], dest: Path, min_side: int, workers: int, progress: Progress | None = None) -> Iterator[Stored]:
    """`store_image` of every (image, caption file), yielded in order, from `workers` processes
    (1: this one).

    The caller's work on each result overlaps the workers' on the next ones. Close the generator
    (`contextlib.closing`) before removing `dest`: closing cancels the chunks not started and
    waits for the running ones, so no worker writes into `dest` after that.
    """
    if workers <= 1:
        for index, (entry, caption) in enumerate(images):
            if progress and index % 25 == 0:
                progress(index / len(images), f"Read {index}/{len(images)} images")
            yield store_image(entry, dest, index, min_side, caption)
        return
    # Chunks small enough for a live progress bar and an even load, large enough that the
    # round trips between processes cost little. Entries travel as their origins (Entry.__reduce__).
    size = max(16, min(256, len(images) // (workers * 8)))
    starts = range(0, len(images), size)
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        with main_module_hidden():  # the workers start as the first chunks are submitted
            futures = [pool.submit(store_chunk, start, images[start : start + size], dest, min_side) for start in starts]
        try:
            for start, future in zip(starts, futures, strict=True):
                if progress:
                    progress(start / len(images), f"Read {start}/{len(images)} images")
                yield from future.result()
        except BrokenProcessPool:
            raise StudioError(
                "A process reading the images stopped unexpectedly; nothing was imported. "
                "Set STUDIO_IMPORT_WORKERS=1 to read them in the studio's own process."
            ) from None
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


@contextmanager
def main_module_hidden() -> Iterator[None]:
    """While worker processes start: a `__main__` with no file and no name, so that they have no
    main module to run again (multiprocessing's "safe importing of main module")."""
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def store_chunk(start: int, images: Sequence[tuple[Entry, Entry | None]], dest: Path, min_side: int) -> list[Stored]:
    """In a worker process: `store_image` of each (image, caption file), numbered from `start`."""
    return [store_image(entry, dest, index, min_side, caption) for index, (entry, caption) in enumerate(images, start)]
