"""Dataset statistics for the page's plots: sizes, aspect ratios, caption lengths, words, tags, buckets."""

from __future__ import annotations

import re
from collections import Counter

import pandas as pd

from core.datasets.buckets import BucketSummary, aspect_buckets, summarize
from core.datasets.draft import DraftItem, caption_tokens
from core.datasets.splits import split_key

STOPWORDS = frozenset("a an the of and or in on with at to for by from is are".split())


def item_frame(items: list[DraftItem]) -> pd.DataFrame:
    """One row per item: width, height, aspect, caption length, tokens, split, class."""
    return pd.DataFrame(
        {
            "file": [i.id for i in items],
            "width": [i.width for i in items],
            "height": [i.height for i in items],
            "aspect": [round(i.width / i.height, 3) for i in items],
            "caption_chars": [len(i.caption) for i in items],
            "tokens": [caption_tokens(i.caption) for i in items],
            "split": [i.split for i in items],
            "class": [split_key(i) or "(none)" for i in items],
        }
    )


def top_words(items: list[DraftItem], n: int = 25) -> pd.DataFrame:
    counts = Counter(
        word for item in items for word in re.findall(r"[\w']+", item.caption.lower()) if word not in STOPWORDS
    )
    return pd.DataFrame(counts.most_common(n), columns=["word", "count"])


def class_balance(items: list[DraftItem]) -> pd.DataFrame:
    counts = Counter(split_key(i) or "(none)" for i in items)
    return pd.DataFrame(sorted(counts.items(), key=lambda kv: -kv[1]), columns=["class", "count"])


def bucket_histogram(items: list[DraftItem], resolution: int, step: int, max_aspect: float) -> tuple[pd.DataFrame, BucketSummary]:
    """Images per aspect-ratio bucket (most first) as a training at `resolution` would place them,
    with how many of each are upscaled; the summary also counts the images left out."""
    summary = summarize(((i.width, i.height) for i in items), aspect_buckets(resolution, step, max_aspect=max_aspect))
    frame = pd.DataFrame(
        {
            "bucket": [f"{w}×{h}" for w, h in summary.images],
            "images": list(summary.images.values()),
            "upscaled": list(summary.upscaled.values()),
        }
    )
    return frame, summary
