"""Caption curation: bulk edits (previewed before they apply), filters and a seeded split.

Bulk edits are pure functions from the draft's captions to new captions, so the page can show how
many captions an edit would change before the user applies it.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Literal

from pydantic import BaseModel

from core.datasets.draft import Draft, DraftItem, caption_problems, set_captions, set_splits
from core.datasets.ingest import filename_caption
from core.datasets.splits import assign_split, tags
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


def missing_input(edit: BulkEdit) -> str | None:
    """What the user still has to type before this edit can run (None when nothing)."""
    if edit.operation == "replace" and not edit.find:
        return "Find and replace needs something to find."
    if edit.operation == "prepend" and not edit.text.strip():
        return "Prepend needs a trigger word."
    if edit.operation == "append" and not edit.text.strip():
        return "Append needs some text."
    return None


def edited(item: DraftItem, edit: BulkEdit) -> str:
    if missing := missing_input(edit):
        raise StudioError(missing)
    caption = item.caption
    if edit.operation == "replace":
        try:
            return re.sub(edit.find, edit.text, caption)
        except re.error as exc:
            raise StudioError(f"The pattern {edit.find!r} is not a valid regular expression: {exc}.") from None
    if edit.operation == "prepend":
        word = edit.text.strip()
        return caption if caption.startswith(word) else f"{word}, {caption}" if caption else word
    if edit.operation == "append":
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


def resplit(draft: Draft, val_fraction: float, seed: int) -> int:
    return set_splits(draft, assign_split(draft.items, val_fraction, seed), label=f"split {val_fraction:.0%} val, seed {seed}")
