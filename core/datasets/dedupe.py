"""Duplicates: exact (same sha256) and near (perceptual hash within a Hamming distance).

Perceptual hashes come from `imagehash.phash` (64 bits), computed once on import. The near search
compares every pair with vectorised XOR + popcount in blocks, then joins pairs into clusters with
union-find; 10,000 hashes take well under a second (bench/ingest.py measures it).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from core.datasets.draft import Draft, DraftItem, remove_items

BLOCK = 1024


def exact_clusters(items: list[DraftItem]) -> list[list[DraftItem]]:
    groups: dict[str, list[DraftItem]] = defaultdict(list)
    for item in items:
        groups[item.sha256].append(item)
    return [group for group in groups.values() if len(group) > 1]


def hashes_array(hex_hashes: list[str]) -> np.ndarray:
    return np.array([int(h, 16) if h else 0 for h in hex_hashes], dtype=np.uint64)


def near_pairs(hashes: np.ndarray, threshold: int) -> list[tuple[int, int]]:
    """Index pairs (i < j) whose hashes differ in at most `threshold` bits."""
    pairs: list[tuple[int, int]] = []
    for start in range(0, len(hashes), BLOCK):
        block = hashes[start : start + BLOCK]
        distances = np.bitwise_count(block[:, None] ^ hashes[None, start:])
        rows, cols = np.nonzero(distances <= threshold)
        cols = cols + start
        keep = cols > rows + start
        pairs.extend(zip((rows[keep] + start).tolist(), cols[keep].tolist(), strict=True))
    return pairs


def clusters_from_pairs(n: int, pairs: list[tuple[int, int]]) -> list[list[int]]:
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[int]] = defaultdict(list)
    for i in range(n):
        groups[find(i)].append(i)
    return [members for members in groups.values() if len(members) > 1]


def near_clusters(items: list[DraftItem], threshold: int) -> list[list[DraftItem]]:
    """Groups of images whose perceptual hashes are within `threshold` bits (exact copies included)."""
    hashed = [item for item in items if item.phash]
    pairs = near_pairs(hashes_array([item.phash for item in hashed]), threshold)
    return [[hashed[i] for i in members] for members in clusters_from_pairs(len(hashed), pairs)]


def keep_one_per_cluster(draft: Draft, clusters: list[list[DraftItem]]) -> int:
    """Remove all but the largest image (then the first by name) of each cluster; one undo step."""
    drop = set()
    for cluster in clusters:
        keep = min(cluster, key=lambda i: (-i.width * i.height, i.id))
        drop.update(item.id for item in cluster if item.id != keep.id)
    return remove_items(draft, drop, label=f"keep one of {len(clusters)} duplicate clusters")
