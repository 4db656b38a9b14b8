"""The simple baseline the `fashion` recipe is measured against, on the recipe's own evaluator.

Issue 16 set the studio's recipe a bar: a model any of us could write in an afternoon. A linear
autoencoder (PCA of the 32×32 train images to 128 numbers) and a small MLP that denoises those
numbers, conditioned on the class label (not a caption), trained with the recipe's noise schedule
and sampled like the recipe (DDIM, 25 steps, classifier-free guidance). It is evaluated exactly as
`bench/quality_fashion.py` evaluates the recipe: the same real val images, seeds of the same kind,
N images balanced over the classes, the dataset's evaluator (prompt accuracy, Fréchet distance on
its features over the real-vs-real floor, coverage), plus the PCA's own floor (its reconstructions
of N real images, as the VAE floor is for the recipe). Trains on the train split only.

    .venv/bin/python bench/quality_fashion_baseline.py [--guidance G ...] [--n 1000] [--steps 3000] [--home DIR]
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import repo_on_path  # noqa: F401  (first: benchmarks run as files)

import core  # noqa: F401
import numpy as np
import torch
from torch import nn

COMPONENTS = 128  # as issue 16 specified it


def fit_pca(pixels: np.ndarray, k: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(mean, components (k, d), scale): x ≈ mean + (z * scale) @ components, z about unit variance."""
    x = torch.from_numpy(pixels).double()
    mean = x.mean(0)
    _, _, v = torch.linalg.svd(x - mean, full_matrices=False)
    components = v[:k]
    scale = float(((x - mean) @ components.T).std())
    return mean.float(), components.float(), scale


class Denoiser(nn.Module):
    """ε-prediction on the PCA numbers: residual MLP blocks, the timestep and class added to the input."""

    def __init__(self, classes: int, components: int, width: int = 512, blocks: int = 3) -> None:
        super().__init__()
        self.classes = classes  # index `classes` is the empty condition, for guidance
        self.label = nn.Embedding(classes + 1, width)
        self.time = nn.Sequential(nn.Linear(128, width), nn.SiLU(), nn.Linear(width, width))
        self.inp = nn.Linear(components, width)
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 2 * width), nn.SiLU(), nn.Linear(2 * width, width)) for _ in range(blocks))
        self.out = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, components))

    def forward(self, z: torch.Tensor, t: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        freqs = torch.exp(-math.log(10_000) * torch.arange(64) / 64)
        angles = t.float()[:, None] * freqs[None]
        h = self.inp(z) + self.time(torch.cat([angles.sin(), angles.cos()], 1)) + self.label(label)
        for block in self.blocks:
            h = h + block(h)
        return self.out(h)


def train(z: torch.Tensor, labels: torch.Tensor, classes: int, steps: int, batch: int, lr: float, dropout: float) -> Denoiser:
    from diffusers import DDPMScheduler
    from diffusers.optimization import get_cosine_schedule_with_warmup

    torch.manual_seed(0)
    model = Denoiser(classes, z.shape[1])
    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = get_cosine_schedule_with_warmup(optimizer, min(50, steps // 10), steps)  # as the recipe's stages
    for _ in range(steps):
        index = torch.randint(len(z), (batch,))
        x0, label = z[index], labels[index].clone()
        label[torch.rand(batch) < dropout] = classes
        noise = torch.randn_like(x0)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (batch,))
        loss = nn.functional.mse_loss(model(scheduler.add_noise(x0, noise, t), t, label), noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    return model.eval()


@torch.no_grad()
def sample(model: Denoiser, labels: np.ndarray, guidance: float, steps: int, seed: int) -> torch.Tensor:
    """DDIM (η = 0) with classifier-free guidance, as the studio samples ("trailing" spacing)."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, timestep_spacing="trailing", steps_offset=1, clip_sample=False, set_alpha_to_one=False)
    scheduler.set_timesteps(steps)
    label = torch.from_numpy(labels).long()
    empty = torch.full_like(label, model.classes)
    z = torch.randn(len(labels), model.inp.in_features, generator=torch.Generator().manual_seed(seed))
    for t in scheduler.timesteps:
        tt = t.repeat(len(labels))
        cond, uncond = model(z, tt, label), model(z, tt, empty)
        z = scheduler.step(uncond + guidance * (cond - uncond), t, z).prev_sample
    return z


def to_images(z: torch.Tensor, mean: torch.Tensor, components: torch.Tensor, scale: float) -> np.ndarray:
    """PCA numbers -> (N, 3, 32, 32) uint8, grey in all three channels as the real images are."""
    from core.evaluation.data import RESOLUTION

    grey = (mean + (z * scale) @ components).clamp(0, 255).round().byte().numpy().reshape(-1, 1, RESOLUTION, RESOLUTION)
    return np.repeat(grey, 3, axis=1)


def run_baseline(ref: str, n: int, guidance: list[float], sample_steps: int = 25, steps: int = 3000, batch_size: int = 256, lr: float = 1e-3, components: int = COMPONENTS) -> dict[str, Any]:
    """Train the baseline on `ref`'s train split and score it as evaluate() scores a model."""
    from bench.common import machine
    from core.evaluation.data import Version, label_of
    from core.evaluation.evaluate import real_samples
    from core.evaluation.evaluator import get_evaluator
    from core.evaluation.features import extractor
    from core.evaluation.metrics import compare
    from quality_fashion import meets_target

    version = Version.open(ref)
    evaluator = get_evaluator(version)
    extract = extractor("evaluator", evaluator)
    classes = evaluator.info.labels

    started = time.time()
    grey = version.images(version.train)[:, 0].reshape(len(version.train), -1).astype(np.float32)
    mean, basis, scale = fit_pca(grey, components)
    z = ((torch.from_numpy(grey) - mean) @ basis.T) / scale
    labels = torch.tensor([classes.index(label_of(i)) for i in version.train])
    model = train(z, labels, len(classes), steps, batch_size, lr, dropout=0.1)
    train_s = time.time() - started

    reference, other, _, _ = real_samples(version, n, 0)  # the real images evaluate() compares against
    real = extract(reference)
    floor = compare(real, extract(other))
    other_grey = torch.from_numpy(other[:, 0].reshape(len(other), -1).astype(np.float32))
    pca_floor = compare(real, extract(to_images((other_grey - mean) @ basis.T / scale, mean, basis, scale)))

    prompted = np.repeat(np.arange(len(classes)), n // len(classes))
    results = {}
    for g in guidance:
        images = to_images(sample(model, prompted, g, sample_steps, seed=0), mean, basis, scale)
        metrics = compare(real, extract(images))
        accuracy = float((evaluator.predict(images) == prompted).mean())
        results[f"cfg_{g:g}"] = {
            "prompt_accuracy": round(accuracy, 4),
            "frechet": round(metrics.frechet, 2),
            "frechet_over_real_floor": round(metrics.frechet / floor.frechet, 2),
            "coverage": round(metrics.coverage, 3),
            "precision": round(metrics.precision, 3),
            "recall": round(metrics.recall, 3),
            "meets_target": meets_target(accuracy, metrics.frechet / floor.frechet, metrics.coverage),
        }
    return {
        "model": {"what": f"PCA to {components} numbers + a class-conditioned residual MLP denoiser (ε, the recipe's DDPM schedule)", "steps": steps, "batch_size": batch_size, "lr": lr, "parameters": sum(p.numel() for p in model.parameters())},
        "n": len(prompted),
        "sampling_steps": sample_steps,
        "results": results,
        "evaluator_ceiling": round(evaluator.info.held_out_accuracy, 4),
        "floor_real_frechet": round(floor.frechet, 2),
        "floor_real_coverage": round(floor.coverage, 3),
        "floor_pca_frechet_over_real_floor": round(pca_floor.frechet / floor.frechet, 2),
        "floor_pca_coverage": round(pca_floor.coverage, 3),
        "train_wall_s": round(train_s, 1),
        "load_average": machine()["load_average"],
    }


def main() -> None:
    from bench.common import write_result
    from core.datasets.builtin import import_builtin
    from quality_fashion import TARGET

    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1000, help="generated images per guidance scale, balanced over the classes")
    parser.add_argument("--guidance", type=float, action="append", help="default: 1, 1.5, 2 and 3")
    parser.add_argument("--steps", type=int, default=3000, help="denoiser training steps")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--components", type=int, default=COMPONENTS, help="PCA components (the latent's size)")
    parser.add_argument("--result", default="quality_fashion_baseline", help="bench/results/<RESULT>.json")
    parser.add_argument("--sample-steps", type=int, default=25)
    parser.add_argument("--home", type=Path, help="reuse this studio home (keeps the import and the evaluator)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["STUDIO_HOME"] = str(args.home or tmp)
        ref = import_builtin("fashion-mnist")
        result = run_baseline(ref, args.n, args.guidance or [1, 1.5, 2, 3], args.sample_steps, args.steps, args.batch_size, args.lr, args.components)
        write_result(args.result, {"dataset": ref, "features": "evaluator", **result, "target": TARGET})


if __name__ == "__main__":
    main()
