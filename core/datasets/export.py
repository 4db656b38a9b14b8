"""Export a version in the Hugging Face `imagefolder` layout, as a folder or a zip.

`train/` and `validation/` each hold their images and a `metadata.jsonl` with `file_name` and
`text`, so `datasets.load_dataset("imagefolder", data_dir=...)` reads the splits as they are, and
`studio dataset import` reads the export back.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

from core.access import server_path
from core.datasets.versions import ManifestItem, materialize, read_manifest, resolve
from core.errors import StudioError
from core.files import atomic_path, staged_folder

SPLIT_DIRS = {"train": "train", "val": "validation"}


def export_name(item: ManifestItem, index: int) -> str:
    """A readable, unique file name: the imported name's stem plus the position."""
    stem = Path(item.source).stem if item.source else item.sha256[:12]
    return f"{index:05d}_{stem}{Path(item.file).suffix}"


def layout(items: list[ManifestItem]) -> list[tuple[str, ManifestItem]]:
    return [(f"{SPLIT_DIRS[item.split]}/{export_name(item, i)}", item) for i, item in enumerate(items)]


def metadata(entries: list[tuple[str, ManifestItem]]) -> dict[str, str]:
    """metadata.jsonl text per split folder."""
    lines: dict[str, list[str]] = {}
    for path, item in entries:
        folder, file_name = path.split("/", 1)
        lines.setdefault(folder, []).append(json.dumps({"file_name": file_name, "text": item.caption}, ensure_ascii=False))
    return {f"{folder}/metadata.jsonl": "\n".join(rows) + "\n" for folder, rows in lines.items()}


def export_zip(ref: str, dest: Path, progress: Callable[[float, str], None] | None = None) -> Path:
    """Write the version as an imagefolder zip (images are stored, not recompressed)."""
    name, version = resolve(ref)
    source = materialize(name, version)
    entries = layout(read_manifest(name, version))
    with atomic_path(dest) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
        for i, (path, item) in enumerate(entries):
            zf.write(source / item.file, f"{name}/{path}")
            if progress and i % 100 == 0:
                progress(i / len(entries), f"Zipped {i}/{len(entries)} images")
        for path, text in metadata(entries).items():
            zf.writestr(f"{name}/{path}", text)
    return dest


def export_folder(ref: str, dest: Path) -> Path:
    """Write the version as an imagefolder folder; `dest` must not exist yet."""
    dest = server_path(dest)
    name, version = resolve(ref)
    if dest.exists():
        raise StudioError(f"{dest} already exists; choose a new folder for the export.")
    source = materialize(name, version)
    entries = layout(read_manifest(name, version))
    with staged_folder(dest) as tmp:
        for path, item in entries:
            (tmp / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / item.file, tmp / path)
        for path, text in metadata(entries).items():
            (tmp / path).write_text(text, encoding="utf-8")
    return dest
