"""Caption noise: random whole words inserted into training captions, seeded, labels kept."""

from __future__ import annotations

import torch

from core.modeling.tokenizer import load_tokenizer
from core.training.captions import MAX_INSERTED, noise_captions, vocabulary_words


def test_noise_inserts_known_single_token_words_and_keeps_the_caption() -> None:
    tokenizer = load_tokenizer()
    words = vocabulary_words(tokenizer)
    assert len(words) > 30_000 and {"image", "an", "closeup"} <= set(words)
    for word in words[:: len(words) // 50]:  # each one token between bos and eos, as the encoder sees it
        assert len(tokenizer(word).input_ids) == 3, word

    captions = ["a photo of a sneaker", "", "a bag"] * 200
    noised = noise_captions(captions, 0.5, words, torch.Generator().manual_seed(0))
    assert noised == noise_captions(captions, 0.5, words, torch.Generator().manual_seed(0))  # seeded: resume sees the same
    changed = 0
    for before, after in zip(captions, noised, strict=True):
        if not before:
            assert after == ""  # dropped for guidance: stays unconditioned
            continue
        extra = len(after.split()) - len(before.split())
        assert 0 <= extra <= MAX_INSERTED
        rest = iter(after.split())
        assert all(word in rest for word in before.split())  # every caption word kept, in order
        changed += extra > 0
    assert 150 < changed < 250  # about half of the 400 non-empty captions
    assert noise_captions(captions, 0.0, words, torch.Generator().manual_seed(0)) == captions
