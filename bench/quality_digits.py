"""Prompt accuracy of the demo recipe: does "a handwritten digit seven" draw a seven?

Trains the demo recipe (tiny, both stages) on the digits, generates 10 images per digit at each
guidance scale, and asks an independent classifier (scikit-learn, trained on the real 32×32
digits of the train split, checked on the held-out split: its ceiling) which digit each image
shows. Also reports VAE PSNR, final and validation loss, steps and wall time. Targets: the demo
>= 98% at CFG 3; the quick demo (`--quick`, bench/results/quality_digits_quick.json) >= 90% at
CFG 3 in at most 5 minutes of training.

    .venv/bin/python bench/quality_digits.py [--model FOLDER] [--quick]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import repo_on_path  # noqa: F401  (first: benchmarks run as files)

import core  # noqa: F401
import numpy as np
import torch

GUIDANCE = (1.0, 3.0)
PER_DIGIT = 10


def classifier():  # type: ignore[no-untyped-def]
    """An SVM on the real 32×32 digits; returns it with its held-out accuracy (the ceiling)."""
    from sklearn.svm import SVC

    from core.datasets.demo import digit_images

    images, labels = digit_images()
    features = images.reshape(len(images), -1) / 255.0
    held_out = np.arange(len(images)) % 10 == 9  # the same split as the dataset's val
    model = SVC(C=10, gamma="scale").fit(features[~held_out], labels[~held_out])
    return model, float((model.predict(features[held_out]) == labels[held_out]).mean())


def prompt_accuracy(model_dir: Path, clf, guidance: float, steps: int) -> tuple[float, list[int]]:  # type: ignore[no-untyped-def]
    from core.datasets.demo import digit_caption
    from core.inference.torch_backend import GenerateRequest, TorchGenerator

    gen = TorchGenerator(model_dir, "cpu")
    correct, per_digit = 0, []
    for digit in range(10):
        request = GenerateRequest(prompt=digit_caption(digit), steps=steps, guidance=guidance, seed=1000 + digit, batch=PER_DIGIT)
        images = gen(request)
        features = np.stack([np.asarray(img.convert("L"), dtype=np.float64).reshape(-1) / 255.0 for img in images])
        hits = int((clf.predict(features) == digit).sum())
        per_digit.append(hits)
        correct += hits
    return correct / (10 * PER_DIGIT), per_digit


def train_demo(home: Path, quick: bool) -> tuple[Path, dict[str, float], float]:
    from bench.common import run_metrics
    from core.datasets.demo import ensure_demo_dataset
    from core.training.config import build_config
    from core.training.loop import train
    from core.training.recipes import DEMO, QUICK_DEMO

    ensure_demo_dataset()
    out = home / "demo"
    started = time.time()
    result = train(build_config({**(QUICK_DEMO if quick else DEMO), "output_dir": str(out)}))
    wall = time.time() - started
    _, last = run_metrics(out)
    assert result.model_dir is not None
    return result.model_dir, last, wall


def main() -> None:
    from bench.common import write_result

    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, help="evaluate this trained demo model instead of training one")
    parser.add_argument("--quick", action="store_true", help="the quick demo recipe")
    parser.add_argument("--steps", type=int, default=25, help="sampling steps")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("STUDIO_HOME", tmp)
        metrics: dict[str, float] = {}
        wall = None
        model_dir = args.model
        if model_dir is None:
            model_dir, metrics, wall = train_demo(Path(tmp), args.quick)
        clf, ceiling = classifier()
        results = {}
        for guidance in GUIDANCE:
            accuracy, per_digit = prompt_accuracy(model_dir, clf, guidance, args.steps)
            results[f"cfg_{guidance:g}"] = {"prompt_accuracy": accuracy, "correct_per_digit": per_digit}
        write_result(
            "quality_digits_quick" if args.quick else "quality_digits",
            {
                "recipe": "quick-demo" if args.quick else "demo",
                "prompt_accuracy": results,
                "classifier_held_out_accuracy": round(ceiling, 4),
                "target": ">= 0.90 at CFG 3 in <= 300 s of training" if args.quick else ">= 0.98 at CFG 3",
                "vae_val_psnr": metrics.get("vae_val_psnr"),
                "final_loss": metrics.get("loss"),
                "val_loss": metrics.get("val_loss"),
                "train_wall_s": round(wall, 1) if wall else None,
                "sampling_steps": args.steps,
                "images_per_digit": PER_DIGIT,
            },
        )


if __name__ == "__main__":
    main()
