"""Caption noise: random words and marks inserted into training captions, seeded, labels kept."""

from __future__ import annotations

import torch

from core.modeling.tokenizer import load_tokenizer
from core.training.captions import MAX_INSERTED, noise_captions, noise_tokens


def test_noise_inserts_known_single_tokens_and_keeps_the_caption() -> None:
    tokenizer = load_tokenizer()
    tokens = noise_tokens(tokenizer)
    assert len(tokens.words) > 30_000 and {"image", "an", "closeup"} <= set(tokens.words)
    assert {"-", ",", "/", "."} <= set(tokens.marks)  # what users' prompts and class names carry
    for token in tokens.words[:: len(tokens.words) // 50] + tokens.marks:  # each one token between bos and eos
        assert len(tokenizer(token).input_ids) == 3, token

    captions = ["a photo of a sneaker", "", "a bag"] * 200
    noised = noise_captions(captions, 0.5, tokens, torch.Generator().manual_seed(0))
    assert noised == noise_captions(captions, 0.5, tokens, torch.Generator().manual_seed(0))  # seeded: resume sees the same
    changed = marks = 0
    for before, after in zip(captions, noised, strict=True):
        if not before:
            assert after == ""  # dropped for guidance: stays unconditioned
            continue
        extra = len(after.split()) - len(before.split())
        assert 0 <= extra <= MAX_INSERTED
        rest = iter(after.split())
        assert all(word in rest for word in before.split())  # every caption word kept, in order
        changed += extra > 0
        marks += sum(part in tokens.marks for part in after.split())
    assert 150 < changed < 250  # about half of the 400 non-empty captions
    assert 30 < marks < 130  # about a quarter of the ~300 inserted tokens are marks
    assert noise_captions(captions, 0.0, tokens, torch.Generator().manual_seed(0)) == captions
