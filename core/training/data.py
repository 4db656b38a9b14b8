"""The training data: a dataset-version folder loaded into memory as uint8 tensors, one per bucket.

The batch for a step is a pure function of (seed, step, rank), so a resumed run sees exactly the
batches an uninterrupted run would have seen; no sampler state needs saving. A batch comes from one
bucket (its images have one size). Training square is the one-bucket case of the same code.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.datasets.buckets import BucketSpec, Placement, Size, by_count
from core.datasets.pixels import load_placed
from core.datasets.versions import MANIFEST, parse_manifest
from core.errors import StudioError
from core.modeling.tokenizer import clean_caption


@dataclass
class Split:
    """Images by bucket, and captions and placements by index: bucket 0's images first, then bucket 1's, …"""

    buckets: list[torch.Tensor]  # one (n, 3, h, w) uint8 tensor per bucket size, most images first
    captions: list[str]
    placements: list[Placement]  # each image's original size, crop and bucket (SDXL's crop coordinates)
    dropped: int = 0  # images more elongated than any bucket, left out

    def __len__(self) -> int:
        return len(self.captions)

    @property
    def upscaled(self) -> int:
        """Images enlarged to fill their bucket."""
        return sum(p.upscaled for p in self.placements)

    @property
    def counts(self) -> list[int]:
        return [len(images) for images in self.buckets]

    @property
    def sizes(self) -> list[Size]:
        """(width, height) of each bucket, most images first."""
        return [(images.shape[3], images.shape[2]) for images in self.buckets]

    def locate(self, index: torch.Tensor) -> tuple[int, torch.Tensor]:
        """The bucket of these indices (one for all) and their positions in it."""
        starts = np.cumsum([0, *self.counts])
        bucket = int(np.searchsorted(starts, int(index[0]), side="right")) - 1
        local = index - int(starts[bucket])
        if int(local.min()) < 0 or int(local.max()) >= self.counts[bucket]:
            raise ValueError("a batch must come from one bucket")
        return bucket, local

    def pixels(self, index: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1], as the VAE expects."""
        bucket, local = self.locate(index)
        return self.buckets[bucket][local].float() / 127.5 - 1.0

    def chunks(self, size: int) -> Iterator[torch.Tensor]:
        """Every index, in order, in runs of at most `size` that stay within a bucket."""
        start = 0
        for n in self.counts:
            yield from torch.arange(start, start + n).split(size)
            start += n

    def head(self, n: int) -> Split:
        """The first `n` images (bucket by bucket)."""
        kept, left = [], n
        for images in self.buckets:
            if left > 0:
                kept.append(images[:left])
                left -= len(kept[-1])
        return Split(kept, self.captions[:n], self.placements[:n])

    def captioned(self, caption: str) -> Split:
        """The same images, every one captioned `caption` (a subject's instance or class prompt)."""
        return Split(self.buckets, [caption] * len(self), self.placements, self.dropped)

    def join(self, other: Split) -> Split:
        """This split's images, then `other`'s: `other`'s buckets follow this one's (a size both hold is
        two buckets, so an index still says which split it comes from)."""
        return Split(self.buckets + other.buckets, self.captions + other.captions, self.placements + other.placements, self.dropped + other.dropped)


def load_split(folder: Path, entries: list, spec: BucketSpec) -> Split:
    """The entries' images in their buckets; buckets ordered by image count, images by manifest order."""
    images: dict[Size, list[np.ndarray]] = {}
    placed: dict[Size, list[tuple[str, Placement]]] = {}
    dropped = 0
    for entry in entries:
        loaded = load_placed(folder / entry.file, spec)
        if loaded is None:
            dropped += 1
            continue
        pixels, placement = loaded
        images.setdefault(placement.target, []).append(pixels)
        placed.setdefault(placement.target, []).append((clean_caption(entry.caption), placement))
    order = by_count(Counter({size: len(group) for size, group in images.items()}))
    return Split(
        [torch.from_numpy(np.stack(images[size])) for size in order],
        [caption for size in order for caption, _ in placed[size]],
        [placement for size in order for _, placement in placed[size]],
        dropped,
    )


def load_splits(folder: Path, spec: BucketSpec) -> tuple[Split, Split]:
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
    train = load_split(folder, splits["train"], spec)
    if not len(train):
        raise StudioError(f"No training image in {folder} fits a bucket: all are more elongated than buckets.max_aspect {spec.max_aspect}.")
    val = load_split(folder, splits["val"], spec)
    if not len(val):
        val = train.head(max(1, len(train) // 10))
    return train, val


def _generator(seed: int, epoch: int, stream: int) -> torch.Generator:
    # Stream 0 (the first bucket's images) keeps the seeds the square-only studio used.
    return torch.Generator().manual_seed(seed * 100_003 + epoch + stream * 2**32)


SCHEDULE = -1  # the stream that orders the buckets' batches within a round


def batch_indices(counts: list[int], batch_size: int, step: int, seed: int, rank: int = 0, world: int = 1) -> torch.Tensor:
    """Indices of one process's batch at `step`, all from one bucket (`counts`: images per bucket).

    Each bucket's images form an endless stream of seeded permutations (its epochs), cut into
    batches in order: a batch that reaches the end of an epoch is filled from the next one, so no
    batch is short and none is dropped. A round holds, for each bucket, enough batches to show all
    its images, in a seeded order; the run's batches are the rounds' in turn, and process `rank`
    takes batch `step * world + rank`. With one bucket, the batches are its stream read in order.
    """
    per_round = [math.ceil(n / batch_size) for n in counts]
    number = step * world + rank
    round_, slot = divmod(number, sum(per_round))
    schedule = torch.cat([torch.full((m,), b) for b, m in enumerate(per_round)])
    schedule = schedule[torch.randperm(len(schedule), generator=_generator(seed, round_, SCHEDULE))]
    bucket = int(schedule[slot])
    batch = round_ * per_round[bucket] + int((schedule[:slot] == bucket).sum())
    n = counts[bucket]
    perms: dict[int, torch.Tensor] = {}
    result = []
    for offset in range(batch * batch_size, (batch + 1) * batch_size):
        epoch, position = divmod(offset, n)
        if epoch not in perms:
            perms[epoch] = torch.randperm(n, generator=_generator(seed, epoch, bucket))
        result.append(perms[epoch][position])
    return sum(counts[:bucket]) + torch.stack(result)


def prior_batch_indices(subject: list[int], prior: list[int], batch_size: int, step: int, seed: int, rank: int = 0, world: int = 1) -> torch.Tensor:
    """A prior-preservation batch over a split holding the subject's buckets (`subject`: images per
    bucket), then the class images' (`prior`): `batch_size` subject indices from one bucket, then as
    many class indices from one bucket (the objective takes the two halves apart, as diffusers'
    train_dreambooth does). Each half is a seeded stream of its own, so the batch stays a pure
    function of (seed, step, rank)."""
    subject_half = batch_indices(subject, batch_size, step, seed, rank, world)
    prior_half = batch_indices(prior, batch_size, step, seed + 1, rank, world)
    return torch.cat([subject_half, sum(subject) + prior_half])
