"""One row of the recipe ablations: train a recipe with a change, measure it, append the row.

Trains a recipe (`quick-demo`, `demo` or `fashion`) with config overrides (`--set unet.lr=2e-3`)
and, for changes the config cannot express, overrides of the recipe's preset architecture
(`--preset-set unet_attention=[false,true]`, applied in this process only), on one CPU thread.
Then measures what bench/quality_digits.py and bench/quality_fashion.py measure, at a smaller N:
the digits' prompt accuracy by the independent classifier, or Fashion-MNIST's prompt accuracy,
Fréchet distance over the real-vs-real floor and coverage. Appends one row to
bench/results/quality_ablations.json: what was tried, the image budget of each stage, seconds,
the figures and the VAE's PSNR, with the machine's load.

    .venv/bin/python bench/quality_ablation.py --recipe quick-demo --what "baseline" [--set K=V ...] [--preset-set K=V ...]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import repo_on_path  # noqa: F401  (first: benchmarks run as files)

import core  # noqa: F401
import torch
import yaml


def override_preset(name: str, assignments: list[str]) -> dict[str, Any]:
    """Change the recipe's preset in this process: the trained model's config.json records the result."""
    from core.modeling.presets import PRESETS

    update = {}
    for assignment in assignments:
        key, _, raw = assignment.partition("=")
        value = yaml.safe_load(raw)
        update[key] = tuple(value) if isinstance(value, list) else value
    PRESETS[name] = PRESETS[name].model_copy(update=update)
    return update


def unet_architecture(preset: str) -> dict[str, Any]:
    from core.modeling.presets import PRESETS

    built = PRESETS[preset]
    return {"preset": preset, "channels": list(built.unet_channels), "attention": list(built.unet_attention), "layers": built.unet_layers}


def measure_digits(model_dir: Path, guidance: list[float], steps: int) -> dict[str, Any]:
    from quality_digits import classifier, prompt_accuracy

    clf, ceiling = classifier()
    return {"ceiling": round(ceiling, 4)} | {f"cfg_{g:g}": {"prompt_accuracy": prompt_accuracy(model_dir, clf, g, steps)[0]} for g in guidance}


def measure_fashion(model_dir: Path, ref: str, out: Path, n: int, guidance: list[float], steps: int) -> dict[str, Any]:
    from core.evaluation.evaluate import evaluate
    from core.evaluation.request import EvalRequest

    evaluation = evaluate(EvalRequest(model=str(model_dir), dataset=ref, n=n, guidance=guidance, steps=steps), out / "evaluation", lambda f, text: None)
    floor = evaluation.floor_real.frechet
    return {"n": evaluation.n, "ceiling": round(evaluation.evaluator_accuracy, 4), "floor_real_frechet": round(floor, 2)} | {
        f"cfg_{r.guidance:g}": {
            "prompt_accuracy": round(r.prompt_accuracy, 4),
            "frechet_over_real_floor": round(r.metrics.frechet / floor, 2),
            "coverage": round(r.metrics.coverage, 3),
        }
        for r in evaluation.results
    }


def main() -> None:
    from bench.common import append_ablation, machine, run_metrics
    from core.datasets.builtin import import_builtin
    from core.datasets.demo import ensure_demo_dataset
    from core.training.config import build_config
    from core.training.loop import train
    from core.training.recipes import RECIPES

    parser = argparse.ArgumentParser()
    parser.add_argument("--recipe", choices=["quick-demo", "demo", "fashion"], required=True)
    parser.add_argument("--what", required=True, help="the change tried, in words")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a config override")
    parser.add_argument("--preset-set", action="append", default=[], metavar="FIELD=VALUE", help="an override of the recipe's preset (its UNet, say)")
    parser.add_argument("--n", type=int, default=300, help="Fashion-MNIST: generated images per guidance")
    parser.add_argument("--guidance", type=float, action="append", help="default: 1 and 3 (digits), 2 and 3 (fashion)")
    parser.add_argument("--sample-steps", type=int, default=25)
    parser.add_argument("--home", type=Path, help="reuse this studio home (keeps imports and the evaluator)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["STUDIO_HOME"] = str(args.home or tmp)
        fashion = args.recipe == "fashion"
        ref = import_builtin("fashion-mnist") if fashion else ensure_demo_dataset()
        out = Path(tmp) / "run"
        config = build_config({**RECIPES[args.recipe], "dataset": ref, "output_dir": str(out), "validate_every": 10_000, "sample_every": 10_000, "checkpoint_every": 10_000, "log_every": 50, "evaluate": None}, args.set)
        preset_update = override_preset(config.preset, args.preset_set)
        started = time.time()
        result = train(config)
        train_s = time.time() - started
        assert result.model_dir is not None
        guidance = args.guidance or ([2.0, 3.0] if fashion else [1.0, 3.0])
        started = time.time()
        figures = measure_fashion(result.model_dir, ref, out, args.n, guidance, args.sample_steps) if fashion else measure_digits(result.model_dir, guidance, args.sample_steps)
        _, last = run_metrics(out)
        row = {
            "what": args.what,
            "recipe": args.recipe,
            "overrides": args.set,
            "preset_overrides": {k: list(v) if isinstance(v, tuple) else v for k, v in preset_update.items()},
            "unet_architecture": unet_architecture(config.preset),
            "images": {stage: getattr(config, stage).steps * getattr(config, stage).batch_size for stage in config.stages()},
            "train_s": round(train_s, 1),
            "eval_s": round(time.time() - started, 1),
            "vae_val_psnr": last.get("vae_val_psnr"),
            "unet_val_loss": last.get("val_loss"),
            **figures,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "load_average": machine()["load_average"],
        }
    append_ablation(row)
    print(json.dumps(row, indent=1))


if __name__ == "__main__":
    main()
