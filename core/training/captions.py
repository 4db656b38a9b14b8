"""Caption noise for the UNet stage: random words and punctuation marks inserted into training captions.

A text encoder trained with the UNet sees only the tokens of its captions; the embeddings of every
other word stay at their random start, and a prompt that uses one (a user's "an image of …") can
derail it. Punctuation is worse: a mark that only one class's captions carry ("-" in "t-shirt")
becomes that class's cue, so "a close-up of a sneaker" draws a shirt. Inserting random words and
marks into a share of the captions teaches the encoder that a token it was not taught changes
nothing (bench/results/quality_ablations.json has the figures).
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

import torch
from transformers import CLIPTokenizer

END_OF_WORD = "</w>"
MAX_INSERTED = 2  # tokens per noised caption: one or two
MARK_SHARE = 0.25  # of inserted tokens that are marks: each of the 32 still gets hundreds of examples, and the words are not crowded out


@dataclass(frozen=True)
class NoiseTokens:
    """What caption noise inserts, each one token on its own."""

    words: list[str]  # whole lower-case English words
    marks: list[str]  # ASCII punctuation marks


def noise_tokens(tokenizer: CLIPTokenizer) -> NoiseTokens:
    """The tokenizer's whole lower-case words and ASCII marks, in a fixed order; the tokenizer
    lower-cases prompts, and its other entries are word pieces and byte pieces."""
    vocab = {t[: -len(END_OF_WORD)] for t in tokenizer.get_vocab() if t.endswith(END_OF_WORD)}
    return NoiseTokens(
        words=sorted(w for w in vocab if re.fullmatch("[a-z]+", w)),
        marks=[m for m in string.punctuation if m in vocab],
    )


def insert_random_tokens(caption: str, tokens: NoiseTokens, generator: torch.Generator) -> str:
    """`caption` with one to MAX_INSERTED random words or marks inserted at random word boundaries."""
    parts = caption.split()
    count = 1 + int(torch.randint(MAX_INSERTED, (1,), generator=generator))
    for _ in range(count):
        at = int(torch.randint(len(parts) + 1, (1,), generator=generator))
        pool = tokens.marks if float(torch.rand(1, generator=generator)) < MARK_SHARE else tokens.words
        parts.insert(at, pool[int(torch.randint(len(pool), (1,), generator=generator))])
    return " ".join(parts)


def noise_captions(captions: list[str], share: float, tokens: NoiseTokens, generator: torch.Generator) -> list[str]:
    """Each non-empty caption, with probability `share`, with random tokens inserted; empty ones
    (dropped for classifier-free guidance) stay empty."""
    chosen = (torch.rand(len(captions), generator=generator) < share).tolist()
    return [insert_random_tokens(c, tokens, generator) if pick and c else c for c, pick in zip(captions, chosen, strict=True)]
