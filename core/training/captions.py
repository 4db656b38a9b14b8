"""Caption noise for the UNet stage: random whole words inserted into training captions.

A text encoder trained with the UNet sees only the words of its captions; the token embeddings of
every other word stay at their random start, and a prompt that uses one (a user's "an image of …")
can derail it. Inserting random vocabulary words into a share of the captions teaches it that a
word it does not know changes nothing (bench/results/quality_ablations.json has the figures).
"""

from __future__ import annotations

import re

import torch
from transformers import CLIPTokenizer

END_OF_WORD = "</w>"
MAX_INSERTED = 2  # words per noised caption: one or two


def vocabulary_words(tokenizer: CLIPTokenizer) -> list[str]:
    """The tokenizer's whole lower-case English words (each one token), in a fixed order; the
    tokenizer lower-cases prompts, and its other entries are byte pieces."""
    return sorted(t[: -len(END_OF_WORD)] for t in tokenizer.get_vocab() if t.endswith(END_OF_WORD) and re.fullmatch("[a-z]+", t[: -len(END_OF_WORD)]))


def insert_random_words(caption: str, words: list[str], generator: torch.Generator) -> str:
    """`caption` with one to MAX_INSERTED of `words` inserted at random word boundaries."""
    parts = caption.split()
    count = 1 + int(torch.randint(MAX_INSERTED, (1,), generator=generator))
    for _ in range(count):
        at = int(torch.randint(len(parts) + 1, (1,), generator=generator))
        parts.insert(at, words[int(torch.randint(len(words), (1,), generator=generator))])
    return " ".join(parts)


def noise_captions(captions: list[str], share: float, words: list[str], generator: torch.Generator) -> list[str]:
    """Each non-empty caption, with probability `share`, with random words inserted; empty ones
    (dropped for classifier-free guidance) stay empty."""
    chosen = (torch.rand(len(captions), generator=generator) < share).tolist()
    return [insert_random_words(c, words, generator) if pick and c else c for c, pick in zip(captions, chosen, strict=True)]
