"""The training data: a dataset-version folder loaded into memory as uint8 tensors.

The batch for a step is a pure function of (seed, step, rank), so a resumed run sees exactly the
batches an uninterrupted run would have seen; no sampler state needs saving.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.datasets.pixels import load_image
from core.datasets.versions import MANIFEST, parse_manifest
from core.errors import StudioError
from core.modeling.tokenizer import clean_caption


@dataclass
class Split:
    images: torch.Tensor  # (N, 3, H, W) uint8
    captions: list[str]

    def __len__(self) -> int:
        return len(self.captions)

    def pixels(self, index: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1], as the VAE expects."""
        return self.images[index].float() / 127.5 - 1.0


def load_splits(folder: Path, resolution: int) -> tuple[Split, Split]:
    """(train, val) from a dataset-version folder; val falls back to a slice of train if empty."""
    manifest = folder / MANIFEST
    if not manifest.is_file():
        raise StudioError(f"{folder} is not a dataset version (no {MANIFEST}).")
    items = parse_manifest(manifest.read_bytes())
    if not items:
        raise StudioError(f"The dataset in {folder} is empty.")
    splits: dict[str, list] = {"train": [], "val": []}
    for item in items:
        splits[item.split].append(item)
    if not splits["train"]:
        raise StudioError(f"The dataset in {folder} has no training images.")
    if not splits["val"]:
        splits["val"] = splits["train"][: max(1, len(splits["train"]) // 10)]

    def load(entries: list) -> Split:
        images = np.stack([load_image(folder / e.file, resolution) for e in entries])
        return Split(torch.from_numpy(images), [clean_caption(e.caption) for e in entries])

    return load(splits["train"]), load(splits["val"])


def batch_indices(n: int, batch_size: int, step: int, seed: int, rank: int = 0, world: int = 1) -> torch.Tensor:
    """Indices of one process's batch at `step`: epochs are seeded permutations, read in order."""
    start = (step * world + rank) * batch_size
    out = []
    for offset in range(start, start + batch_size):
        epoch, position = divmod(offset, n)
        out.append((epoch, position))
    perms: dict[int, torch.Tensor] = {}
    result = []
    for epoch, position in out:
        if epoch not in perms:
            perms[epoch] = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        result.append(perms[epoch][position])
    return torch.stack(result)
