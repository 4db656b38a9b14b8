"""A stored image as model input, read the same way by training and evaluation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def load_image(path: Path, resolution: int) -> np.ndarray:
    """(3, r, r) uint8: RGB, the centre square, resized to the training resolution."""
    with Image.open(path) as img:
        img = img.convert("RGB")
        side = min(img.size)
        left, top = (img.width - side) // 2, (img.height - side) // 2
        img = img.crop((left, top, left + side, top + side))
        if side != resolution:
            img = img.resize((resolution, resolution), Image.Resampling.BICUBIC)
        return np.asarray(img).transpose(2, 0, 1).copy()
