"""Checkpoints: the whole training state, so a resumed run continues exactly where it stopped.

`step-<order><stage>-<n>/` (e.g. `step-2unet-0000200`, sorting in training order) holds the model in the diffusers layout (safetensors) and `state.pt` (optimizer,
LR schedule, EMA, RNG states, stage and step). `latest` names the newest complete checkpoint; it is
written last, after the folder is renamed into place.

Every checkpoint ends with `manifest.json`, the sha256 of each of its files, written last inside
the staged folder: only a checkpoint whose files match it is loaded (a checkpoint may come back from
S3, and DeepSpeed unpickles its own files). Resuming from `latest` falls back to the newest
checkpoint that is complete when `latest` is missing or incomplete, and refuses one whose files
were changed. One training process at a time writes a checkpoint folder (`hold_checkpoints`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import pickle
import shutil
from pathlib import Path
from typing import IO, Any

import torch

from core.errors import StudioError
from core.files import TEMP_PREFIX, atomic_write_text, staged_folder

LATEST = "latest"
MANIFEST = "manifest.json"
LOCK = ".lock"
log = logging.getLogger("core.training")


STAGE_ORDER = {"vae": 1, "unet": 2}


def checkpoint_name(stage: str, step: int) -> str:
    return f"step-{STAGE_ORDER[stage]}{stage}-{step:07d}"


def save_checkpoint(root: Path, name: str, write: Any, keep: int, staging: Path | None = None) -> Path:
    """Call `write(staging)`, rename it to `root/name`, point `latest` at it, prune old ones.

    `staging` is given when other processes (DeepSpeed ranks) write into the same folder first.
    """
    dest = root / name
    with staged_folder(dest, staging) as folder:
        write(folder)
        write_manifest(folder)
    atomic_write_text(root / LATEST, name)
    for old in sorted(p for p in root.glob("step-*") if p.is_dir())[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return dest


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(folder: Path) -> None:
    """The sha256 of every file in the checkpoint, written last (the folder is complete once it exists)."""
    digests = {name: _sha256(folder / name) for name in _files(folder)}
    atomic_write_text(folder / MANIFEST, json.dumps({"files": digests}, indent=1))


class TamperedCheckpoint(StudioError):
    """A checkpoint whose files differ from the digests the studio recorded when it saved them."""


def verify_checkpoint(folder: Path) -> None:
    """Raise one sentence unless `folder` is a complete checkpoint whose files the studio wrote.

    A missing part raises `StudioError`; a file whose content changed (state.pt then loads exactly
    as saved), or one the manifest does not list, raises `TamperedCheckpoint`.
    """
    if not (folder / "state.pt").is_file():
        raise StudioError(f"The checkpoint {folder} is incomplete (state.pt is missing).")
    try:
        recorded = json.loads((folder / MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        raise StudioError(f"The checkpoint {folder} has no readable {MANIFEST}, so the studio cannot tell that it wrote it.") from None
    missing = sorted(set(recorded) - set(_files(folder)))
    if missing:
        raise StudioError(f"The checkpoint {folder} is incomplete ({missing[0]} is missing).")
    for name in _files(folder):
        if name not in recorded or _sha256(folder / name) != recorded[name]:
            raise TamperedCheckpoint(f"The checkpoint {folder} was changed after the studio saved it ({name} does not match its recorded sha256); it will not be loaded.")


def latest_checkpoint(root: Path) -> Path | None:
    """The newest checkpoint in `root` that verifies: the one `latest` names, else the newest before it
    (logged). None when there is no checkpoint at all; one sentence when none verifies, or one was changed."""
    pointer = root / LATEST
    named = root / pointer.read_text().strip() if pointer.is_file() else None
    candidates = sorted((p for p in root.glob("step-*") if p.is_dir()), reverse=True)
    if named is not None and named in candidates:
        candidates.remove(named)
        candidates.insert(0, named)
    if not candidates:
        if named is not None:
            raise StudioError(f"The latest checkpoint {named} is missing and {root} holds no other checkpoint to resume from.")
        return None
    problems = []
    for folder in candidates:
        try:
            verify_checkpoint(folder)
        except TamperedCheckpoint:
            raise
        except StudioError as exc:
            problems.append(str(exc))
            continue
        if problems or folder != named:
            why = problems[0] if problems else f"{LATEST} names {named.name if named else 'no checkpoint'}."
            log.warning("Resuming from %s, the newest checkpoint that verifies: %s", folder.name, why)
        return folder
    raise StudioError(f"No checkpoint in {root} can be resumed: {problems[0]}")


def resolve_resume(root: Path, resume: str | None) -> Path | None:
    """The checkpoint folder `--resume` names: `latest` in `root` (None before the first), or a path.

    Either is verified against its manifest before anything in it is loaded."""
    if not resume:
        return None
    if resume == "latest":
        found = latest_checkpoint(root)
        if found is None:
            log.info("No checkpoint in %s yet; starting from the beginning.", root)
        return found
    path = Path(resume)
    if not (path / "state.pt").is_file():
        raise StudioError(f"{path} is not a checkpoint folder (state.pt is missing).")
    verify_checkpoint(path)
    return path


def hold_checkpoints(root: Path) -> IO[str] | None:
    """Take the lock on the checkpoint folder, held until the returned file is closed (or the process
    ends); a second training process on the same folder refuses with one sentence. Only the first
    process on each machine (LOCAL_RANK 0) takes it: the ranks of one job share the folder."""
    if int(os.environ.get("LOCAL_RANK", "0")) != 0:
        return None
    root.mkdir(parents=True, exist_ok=True)
    lock = open(root / LOCK, "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise StudioError(f"Another training process is writing checkpoints to {root}; stop it before starting this one.") from None
    # What a killed trainer left half-written: nobody else writes here while the lock is held, and
    # no checkpoint is written before the first steps.
    for stale in root.glob(f"{TEMP_PREFIX}*"):
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink(missing_ok=True)
    return lock


def save_state(path: Path, state: dict[str, Any]) -> None:
    # Through a Python file: a full disk then surfaces as the OSError (errno kept) under torch's RuntimeError.
    with open(path, "wb") as f:
        torch.save(state, f)


def load_state(path: Path) -> dict[str, Any]:
    # weights_only: tensors, numbers, strings and containers only; nothing that runs code.
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError):  # truncated, not a zip, a cut-short pickle
        raise StudioError(
            f"The checkpoint state {path} is damaged or incomplete, so the training was not resumed from it."
        ) from None
