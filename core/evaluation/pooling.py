"""Running a feature network over uint8 image batches: resize, forward, spatial average-pool.

Shared by the feature networks (inception.py, imagenet.py); features.py picks one by name.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch


def pooled_features(images: np.ndarray, size: int, forward: Callable[[torch.Tensor], torch.Tensor], batch: int = 16) -> np.ndarray:
    """Resize uint8 batches to `size` (pixels in [0, 1]), run `forward`, spatially average-pool."""
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            x = torch.from_numpy(images[start : start + batch]).float() / 255.0
            x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
            feats = forward(x)
            out.append(feats.flatten(2).mean(2).numpy() if feats.ndim > 2 else feats.numpy())
    return np.concatenate(out)
