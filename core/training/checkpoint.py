"""Checkpoints: the whole training state, so a resumed run continues exactly where it stopped.

`step-<order><stage>-<n>/` (e.g. `step-2unet-0000200`, sorting in training order) holds the model in the diffusers layout (safetensors) and `state.pt` (optimizer,
LR schedule, EMA, RNG states, stage and step). `latest` names the newest complete checkpoint; it is
written last, after the folder is renamed into place.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import torch

from core.errors import StudioError
from core.files import atomic_write_text, staged_folder

LATEST = "latest"


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
    atomic_write_text(root / LATEST, name)
    for old in sorted(p for p in root.glob("step-*") if p.is_dir())[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return dest


def latest_checkpoint(root: Path) -> Path | None:
    pointer = root / LATEST
    if not pointer.is_file():
        return None
    folder = root / pointer.read_text().strip()
    return folder if (folder / "state.pt").is_file() else None


def resolve_resume(root: Path, resume: str | None) -> Path | None:
    """The checkpoint folder `--resume` names: `latest` in `root` (None before the first), or a path."""
    if not resume:
        return None
    if resume == "latest":
        found = latest_checkpoint(root)
        if found is None:
            logging.getLogger("core.training").info("No checkpoint in %s yet; starting from the beginning.", root)
        return found
    path = Path(resume)
    if not (path / "state.pt").is_file():
        raise StudioError(f"{path} is not a checkpoint folder (state.pt is missing).")
    return path


def save_state(path: Path, state: dict[str, Any]) -> None:
    torch.save(state, path)


def load_state(path: Path) -> dict[str, Any]:
    # weights_only: tensors, numbers, strings and containers only; nothing that runs code.
    return torch.load(path, map_location="cpu", weights_only=True)
