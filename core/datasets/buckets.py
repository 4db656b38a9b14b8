"""Aspect-ratio buckets: the image sizes a model trains on, and where each image goes.

Pure maths on (width, height) pairs, shared by training (`core/training/data.py`) and the Datasets
page's histogram, so the page shows exactly what a training will do. As kohya's and SimpleTuner's
buckets: every size has an area of at most resolution², sides that are multiples of the model's
step (its VAE's downsampling times its UNet's), between a smallest and a largest side. An image goes
to the bucket with the nearest aspect ratio, is cropped around its centre to that aspect and resized
to the bucket. Training square is the one-bucket case: every image is cropped to the centre square.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from core.errors import StudioError

Size = tuple[int, int]  # (width, height)
DEFAULT_MAX_ASPECT = 3.0  # a longer side over three times the shorter is a banner or a strip, not a photo
# In a model folder (and its ONNX export): the sizes a bucketed training used, most images first,
# as {"sizes": [[width, height], ...], "resolution": R}; the playground offers them.
TRAINED_SIZES_FILE = "buckets.json"


@dataclass(frozen=True)
class Placement:
    """Where one image goes: its crop (in its own pixels) and the bucket size that crop is resized to.

    The crop and sizes are what SDXL conditions on ("original size", "crop top-left", "target size")."""

    original: Size
    crop: tuple[int, int, int, int]  # (left, top, right, bottom)
    target: Size

    @property
    def upscaled(self) -> bool:
        """The crop is smaller than its bucket, so resizing enlarges it (the result is blurrier)."""
        return self.crop[2] - self.crop[0] < self.target[0]

    @property
    def crop_top_left(self) -> tuple[int, int]:
        """(top, left) of the crop in the image resized to cover the bucket, as SDXL's crop coordinates."""
        scale = self.target[0] / (self.crop[2] - self.crop[0])
        return round(self.crop[1] * scale), round(self.crop[0] * scale)


@dataclass(frozen=True)
class BucketSpec:
    """The bucket sizes of a training, and the most elongated image it keeps (None: every image)."""

    resolution: int
    sizes: tuple[Size, ...]
    max_aspect: float | None = None

    @classmethod
    def square(cls, resolution: int) -> BucketSpec:
        """One bucket, resolution × resolution, keeping every image: how the studio trained before buckets."""
        return cls(resolution, ((resolution, resolution),))


def side_range(resolution: int, step: int, min_side: int | None = None, max_side: int | None = None) -> tuple[int, int]:
    """The smallest and largest bucket side, on the step; by default half and twice the resolution,
    the range the studio's inference generates in."""
    low = max(step, math.ceil((min_side or resolution // 2 // step * step) / step) * step)
    high = (max_side or 2 * resolution) // step * step
    return low, high


def aspect_buckets(
    resolution: int, step: int, min_side: int | None = None, max_side: int | None = None, max_aspect: float = DEFAULT_MAX_ASPECT
) -> BucketSpec:
    """For each width on the step, the tallest height on the step whose area stays within
    resolution², both orientations, plus the largest square; sorted."""
    low, high = side_range(resolution, step, min_side, max_side)
    square = resolution // step * step
    if not low <= square <= high:
        raise StudioError(f"The bucket sides from {low} to {high} leave out the square {square}×{square}; choose a smallest side at most the resolution {resolution} and a largest side at least it.")
    sizes = {(square, square)}
    for width in range(low, high + 1, step):
        height = min(high, resolution * resolution // width // step * step)
        if height >= low and max(width, height) / min(width, height) <= max_aspect:
            sizes |= {(width, height), (height, width)}
    return BucketSpec(resolution, tuple(sorted(sizes)), max_aspect)


def crop_box(original: Size, target: Size) -> tuple[int, int, int, int]:
    """The largest centred region of `original` with the aspect ratio of `target`."""
    w, h = original
    tw, th = target
    if w * th > h * tw:  # wider than the bucket: keep the whole height
        cw, ch = min(w, max(1, round(h * tw / th))), h
    else:
        cw, ch = w, min(h, max(1, round(w * th / tw)))
    left, top = (w - cw) // 2, (h - ch) // 2
    return left, top, left + cw, top + ch


def place(original: Size, spec: BucketSpec) -> Placement | None:
    """The bucket with the nearest aspect ratio (ties: the larger, then the narrower), or None when the
    image is more elongated than the spec keeps."""
    w, h = original
    if spec.max_aspect is not None and max(w, h) / min(w, h) > spec.max_aspect:
        return None
    aspect = math.log(w / h)  # in log space a 2:1 image is as far from square as a 1:2 one
    target = min(spec.sizes, key=lambda s: (abs(math.log(s[0] / s[1]) - aspect), -s[0] * s[1], s))
    return Placement(original, crop_box(original, target), target)


def by_count(counts: Counter[Size]) -> list[Size]:
    """Bucket sizes, most images first (ties by size): the order training and `buckets.json` use."""
    return sorted(counts, key=lambda s: (-counts[s], s))


@dataclass(frozen=True)
class BucketSummary:
    """How a set of images spreads over a spec's buckets, before anything is loaded."""

    images: dict[Size, int]  # bucket → images, most first; empty buckets left out
    upscaled: dict[Size, int]  # bucket → images enlarged to fill it
    dropped: int  # images more elongated than the spec keeps


def summarize(sizes: Iterable[Size], spec: BucketSpec) -> BucketSummary:
    placements = [place(size, spec) for size in sizes]
    kept = [p for p in placements if p is not None]
    images = Counter(p.target for p in kept)
    upscaled = Counter(p.target for p in kept if p.upscaled)
    return BucketSummary({s: images[s] for s in by_count(images)}, {s: upscaled[s] for s in by_count(images)}, len(placements) - len(kept))
