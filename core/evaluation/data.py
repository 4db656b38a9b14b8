"""Real images of a dataset version, with the labels evaluators learn.

An item's label is the folder part of its `source` (`train/sneaker/00001.png` -> `sneaker`;
`Smileys & Emotion/face-smiling/1F600.png` -> `face-smiling`), as class-folder imports and the
built-in datasets name them; an item imported without a folder is labelled by its caption (the
demo digits: "a handwritten digit seven").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from core.datasets.pixels import load_image
from core.datasets.versions import ManifestItem, materialize, read_manifest, resolve

RESOLUTION = 32  # what evaluators and the metric features see


def label_of(item: ManifestItem) -> str:
    parent = PurePosixPath(item.source).parent.name
    return parent or item.caption


def to_array(images: list[Image.Image], resolution: int = RESOLUTION) -> np.ndarray:
    """Generated PIL images -> (N, 3, r, r) uint8, resized like the real ones."""
    out = []
    for img in images:
        img = img.convert("RGB")
        if img.size != (resolution, resolution):
            img = img.resize((resolution, resolution), Image.Resampling.BICUBIC)
        out.append(np.asarray(img).transpose(2, 0, 1))
    return np.stack(out)


@dataclass
class Version:
    """A dataset version's manifest, split by split, and where its files are."""

    ref: str
    folder: Path
    train: list[ManifestItem]
    val: list[ManifestItem]

    @classmethod
    def open(cls, ref: str) -> Version:
        name, version = resolve(ref)
        items = read_manifest(name, version)
        return cls(f"{name}@{version}", materialize(name, version), [i for i in items if i.split == "train"], [i for i in items if i.split == "val"])

    def images(self, items: list[ManifestItem], resolution: int = RESOLUTION) -> np.ndarray:
        return np.stack([load_image(self.folder / item.file, resolution) for item in items])
