"""The feature networks the distribution metrics can use, by name.

Light to import (the CLI and the page list the names): torch and each network load on first use.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, get_args

if TYPE_CHECKING:
    import numpy as np

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

