"""Evaluate a trained model against a dataset version: generate, extract features, compare.

For each guidance scale, N images are generated with fixed seeds (the same seeds at every scale),
balanced over the version's labels, prompted with that label's val captions. Each result holds the
prompt accuracy (with the evaluator's held-out accuracy, its ceiling) and the distribution metrics
against real val images; two floors come with it, computed at the same N: real-vs-real (another real
sample) and, for latent models, the VAE reconstruction of that sample (generation cannot beat the
decoder).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pydantic import BaseModel, Field

from core.errors import StudioError
from core.evaluation.data import Version, label_of, to_array
from core.evaluation.evaluator import get_evaluator
from core.evaluation.features import FeatureName, extractor
from core.evaluation.request import EvalRequest
from core.evaluation.metrics import DistributionMetrics, compare
from core.inference.torch_backend import GenerateRequest, TorchGenerator, image_grid

Progress = Callable[[float, str], None]
GRID_LABELS, GRID_PER_LABEL = 10, 8


class GuidanceResult(BaseModel):
    guidance: float
    prompt_accuracy: float
    metrics: DistributionMetrics
    seconds: float
    images_per_second: float


class EvalResult(BaseModel):
    model: str
    dataset: str
    features: FeatureName
    n: int
    n_real: int
    steps: int
    evaluator_accuracy: float = Field(description="The evaluator's accuracy on real held-out images: the ceiling.")
    floor_real: DistributionMetrics = Field(description="Real val images against another real sample.")
    floor_vae: DistributionMetrics = Field(description="Real val images against the VAE reconstruction of that sample.")
    floor_source: str
    results: list[GuidanceResult]
    grids: dict[str, str] = Field(default_factory=dict, description="guidance -> grid image file")


def plan(version: Version, labels: list[str], n: int) -> list[tuple[int, str, int]]:
    """(label index, prompt, count) batches: n images balanced over labels, ≤16 per batch,
    prompts cycling through each label's val captions (its train captions if val has none)."""
    per_label = max(1, n // len(labels))
    batches = []
    for index, label in enumerate(labels):
        captions = sorted({i.caption for i in version.val if label_of(i) == label}) or sorted({i.caption for i in version.train if label_of(i) == label})
        left, k = per_label, 0
        while left > 0:
            count = min(16, left)
            batches.append((index, captions[k % len(captions)], count))
            left -= count
            k += 1
    return batches


def real_samples(version: Version, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, str, list]:
    """(reference, other) real images at RESOLUTION and where `other` came from, plus its items."""
    rng = np.random.default_rng(seed)
    val = [version.val[i] for i in rng.permutation(len(version.val))]
    if not val:
        raise StudioError(f"{version.ref} has no val split to evaluate against.")
    if len(val) >= 2 * n:
        ref, other, source = val[:n], val[n : 2 * n], "two disjoint halves of val"
    else:
        ref = val[:n]
        train = [version.train[i] for i in rng.permutation(len(version.train))[: len(ref)]]
        other, source = train, "val against a train sample (val is smaller than 2N)"
    return version.images(ref), version.images(other), source, other


@torch.no_grad()
def vae_reconstruct(generator: TorchGenerator, version: Version, items: list) -> np.ndarray:
    """Encode and decode real images at the model's resolution, the path every generation ends on."""
    vae = generator.components.vae
    out = []
    images = version.images(items, generator.resolution)
    for start in range(0, len(images), 32):
        x = torch.from_numpy(images[start : start + 32]).float().to(generator.device) / 127.5 - 1.0
        decoded = vae.decode(vae.encode(x).latent_dist.mode()).sample
        pixels = ((decoded.clamp(-1, 1) + 1) * 127.5).round().byte().cpu().numpy()
        out.extend(Image.fromarray(p.transpose(1, 2, 0)) for p in pixels)
    return to_array(out)


def evaluate(request: EvalRequest, out_dir: Path, progress: Progress | None = None) -> EvalResult:
    from core.tracking import model_folder

    say = progress or (lambda f, text: None)
    version = Version.open(request.dataset)
    say(0.0, f"Preparing the evaluator for {version.ref}")
    evaluator = get_evaluator(version, progress=lambda f, text: say(0.1 * f, text))
    extract = extractor(request.features, evaluator)
    labels = [label for label in evaluator.info.labels if any(label_of(i) == label for i in version.val)]
    batches = plan(version, labels, request.n)
    n = sum(count for _, _, count in batches)

    generator = TorchGenerator(model_folder(request.model))
    say(0.1, "Loading real images and the floors")
    reference, other, floor_source, other_items = real_samples(version, n, request.seed)
    real_features = extract(reference)
    floor_real = compare(real_features, extract(other), request.seed)
    floor_vae = compare(real_features, extract(vae_reconstruct(generator, version, other_items)), request.seed)

    out_dir.mkdir(parents=True, exist_ok=True)
    results, grids = [], {}
    label_index = {label: evaluator.info.labels.index(label) for label in labels}
    for g_i, guidance in enumerate(request.guidance):
        images: list[Image.Image] = []
        prompted: list[int] = []
        started = time.time()
        for b_i, (index, prompt, count) in enumerate(batches):
            seed = request.seed + 1000 * index + b_i  # the same seeds at every guidance scale
            images += generator(GenerateRequest(prompt=prompt, steps=request.steps, guidance=guidance, seed=seed, batch=count))
            prompted += [label_index[labels[index]]] * count
            done = (g_i + (b_i + 1) / len(batches)) / len(request.guidance)
            say(0.15 + 0.8 * done, f"Guidance {guidance:g}: generated {len(images)}/{n}")
        seconds = time.time() - started
        array = to_array(images)
        accuracy = float((evaluator.predict(array) == np.array(prompted)).mean())
        results.append(GuidanceResult(guidance=guidance, prompt_accuracy=accuracy, metrics=compare(real_features, extract(array), request.seed), seconds=round(seconds, 1), images_per_second=round(n / seconds, 2)))
        grids[f"{guidance:g}"] = str(save_grid(images, prompted, out_dir / f"grid_cfg{guidance:g}.png"))
    say(1.0, "Done")
    return EvalResult(
        model=request.model, dataset=version.ref, features=request.features, n=n, n_real=len(reference), steps=request.steps,
        evaluator_accuracy=evaluator.info.held_out_accuracy, floor_real=floor_real, floor_vae=floor_vae, floor_source=floor_source,
        results=results, grids=grids,
    )


def save_grid(images: list[Image.Image], prompted: list[int], path: Path) -> Path:
    """One row per label (the first GRID_LABELS labels), GRID_PER_LABEL images each."""
    rows = []
    for label in sorted(set(prompted))[:GRID_LABELS]:
        rows.append([img for img, p in zip(images, prompted, strict=True) if p == label][:GRID_PER_LABEL])
    width = max(len(r) for r in rows)
    cells = [r[i] if i < len(r) else Image.new("RGB", images[0].size, "white") for r in rows for i in range(width)]
    image_grid(cells, len(rows)).save(path)
    return path
