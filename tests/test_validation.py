"""The training's sample grid reads on its own: each row carries its prompt."""

from __future__ import annotations

import numpy as np
from PIL import Image

from core.training.validation import LABEL_MAX_PX, prompt_grid


def test_each_row_is_labelled_with_its_prompt() -> None:
    rows = [Image.new("RGB", (64, 32), (0, 0, 200 + i)) for i in range(3)]
    grid = np.asarray(prompt_grid(rows, ["a handwritten digit seven", "one", "x" * 500]))
    label_w = grid.shape[1] - 64
    assert grid.shape[0] == 3 * 32 and 0 < label_w <= LABEL_MAX_PX + 12  # long prompts are cut
    for i in range(3):
        band = grid[i * 32 : (i + 1) * 32]
        assert (band[:, :label_w] < 128).any(), f"row {i} has no label"  # dark text on white
        assert (band[:, label_w:] == [0, 0, 200 + i]).all()  # the images themselves, untouched
