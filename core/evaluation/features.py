"""The feature networks the distribution metrics can use, by name.

Light to import (the CLI and the page list the names): torch and each network load on first use.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, get_args

if TYPE_CHECKING:
    import numpy as np
    import torch

    from core.evaluation.evaluator import Evaluator

FeatureName = Literal["evaluator", "inception", "imagenet"]
FEATURES: tuple[str, ...] = get_args(FeatureName)
DESCRIPTIONS: dict[str, str] = {
    "evaluator": "the dataset's own evaluator CNN (fast; what the benchmarks report)",
    "inception": "the standard Inception FID network (about 1 image/s on a CPU: keep N small)",
    "imagenet": "EfficientNet-Lite0 ImageNet features, for colour sets (about 10 images/s on a CPU thread)",
}
Extractor = Callable[["np.ndarray"], "np.ndarray"]


def extractor(name: FeatureName, evaluator: Evaluator) -> Extractor:
    """(N, 3, H, W) uint8 images -> (N, D) features, for the named network."""
    if name == "inception":
        from core.evaluation.inception import inception_features

        return inception_features
    if name == "imagenet":
        from core.evaluation.imagenet import imagenet_features

        return imagenet_features
    return evaluator.features


def pooled_features(images: np.ndarray, size: int, forward: Callable[[torch.Tensor], torch.Tensor], batch: int = 16) -> np.ndarray:
    """Resize uint8 batches to `size` (pixels in [0, 1]), run `forward`, spatially average-pool."""
    import numpy as np
    import torch

    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            x = torch.from_numpy(images[start : start + batch]).float() / 255.0
            x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
            feats = forward(x)
            out.append(feats.flatten(2).mean(2).numpy() if feats.ndim > 2 else feats.numpy())
    return np.concatenate(out)
