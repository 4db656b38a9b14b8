"""A run's or a folder's model as files other tools load, for the Export page and `studio model`.

The user-facing entry points: each checks the acting user's role (core.access) and, in team mode,
that a server folder lies under STUDIO_HOME. The conversions themselves are in `single_file` and
`lora_files`.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from core import audit
from core.access import require, server_path
from core.errors import StudioError
from core.modeling.lora_files import FOLDER, FORMATS
from core.modeling.single_file import export_single_file, import_single_file
from core.settings import get_settings

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def source_folder(ref: str) -> Path:
    """The local model folder of a run id or a folder path."""
    from core.tracking import model_folder

    if Path(ref).expanduser().is_dir():
        server_path(ref)
    return model_folder(ref)


def single_file(ref: str, out: Path | None = None) -> Path:
    """The model as one Stable Diffusion checkpoint: written to `out`, or made once per folder in the
    studio's cache (remade when the folder's weights are newer)."""
    require("export")
    folder = source_folder(ref)
    if out is not None:
        if out.suffix != ".safetensors":
            raise StudioError(f"{out.name} does not end in .safetensors, the single-file checkpoint's format.")
        return export_single_file(folder, server_path(out))
    cached = get_settings().cache_dir / "single-file" / f"{hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:16]}.safetensors"
    newest = max(p.stat().st_mtime for p in folder.rglob("*.safetensors"))
    if not cached.is_file() or cached.stat().st_mtime < newest:
        export_single_file(folder, cached)
    return cached


def files_for_tools(ref: str) -> dict[str, Path]:
    """The single-file checkpoint (`checkpoint`) and, for a model trained with LoRA, the adapter
    files by format (`diffusers`, `kohya`)."""
    checkpoint = single_file(ref)
    lora = source_folder(ref) / FOLDER
    return {"checkpoint": checkpoint} | {fmt: lora / name for fmt, name in FORMATS.items() if (lora / name).is_file()}


def lora_file(ref: str, fmt: str) -> Path:
    """The model's LoRA adapter alone, in `fmt` (see core.modeling.lora_files)."""
    require("export")
    path = source_folder(ref) / FOLDER / FORMATS[fmt]
    if not path.is_file():
        raise StudioError(f"The model of {ref} has no LoRA adapter (it was not trained with unet.lora_rank).")
    return path


def import_model(path: Path, config_ref: str, name: str) -> Path:
    """Import a single-file checkpoint as the model folder STUDIO_HOME/models/<name>, a fine-tuning base."""
    require("export")
    if not NAME.fullmatch(name):
        raise StudioError(f"{name!r} is not a usable model name; use letters, digits, '.', '_' and '-'.")
    dest = get_settings().models_dir / name
    if dest.exists():
        raise StudioError(f"A model named {name} already exists at {dest}.")
    imported = import_single_file(server_path(path), source_folder(config_ref), dest)
    audit.record("model.import", name, source=str(path), config=config_ref)
    return imported
