"""The demo dataset: scikit-learn's 1,797 real handwritten digits, upscaled to 32×32 and captioned."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image

from core.datasets.versions import NewItem, list_versions, write_version

DEMO_NAME = "digits"
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SIZE = 32


def digit_caption(digit: int) -> str:
    return f"a handwritten digit {DIGIT_WORDS[digit]}"


def digit_images() -> tuple[np.ndarray, np.ndarray]:
    """(N, 32, 32) uint8 images (white strokes on black) and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    small = (digits.images / 16.0 * 255.0).clip(0, 255).astype(np.uint8)
    images = np.stack(
        [np.asarray(Image.fromarray(img).resize((SIZE, SIZE), Image.Resampling.BICUBIC)) for img in small]
    )
    return images, digits.target.astype(np.int64)


def demo_items() -> list[NewItem]:
    images, labels = digit_images()
    items = []
    for i, (img, label) in enumerate(zip(images, labels, strict=True)):
        buffer = io.BytesIO()
        Image.fromarray(img).convert("RGB").save(buffer, format="PNG", optimize=False)
        items.append(
            NewItem(
                data=buffer.getvalue(),
                ext="png",
                caption=digit_caption(int(label)),
                width=SIZE,
                height=SIZE,
                split="val" if i % 10 == 9 else "train",
                source=f"digit_{i:04d}_{label}.png",
            )
        )
    return items


def ensure_demo_dataset(progress: Callable[[float, str], None] | None = None) -> str:
    """Create the demo dataset if it is missing; return its `name@version`."""
    existing = list_versions(DEMO_NAME)
    if existing:
        return f"{DEMO_NAME}@{existing[-1].version}"
    version = write_version(DEMO_NAME, demo_items(), note="scikit-learn load_digits, 32×32", progress=progress)
    return f"{DEMO_NAME}@{version}"
