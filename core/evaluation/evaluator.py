"""The per-dataset evaluator: a small CNN trained on a version's train split.

It classifies images into the version's labels (see core.evaluation.data) and its 128-d
penultimate layer is the feature space for the distribution metrics. Its accuracy on the held-out
val split is the ceiling of prompt accuracy: generated images cannot be judged better than the
judge. It is trained once per dataset version (versions never change) and saved in the cache with
its accuracy, its settings and a copy of this file (the script that trained it).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel
from safetensors.torch import load_file, save_file
from torch import nn

from core.errors import StudioError
from core.evaluation.data import RESOLUTION, Version, label_of
from core.files import staged_folder
from core.settings import get_settings

FEATURES = 128
MAX_LABELS = 500


class EvaluatorInfo(BaseModel):
    dataset: str
    labels: list[str]
    held_out_accuracy: float
    held_out_images: int
    train_images: int
    steps: int
    batch_size: int
    seed: int
    train_seconds: float


class EvaluatorNet(nn.Module):
    def __init__(self, classes: int) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2))

        # Small on purpose: it trains in minutes on one CPU thread and still separates the classes.
        self.body = nn.Sequential(block(3, 32), block(32, 64), block(64, 128), nn.Flatten(), nn.Linear(128 * (RESOLUTION // 8) ** 2, FEATURES), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(FEATURES, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def _pixels(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).float() / 127.5 - 1.0


class Evaluator:
    """A trained evaluator: `features` for the metrics, `predict` for prompt accuracy."""

    def __init__(self, net: EvaluatorNet, info: EvaluatorInfo) -> None:
        self.net = net.eval()
        self.info = info

    @torch.no_grad()
    def _run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        feats, logits = [], []
        for start in range(0, len(images), 256):
            f = self.net.body(_pixels(images[start : start + 256]))
            feats.append(f.numpy())
            logits.append(self.net.head(f).numpy())
        return np.concatenate(feats), np.concatenate(logits)

    def features(self, images: np.ndarray) -> np.ndarray:
        return self._run(images)[0]

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Label indices (into `info.labels`)."""
        return self._run(images)[1].argmax(1)


def default_steps(train_images: int, batch_size: int) -> int:
    """About five epochs, at least 200 and at most 1,500 steps."""
    return int(np.clip(5 * train_images // batch_size, 200, 1500))


def train_evaluator(
    version: Version,
    steps: int | None = None,
    batch_size: int = 64,
    seed: int = 0,
    limit: int | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> Evaluator:
    """Train on the train split (or a seeded random `limit` of it) and measure accuracy on val."""
    order = np.random.default_rng(seed).permutation(len(version.train))[:limit]
    train_items = [version.train[i] for i in order]
    labels = sorted({label_of(i) for i in train_items})
    if len(labels) < 2:
        raise StudioError(f"{version.ref} has fewer than two labels in its train split, so no evaluator can be trained on it.")
    if len(labels) > MAX_LABELS:
        raise StudioError(f"{version.ref} has {len(labels)} labels (at most {MAX_LABELS}); give its images class folders to evaluate it.")
    index = {label: i for i, label in enumerate(labels)}
    held_out = [i for i in version.val if label_of(i) in index]
    if not held_out:
        raise StudioError(f"{version.ref} has no val images with a label seen in training, so the evaluator has no held-out set.")
    x = _pixels(version.images(train_items))
    y = torch.tensor([index[label_of(i)] for i in train_items])
    steps = steps or default_steps(len(x), batch_size)
    torch.manual_seed(seed)
    net = EvaluatorNet(len(labels))
    optimizer = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=steps)
    generator = torch.Generator().manual_seed(seed)
    started = time.time()
    net.train()
    for step in range(steps):
        batch = torch.randint(0, len(x), (min(batch_size, len(x)),), generator=generator)
        images = x[batch]
        shift = torch.randint(-2, 3, (2,), generator=generator).tolist()  # small translations generalise better
        images = torch.roll(images, shifts=shift, dims=(2, 3))
        loss = nn.functional.cross_entropy(net(images), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if progress and step % 50 == 0:
            progress(step / steps, f"Training the evaluator: step {step}/{steps}, loss {loss.item():.3f}")
    info = EvaluatorInfo(
        dataset=version.ref, labels=labels, held_out_accuracy=0.0, held_out_images=len(held_out), train_images=len(x),
        steps=steps, batch_size=batch_size, seed=seed, train_seconds=round(time.time() - started, 1),
    )
    evaluator = Evaluator(net, info)
    predicted = evaluator.predict(version.images(held_out))
    info.held_out_accuracy = float((predicted == np.array([index[label_of(i)] for i in held_out])).mean())
    return evaluator


def evaluator_dir(ref: str) -> Path:
    return get_settings().cache_dir / "evaluators" / ref.replace("@", "/")


def save_evaluator(evaluator: Evaluator, folder: Path) -> Path:
    """model.safetensors + evaluator.json + train_evaluator.py, renamed into place together."""
    with staged_folder(folder) as tmp:
        save_file({k: v.contiguous() for k, v in evaluator.net.state_dict().items()}, tmp / "model.safetensors")
        (tmp / "evaluator.json").write_text(evaluator.info.model_dump_json(indent=1))
        shutil.copy(Path(__file__), tmp / "train_evaluator.py")
    return folder


def load_evaluator(folder: Path) -> Evaluator:
    info = EvaluatorInfo.model_validate_json((folder / "evaluator.json").read_text())
    net = EvaluatorNet(len(info.labels))
    net.load_state_dict(load_file(folder / "model.safetensors"))
    return Evaluator(net, info)


def get_evaluator(version: Version, progress: Callable[[float, str], None] | None = None) -> Evaluator:
    """The version's evaluator: loaded from the cache, or trained and saved once."""
    folder = evaluator_dir(version.ref)
    if (folder / "evaluator.json").is_file():
        return load_evaluator(folder)
    evaluator = train_evaluator(version, progress=progress)
    save_evaluator(evaluator, folder)
    return evaluator

