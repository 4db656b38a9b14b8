"""Train/validation splits: seeded, stratified by class, and the default a new import gets.

A dataset without a validation split has no held-out loss and nothing to evaluate against, so an
import whose files name no split (no `train/` and `val/` folders) gets one here.
"""

from __future__ import annotations

import random
from collections import defaultdict

from core.datasets.draft import DraftItem
from core.errors import StudioError

DEFAULT_VAL_FRACTION = 0.1
DEFAULT_SEED = 0
MIN_ITEMS_FOR_VAL = 10  # below this, every image is worth more to training than to a held-out estimate


def tags(caption: str) -> list[str]:
    """Comma-separated tags, kohya style ("1girl, red hair, smiling")."""
    return [t.strip().lower() for t in caption.split(",") if t.strip()]


def split_key(item: DraftItem) -> str:
    """What a stratified split balances: the label (class folder), else the first tag."""
    if item.label:
        return item.label
    first = tags(item.caption)
    return first[0] if len(first) > 1 else ""


def assign_split(items: list[DraftItem], val_fraction: float, seed: int) -> dict[str, str]:
    """A seeded train/val split, stratified by label or first tag when there are any."""
    if not 0.0 <= val_fraction < 1.0:
        raise StudioError("The validation fraction must be at least 0 and below 1.")
    groups: dict[str, list[str]] = defaultdict(list)
    for item in sorted(items, key=lambda i: i.id):
        groups[split_key(item)].append(item.id)
    rng = random.Random(seed)
    splits = {}
    for key in sorted(groups):
        ids = groups[key]
        rng.shuffle(ids)
        n_val = round(len(ids) * val_fraction)
        for i, item_id in enumerate(ids):
            splits[item_id] = "val" if i < n_val else "train"
    return splits


def default_split(items: list[DraftItem]) -> int:
    """Give items that arrived without a validation split the default one; returns how many went to val."""
    if len(items) < MIN_ITEMS_FOR_VAL or any(item.split == "val" for item in items):
        return 0
    splits = assign_split(items, DEFAULT_VAL_FRACTION, DEFAULT_SEED)
    for item in items:
        item.split = splits[item.id]  # type: ignore[assignment]
    return sum(split == "val" for split in splits.values())
