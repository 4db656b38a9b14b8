"""Distribution metrics between real and generated image features (rows are images).

- Fréchet distance (Heusel et al. 2017): the distance between two Gaussians fitted to the features.
  It is biased by the sample size, so compare figures only at the same N (the floors use the same N).
- KID (Bińkowski et al. 2018): the unbiased MMD² with the cubic polynomial kernel, averaged over
  random subsets; unbiased, so near 0 (even slightly negative) for two samples of one distribution.
- Precision / recall (Kynkäänniemi et al. 2019) and density / coverage (Naeem et al. 2020), from
  k-nearest-neighbour balls (k=5). Coverage is the share of real images with a generated image in
  their neighbourhood: class-mean images (which fool a classifier) cover almost nothing.
"""

from __future__ import annotations

import warnings

import numpy as np
from pydantic import BaseModel
from scipy import linalg

K = 5


def frechet_distance(real: np.ndarray, fake: np.ndarray) -> float:
    mu1, mu2 = real.mean(0), fake.mean(0)
    s1, s2 = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    with warnings.catch_warnings():  # singular products (dead ReLU features) are handled just below
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean, _ = linalg.sqrtm(s1 @ s2, disp=False)
    if not np.isfinite(covmean).all():  # near-singular product: regularise as the reference code does
        offset = np.eye(len(s1)) * 1e-6
        covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
    value = float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real))
    return max(value, 0.0)


def kernel_inception_distance(real: np.ndarray, fake: np.ndarray, subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """(mean, std) of the unbiased MMD² over `subsets` random subsets of `subset_size` (capped at N)."""
    rng = np.random.default_rng(seed)
    m = min(subset_size, len(real), len(fake))
    dim = real.shape[1]
    values = []
    for _ in range(subsets):
        x = real[rng.choice(len(real), m, replace=False)]
        y = fake[rng.choice(len(fake), m, replace=False)]
        kxx = (x @ x.T / dim + 1) ** 3
        kyy = (y @ y.T / dim + 1) ** 3
        kxy = (x @ y.T / dim + 1) ** 3
        values.append((kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean())
    return float(np.mean(values)), float(np.std(values))


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return np.maximum(d, 0)


def _radii(x: np.ndarray, k: int) -> np.ndarray:
    """Squared distance from each row to its k-th nearest other row."""
    d = _squared_distances(x, x)
    return np.partition(d, k, axis=1)[:, k]  # column 0 is the row itself


class NeighbourMetrics(BaseModel):
    precision: float
    recall: float
    density: float
    coverage: float


def neighbour_metrics(real: np.ndarray, fake: np.ndarray, k: int = K) -> NeighbourMetrics:
    real_radii, fake_radii = _radii(real, k), _radii(fake, k)
    d = _squared_distances(real, fake)  # (real, fake)
    inside_real = d < real_radii[:, None]  # fake j lies in real i's ball
    return NeighbourMetrics(
        precision=float(inside_real.any(0).mean()),
        recall=float((d < fake_radii[None, :]).any(1).mean()),
        density=float(inside_real.sum() / (k * len(fake))),
        coverage=float(inside_real.any(1).mean()),
    )


class DistributionMetrics(BaseModel):
    frechet: float
    kid: float
    kid_std: float
    precision: float
    recall: float
    density: float
    coverage: float


def compare(real: np.ndarray, fake: np.ndarray, seed: int = 0) -> DistributionMetrics:
    """Every distribution metric of `fake` against `real`, in float64."""
    real, fake = real.astype(np.float64), fake.astype(np.float64)
    kid, kid_std = kernel_inception_distance(real, fake, seed=seed)
    return DistributionMetrics(frechet=frechet_distance(real, fake), kid=kid, kid_std=kid_std, **neighbour_metrics(real, fake).model_dump())
