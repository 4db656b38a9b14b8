"""A training's buckets: the spec its config and model give, the sizes it samples at, and the
`buckets.json` it leaves in the model folder for inference. The bucket maths is in
`core/datasets/buckets.py`, shared with the Datasets page."""

from __future__ import annotations

import json
from pathlib import Path

from core.datasets.buckets import TRAINED_SIZES_FILE, BucketSpec, Size, aspect_buckets
from core.errors import StudioError
from core.files import atomic_write_text
from core.training.config import BucketsConfig

# (resolution, step) of each preset, known without building a model (the Datasets page has no
# torch): the step is the VAE's downsampling times the UNet's. `finetune` assumes a Stable
# Diffusion 1.x base (512 px, 8 × 8). tests/test_buckets.py checks these against the real models.
PRESET_GRIDS: dict[str, tuple[int, int]] = {"tiny": (32, 8), "tiny-wide": (32, 8), "small": (64, 16), "base": (256, 64), "finetune": (512, 64)}


def bucket_spec(config: BucketsConfig, resolution: int, step: int, limits: tuple[int, int]) -> BucketSpec:
    """The spec a training uses: the square alone when buckets are off. `limits` are the smallest
    and largest sides the model generates; a bucket outside them could never be sampled."""
    if not config.enabled:
        return BucketSpec.square(resolution)
    low, high = limits
    for key, side in (("min_side", config.min_side), ("max_side", config.max_side)):
        if side is not None and not low <= side <= high:
            raise StudioError(f"The config value 'buckets.{key}' ({side}) must be between {low} and {high}, the sizes this model generates.")
    return aspect_buckets(resolution, step, config.min_side, config.max_side, config.max_aspect)


def sample_sizes(trained: list[Size], resolution: int) -> list[Size]:
    """The sizes sample grids show: the most common trained size and the square, so a grid stays
    readable however many buckets there are."""
    return list(dict.fromkeys([trained[0], (resolution, resolution)]))


def write_trained_sizes(model_dir: Path, trained: list[Size], resolution: int) -> None:
    """`buckets.json` in the model folder: the sizes it was trained at, most images first."""
    atomic_write_text(model_dir / TRAINED_SIZES_FILE, json.dumps({"sizes": [list(s) for s in trained], "resolution": resolution}))
