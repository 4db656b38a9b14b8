"""A stored image as model input, read the same way by training and evaluation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from core.datasets.buckets import BucketSpec, Placement, place


def load_placed(path: Path, spec: BucketSpec) -> tuple[np.ndarray, Placement] | None:
    """(3, h, w) uint8 for the image's bucket: RGB, cropped around the centre to the bucket's aspect,
    resized to it; with its placement. None when the image fits no bucket."""
    with Image.open(path) as img:
        placement = place(img.size, spec)
        if placement is None:
            return None
        img = img.convert("RGB").crop(placement.crop)
        if img.size != placement.target:
            img = img.resize(placement.target, Image.Resampling.BICUBIC)
        return np.asarray(img).transpose(2, 0, 1).copy(), placement


def load_image(path: Path, resolution: int) -> np.ndarray:
    """(3, r, r) uint8: RGB, the centre square, resized to the training resolution."""
    placed = load_placed(path, BucketSpec.square(resolution))
    assert placed is not None  # the square spec keeps every image
    return placed[0]
