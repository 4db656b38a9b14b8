"""Dataset versions: immutable, content-addressed manifests of image–caption pairs.

A version lives under `datasets/<name>/<version>/` in the object store: `images/<sha256>.<ext>`
and `manifest.jsonl` (one `ManifestItem` per line). The version id is the hash of the manifest, so
the same content always gets the same id and an edit always makes a new one. The manifest is
written last and the catalog row in the same transaction, so a failed write leaves nothing behind.

In a local store a version is built in a temporary folder and renamed into place; images that
already exist as content-addressed files (a draft's) are hard-linked, not copied. Nothing ever
writes to such a file after it was created, so sharing it cannot change a version.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from core import audit
from core.access import require
from core.db import Dataset, DatasetVersion, session_scope
from core.errors import StudioError
from core.files import atomic_write_bytes, staged_folder
from core.settings import get_settings
from core.storage import LocalStore, get_store

NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")  # used with fullmatch: "cats\n" is not a name
MANIFEST = "manifest.jsonl"
# The only file name a version holds: what `write_version` writes, images/<sha256>.<ext>.
FILE_RE = re.compile(r"images/(?P<sha256>[0-9a-f]{64})\.(?P<ext>[a-z0-9]{1,5})")


class ManifestItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    file: str = Field(description="Path inside the version folder: images/<sha256>.<ext>.")
    sha256: str
    caption: str
    width: int
    height: int
    split: Literal["train", "val"] = "train"
    source: str = Field("", description="The file name the image was imported from.")


@dataclass(frozen=True)
class NewItem:
    """An image to put into a version: encoded bytes (or a file holding them) plus what the manifest says of it."""

    data: bytes | Path
    ext: str
    caption: str
    width: int
    height: int
    split: Literal["train", "val"] = "train"
    source: str = ""
    sha256: str = ""  # the hash of `data` when the caller knows it (a draft's files are named by it)

    def digest(self) -> str:
        if self.sha256:
            return self.sha256
        return hashlib.sha256(self.data.read_bytes() if isinstance(self.data, Path) else self.data).hexdigest()


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise StudioError(
            f"The dataset name {name!r} is not valid; use lowercase letters, digits, '.', '_' or '-' (up to 64)."
        )
    return name


def version_prefix(name: str, version: str) -> str:
    return f"datasets/{name}/{version}"


def manifest_bytes(items: Iterable[ManifestItem]) -> bytes:
    lines = sorted(json.dumps(item.model_dump(), sort_keys=True, ensure_ascii=False) for item in items)
    return ("\n".join(lines) + "\n").encode()


def version_id(manifest: bytes) -> str:
    return hashlib.sha256(manifest).hexdigest()[:12]


def parse_manifest(data: bytes) -> list[ManifestItem]:
    return [ManifestItem.model_validate_json(line) for line in data.decode().splitlines() if line.strip()]


def split_stats(items: list[ManifestItem]) -> dict[str, int]:
    return {
        "items": len(items),
        "train": sum(item.split == "train" for item in items),
        "val": sum(item.split == "val" for item in items),
    }


def write_version(
    name: str,
    items: list[NewItem],
    *,
    parent: str | None = None,
    note: str = "",
    progress: Callable[[float, str], None] | None = None,
) -> str:
    """Store the images and the manifest, record the version in the catalog; return the version id."""
    require("import")  # every new version ends here: imports, curation, the built-in datasets
    check_name(name)
    if not items:
        raise StudioError("A dataset version needs at least one valid image.")
    manifest_items = []
    for item in items:
        sha = item.digest()
        manifest_items.append(
            ManifestItem(
                file=f"images/{sha}.{item.ext}",
                sha256=sha,
                caption=item.caption,
                width=item.width,
                height=item.height,
                split=item.split,
                source=item.source,
            )
        )
    manifest = manifest_bytes(manifest_items)
    version = version_id(manifest)
    if find_version(name, version) is not None:
        return version

    store = get_store()
    prefix = version_prefix(name, version)
    files = {entry.file: item.data for item, entry in zip(items, manifest_items, strict=True)}
    try:
        if isinstance(store, LocalStore):
            build_local(store.path(prefix), files, manifest, progress)
        else:
            shas = {entry.file: entry.sha256 for entry in manifest_items}
            for i, (file, data) in enumerate(files.items()):
                if isinstance(data, Path):  # S3 checks it against the hash the manifest holds
                    store.put_file(f"{prefix}/{file}", data, shas[file])
                else:
                    store.put_bytes(f"{prefix}/{file}", data)
                if progress and (i % 50 == 0 or i == len(files) - 1):
                    progress((i + 1) / len(files), f"Stored {i + 1}/{len(files)} images")
            store.put_bytes(f"{prefix}/{MANIFEST}", manifest)
        with session_scope() as session:
            dataset = session.scalar(select(Dataset).where(Dataset.name == name))
            if dataset is None:
                dataset = Dataset(name=name)
                session.add(dataset)
                session.flush()
            session.add(
                DatasetVersion(
                    dataset_id=dataset.id,
                    version=version,
                    parent=parent,
                    note=note,
                    n_items=len(manifest_items),
                    stats=split_stats(manifest_items),
                )
            )
    except BaseException:
        if find_version(name, version) is None:  # not when a concurrent save of the same content won
            store.delete_prefix(prefix)
        raise
    audit.record("dataset.version", f"{name}@{version}", items=len(manifest_items), parent=parent, note=note)
    return version


def link_or_copy(src: Path, dest: Path) -> None:
    """Hard-link a content-addressed file; copy it where a link is impossible (another filesystem)."""
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)


def build_local(dest: Path, files: dict[str, bytes | Path], manifest: bytes, progress: Callable[[float, str], None] | None) -> None:
    """Write a version folder under a temporary name, manifest last, and rename it into place."""
    # A folder already at `dest` was left by a save that failed before its catalog row was written: replaced.
    with staged_folder(dest) as tmp:
        (tmp / "images").mkdir()
        for i, (file, data) in enumerate(files.items()):
            if isinstance(data, Path):
                link_or_copy(data, tmp / file)
            else:
                (tmp / file).write_bytes(data)
            if progress and (i % 200 == 0 or i == len(files) - 1):
                progress((i + 1) / len(files), f"Stored {i + 1}/{len(files)} images")
        (tmp / MANIFEST).write_bytes(manifest)


def find_version(name: str, version: str) -> DatasetVersion | None:
    with session_scope() as session:
        return session.scalar(
            select(DatasetVersion)
            .join(Dataset, Dataset.id == DatasetVersion.dataset_id)
            .where(Dataset.name == name, DatasetVersion.version == version)
        )


def list_versions(name: str) -> list[DatasetVersion]:
    """Versions of a dataset, newest first."""
    with session_scope() as session:
        return list(
            session.scalars(
                select(DatasetVersion)
                .join(Dataset, Dataset.id == DatasetVersion.dataset_id)
                .where(Dataset.name == name)
                .order_by(DatasetVersion.created_at.desc(), DatasetVersion.id.desc())
            )
        )


def list_datasets() -> list[Dataset]:
    with session_scope() as session:
        return list(session.scalars(select(Dataset).order_by(Dataset.name)))


def resolve(ref: str) -> tuple[str, str]:
    """`name@version` -> (name, version); a bare `name` means its newest version."""
    name, _, version = ref.partition("@")
    check_name(name)
    if version:
        if find_version(name, version) is None:
            raise StudioError(f"The dataset version {name}@{version} does not exist.")
        return name, version
    versions = list_versions(name)
    if not versions:
        raise StudioError(f"The dataset {name!r} does not exist; import it or run `studio demo` first.")
    return name, versions[0].version


def checked_manifest(name: str, version: str, data: bytes) -> list[ManifestItem]:
    """The items of a manifest read from the store, refused unless it is the one its version id names
    and every entry is a file name the store itself writes (nothing else is ever read, pushed or copied)."""
    ref = f"{name}@{version}"
    if version_id(data) != version:
        raise StudioError(f"The manifest of {ref} does not match its version id; the store was changed outside the studio, so it is not used.")
    try:
        items = parse_manifest(data)
    except ValueError:
        raise StudioError(f"The manifest of {ref} is not a valid manifest; the store was changed outside the studio.") from None
    for item in items:
        match = FILE_RE.fullmatch(item.file)
        if match is None or match["sha256"] != item.sha256:
            raise StudioError(f"The manifest of {ref} names the file {item.file!r}, which is not an image of the version; it is not used.")
    return items


def read_manifest(name: str, version: str) -> list[ManifestItem]:
    return checked_manifest(name, version, get_store().get_bytes(f"{version_prefix(name, version)}/{MANIFEST}"))


def inside_folder(folder: Path, file: str) -> Path:
    """`folder / file`, refused unless it resolves inside `folder`."""
    target = (folder / file).resolve()
    if not target.is_relative_to(folder.resolve()):
        raise StudioError(f"The file {file!r} would be written outside {folder}; it was refused.")
    return target


def materialize(name: str, version: str) -> Path:
    """A local folder holding the version (manifest + images): the store itself when it is local.

    From S3 only the manifest's own images are downloaded, after the manifest was checked against
    its version id, each inside the cache folder; the manifest is written last, so its presence
    means the folder is whole.
    """
    store = get_store()
    prefix = version_prefix(name, version)
    if isinstance(store, LocalStore):
        return store.path(prefix)
    dest = get_settings().cache_dir / prefix
    manifest = store.get_bytes(f"{prefix}/{MANIFEST}")
    items = checked_manifest(name, version, manifest)
    cached = dest / MANIFEST
    if not (cached.is_file() and cached.read_bytes() == manifest):
        for file in sorted({item.file for item in items}):
            target = inside_folder(dest, file)
            if not target.is_file():
                store.download(f"{prefix}/{file}", target)
        atomic_write_bytes(cached, manifest)
    return dest


class VersionDiff(BaseModel):
    added: list[ManifestItem]
    removed: list[ManifestItem]
    caption_changed: list[tuple[ManifestItem, ManifestItem]]


def diff_versions(name: str, old: str, new: str) -> VersionDiff:
    """Items added, removed and re-captioned between two versions (an item is its image + source name)."""
    before = {(item.sha256, item.source): item for item in read_manifest(name, old)}
    after = {(item.sha256, item.source): item for item in read_manifest(name, new)}
    return VersionDiff(
        added=[after[k] for k in after.keys() - before.keys()],
        removed=[before[k] for k in before.keys() - after.keys()],
        caption_changed=[(before[k], after[k]) for k in before.keys() & after.keys() if before[k].caption != after[k].caption],
    )
