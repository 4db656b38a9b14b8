"""Caption curation: bulk edits (previewed before they apply), filters and a seeded split.

Bulk edits are pure functions from the draft's captions to new captions, so the page can show how
many captions an edit would change before the user applies it.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from pathlib import PurePosixPath
from typing import Literal

from pydantic import BaseModel

from core.datasets.draft import Draft, DraftItem, caption_problems, set_captions, set_splits
from core.datasets.ingest import filename_caption
from core.errors import StudioError

Operation = Literal["replace", "prepend", "append", "lowercase", "strip", "from_filename"]
OPERATIONS: dict[Operation, str] = {
    "replace": "Find and replace (regex)",
    "prepend": "Prepend a trigger word",
    "append": "Append text",
    "lowercase": "Lowercase",
    "strip": "Strip spaces and stray commas",
    "from_filename": "Caption from the file name",
}


class BulkEdit(BaseModel):
    operation: Operation
    find: str = ""
    text: str = ""


class Filter(BaseModel):
    text: str = ""
    tag: str = ""
    min_side: int = 0
    max_side: int = 0
    validity: Literal["all", "valid", "needs fix"] = "all"


def tags(caption: str) -> list[str]:
    """Comma-separated tags, kohya style ("1girl, red hair, smiling")."""
    return [t.strip().lower() for t in caption.split(",") if t.strip()]


def edited(item: DraftItem, edit: BulkEdit) -> str:
    caption = item.caption
    if edit.operation == "replace":
        if not edit.find:
            raise StudioError("Find and replace needs something to find.")
        try:
            return re.sub(edit.find, edit.text, caption)
        except re.error as exc:
            raise StudioError(f"The pattern {edit.find!r} is not a valid regular expression: {exc}.") from None
    if edit.operation == "prepend":
        word = edit.text.strip()
        if not word:
            raise StudioError("Prepend needs a trigger word.")
        return caption if caption.startswith(word) else f"{word}, {caption}" if caption else word
    if edit.operation == "append":
        if not edit.text.strip():
            raise StudioError("Append needs some text.")
        return f"{caption}{edit.text}" if caption else edit.text.strip()
    if edit.operation == "lowercase":
        return caption.lower()
    if edit.operation == "strip":
        return re.sub(r"\s+", " ", caption).strip().strip(",").strip()
    return filename_caption(PurePosixPath(item.id))


def preview(items: list[DraftItem], edit: BulkEdit) -> dict[str, str]:
    """The new captions an edit would give, only for the items it changes."""
    changes = {}
    for item in items:
        new = edited(item, edit)
        if new != item.caption:
            changes[item.id] = new
    return changes


def apply_bulk(draft: Draft, edit: BulkEdit, ids: set[str] | None = None) -> int:
    """Apply an edit to the given items (all when None); one undo step; return how many changed."""
    items = [i for i in draft.items if ids is None or i.id in ids]
    return set_captions(draft, preview(items, edit), label=OPERATIONS[edit.operation])


def matches(item: DraftItem, flt: Filter) -> bool:
    if flt.text and flt.text.lower() not in item.caption.lower() and flt.text.lower() not in item.id.lower():
        return False
    if flt.tag and flt.tag.lower() not in tags(item.caption) and flt.tag.lower() != item.label.lower():
        return False
    side = min(item.width, item.height)
    if flt.min_side and side < flt.min_side:
        return False
    if flt.max_side and side > flt.max_side:
        return False
    if flt.validity != "all" and bool(caption_problems(item)) != (flt.validity == "needs fix"):
        return False
    return True


def filter_items(items: list[DraftItem], flt: Filter) -> list[DraftItem]:
    return [item for item in items if matches(item, flt)]


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


def resplit(draft: Draft, val_fraction: float, seed: int) -> int:
    return set_splits(draft, assign_split(draft.items, val_fraction, seed), label=f"split {val_fraction:.0%} val, seed {seed}")
