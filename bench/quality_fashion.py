"""Image quality on Fashion-MNIST: train the studio's own recipe, then evaluate it honestly.

Imports the built-in Fashion-MNIST (Debian's dataset-fashion-mnist), trains the `fashion` recipe
(`tiny` VAE + UNet latent diffusion, a fixed step budget, 1 torch thread), and evaluates N images
(balanced over the 10 classes, prompted with val captions, which include two held-out templates)
at guidance 1, 2 and 4 with the dataset's evaluator: prompt accuracy (with the evaluator's
ceiling), Fréchet distance on the evaluator's features (with the real-vs-real and VAE floors, and
as a multiple of the real-vs-real floor, which is what compares across feature networks), KID,
coverage and sampling time. Then, at the guidance with the lowest Fréchet distance, prompt
accuracy per caption template: the four seen in training against the two held out.
The real-vs-real floor is also measured on several disjoint pairs of real subsets, so a ratio is
read against its noise. Template accuracy also covers phrasings a user would write that no
template uses. Target: at one guidance, prompt accuracy >= 0.95, Fréchet distance <= 2x the real
floor and coverage >= 0.93. `--builtin emoji` trains the same recipe on the emoji (colour) and
reports the same figures on ImageNet features (EfficientNet-Lite0), without a target yet.
Last, at the same guidance scales, the simple baseline of `quality_fashion_baseline.py` (PCA and a
class-conditioned MLP) is trained and scored on the same real images, unless `--no-baseline`.

    .venv/bin/python bench/quality_fashion.py [--builtin emoji] [--set unet.steps=N ...] [--preset-set latent_channels=8 ...] [--guidance G ...] [--n 1000] [--home DIR] [--result NAME] [--what "the change"] [--no-baseline]

`--what` also appends the run, as one row, to bench/results/quality_ablations.json. With
`--set stage=vae` only the VAE trains, and what is measured is its floor: its reconstructions of N
real val images against N others.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import repo_on_path  # noqa: F401  (first: benchmarks run as files)

import core  # noqa: F401
import numpy as np
import torch

TARGET = {"prompt_accuracy": 0.95, "frechet_over_real_floor": 2.0, "coverage": 0.93}
PER_TEMPLATE = 8  # images per class and template
# Phrasings no caption template uses, as a user would type them.
USER_PHRASINGS = ("a black and white photo of {}", "{} on a plain background", "a close-up of {}")
FLOOR_PAIRS = 4  # disjoint pairs of real val subsets for the floor's spread


def meets_target(accuracy: float, frechet_over_floor: float, coverage: float) -> bool:
    return accuracy >= TARGET["prompt_accuracy"] and frechet_over_floor <= TARGET["frechet_over_real_floor"] and coverage >= TARGET["coverage"]


def template_accuracy(model_dir: Path, guidance: float, steps: int) -> dict[str, float]:
    """Prompt accuracy per caption template, PER_TEMPLATE images per class each, fixed seeds."""
    from core.datasets.builtin import FASHION_CLASSES, HELD_OUT_TEMPLATES, TRAIN_TEMPLATES
    from core.evaluation.data import Version, to_array
    from core.evaluation.evaluator import get_evaluator
    from core.inference.torch_backend import GenerateRequest, TorchGenerator

    evaluator = get_evaluator(Version.open("fashion-mnist"))
    labels = np.array(evaluator.info.labels)
    generator = TorchGenerator(model_dir)
    out = {}
    for template in TRAIN_TEMPLATES + HELD_OUT_TEMPLATES + USER_PHRASINGS:
        correct = 0
        for seed, cls in enumerate(FASHION_CLASSES):
            images = generator(GenerateRequest(prompt=template.format(cls), steps=steps, guidance=guidance, seed=seed, batch=PER_TEMPLATE))
            correct += int((labels[evaluator.predict(to_array(images))] == cls.split(" ", 1)[1].replace(" ", "-")).sum())
        kind = "held_out" if template in HELD_OUT_TEMPLATES else "user" if template in USER_PHRASINGS else "seen"
        out[f"{kind}: {template.format('…')}"] = round(correct / (PER_TEMPLATE * len(FASHION_CLASSES)), 3)
    return out


def real_floor_spread(ref: str, n: int, pairs: int, features: str) -> list[float]:
    """The real-vs-real Fréchet distance of disjoint pairs of N real images each (val first, then
    train when val is too small), on the evaluation's features."""
    from core.evaluation.data import Version
    from core.evaluation.evaluator import get_evaluator
    from core.evaluation.features import extractor
    from core.evaluation.metrics import compare

    version = Version.open(ref)
    extract = extractor(features, get_evaluator(version))  # type: ignore[arg-type]
    rng = np.random.default_rng(1)
    real = [version.val[i] for i in rng.permutation(len(version.val))] + [version.train[i] for i in rng.permutation(len(version.train))]
    pairs = min(pairs, len(real) // (2 * n))
    subsets = [extract(version.images(real[k * n : (k + 1) * n])) for k in range(2 * pairs)]
    return [round(compare(subsets[2 * k], subsets[2 * k + 1], k).frechet, 2) for k in range(pairs)]


def vae_floor(model_dir: Path, ref: str, n: int, features: str) -> dict[str, float]:
    """The VAE's reconstructions of N real val images against N other real ones, the floor every
    generation sits on, as evaluate() computes it, with the real-vs-real floor beside it."""
    from core.evaluation.data import Version
    from core.evaluation.evaluate import real_samples, vae_reconstruct
    from core.evaluation.evaluator import get_evaluator
    from core.evaluation.features import extractor
    from core.evaluation.metrics import compare
    from core.inference.torch_backend import TorchGenerator

    version = Version.open(ref)
    extract = extractor(features, get_evaluator(version))  # type: ignore[arg-type]
    reference, other, _, other_items = real_samples(version, n, 0)
    real = extract(reference)
    floor = compare(real, extract(other)).frechet
    vae = compare(real, extract(vae_reconstruct(TorchGenerator(model_dir), version, other_items)))
    return {"floor_real_frechet": round(floor, 2), "frechet_over_real_floor": round(vae.frechet / floor, 2), "coverage": round(vae.coverage, 3), "precision": round(vae.precision, 3), "recall": round(vae.recall, 3)}


def stage_throughput(metrics: list[dict[str, float]]) -> dict[str, float]:
    """Mean images per second of each stage, from its logged `samples_per_s`: with the load average,
    what says how busy the machine was."""
    out = {}
    for key, stage in (("vae_samples_per_s", "vae"), ("samples_per_s", "unet")):
        values = [m[key] for m in metrics if key in m]
        if values:
            out[stage] = round(sum(values) / len(values), 1)
    return out


def main() -> None:
    from bench.common import append_ablation, machine, run_metrics, write_result
    from core.datasets.builtin import import_builtin
    from core.evaluation.evaluate import evaluate
    from core.evaluation.request import EvalRequest
    from core.training.config import build_config
    from core.training.loop import train
    from core.training.recipes import FASHION
    from quality_ablation import override_preset
    from quality_fashion_baseline import run_baseline

    parser = argparse.ArgumentParser()
    parser.add_argument("--builtin", choices=["fashion-mnist", "emoji"], default="fashion-mnist", help="emoji: the same recipe and figures, on ImageNet features")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a key of the fashion recipe")
    parser.add_argument("--preset-set", action="append", default=[], metavar="FIELD=VALUE", help="an override of the recipe's preset, in this process (bench/quality_ablation.py)")
    parser.add_argument("--n", type=int, default=1000, help="generated images per guidance scale")
    parser.add_argument("--guidance", type=float, action="append", help="default: 1, 2 and 4")
    parser.add_argument("--sample-steps", type=int, default=25)
    parser.add_argument("--home", type=Path, help="reuse this studio home (keeps the import and the evaluator)")
    parser.add_argument("--result", help="bench/results/<RESULT>.json; default quality_fashion or quality_emoji")
    parser.add_argument("--what", help="the change tried, in words: also append the run to the ablations")
    parser.add_argument("--no-baseline", action="store_true", help="skip the simple baseline (bench/quality_fashion_baseline.py, about 6 minutes) the recipe is scored against")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["STUDIO_HOME"] = str(args.home or tmp)
        started = time.time()
        fashion = args.builtin == "fashion-mnist"
        features = "evaluator" if fashion else "imagenet"
        result_name = args.result or ("quality_fashion" if fashion else "quality_emoji")
        ref = import_builtin(args.builtin)
        import_s = time.time() - started
        out = Path(os.environ["STUDIO_HOME"]) / f"bench-{result_name}"
        config = build_config(
            {**FASHION, "dataset": ref, "output_dir": str(out), "validate_every": 10_000, "sample_every": 10_000, "checkpoint_every": 10_000, "log_every": 50},
            args.set,
        )
        preset_update = {k: list(v) if isinstance(v, tuple) else v for k, v in override_preset(config.preset, args.preset_set).items()}
        started = time.time()
        result = train(config)
        train_s = time.time() - started
        metrics, last = run_metrics(out)
        if "unet" not in config.stages():
            floors = vae_floor(result.model_dir, ref, args.n, features)
            row = {"recipe": "fashion", "overrides": args.set, "preset": config.preset, "preset_overrides": preset_update, "images": {"vae": config.vae.steps * config.vae.batch_size}, "train_s": round(train_s, 1), "vae_val_psnr": last.get("vae_val_psnr"), "n": args.n, "vae_floor": floors}
            if args.what:
                append_ablation({"what": args.what, **row, "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "load_average": machine()["load_average"]})
            write_result(result_name, {"dataset": ref, "features": features, **row})
            return
        started = time.time()
        evaluation = evaluate(
            EvalRequest(model=str(result.model_dir), dataset=ref, n=args.n, guidance=args.guidance or [1, 2, 4], steps=args.sample_steps, features=features),
            out / "evaluation",
            lambda f, text: print(f"[{f:4.0%}] {text}", file=sys.stderr, flush=True),
        )
        eval_s = time.time() - started
        floor = evaluation.floor_real.frechet
        rows = {
            f"cfg_{r.guidance:g}": {
                "prompt_accuracy": round(r.prompt_accuracy, 4),
                "frechet": round(r.metrics.frechet, 2),
                "frechet_over_real_floor": round(r.metrics.frechet / floor, 2),
                "kid": round(r.metrics.kid, 4),
                "coverage": round(r.metrics.coverage, 3),
                "precision": round(r.metrics.precision, 3),
                "recall": round(r.metrics.recall, 3),
                "sampling_images_per_second": r.images_per_second,
                "meets_target": meets_target(r.prompt_accuracy, r.metrics.frechet / floor, r.metrics.coverage),
            }
            for r in evaluation.results
        }
        best = min(evaluation.results, key=lambda r: r.metrics.frechet).guidance
        floor_spread = real_floor_spread(ref, evaluation.n_real, FLOOR_PAIRS, features)
        templates = {"guidance": best, **template_accuracy(result.model_dir, best, args.sample_steps)} if fashion else None
        baseline = None if args.no_baseline or not fashion else run_baseline(ref, args.n, [r.guidance for r in evaluation.results], args.sample_steps)
        if args.what:
            append_ablation(
                {
                    "what": args.what,
                    "recipe": "fashion",
                    "overrides": args.set,
                    "preset": config.preset,
                    "preset_overrides": preset_update,
                    "images": {stage: getattr(config, stage).steps * getattr(config, stage).batch_size for stage in config.stages()},
                    "train_s": round(train_s, 1),
                    "eval_s": round(time.time() - started, 1),
                    "vae_val_psnr": last.get("vae_val_psnr"),
                    "unet_val_loss": last.get("val_loss"),
                    "n": evaluation.n,
                    "ceiling": round(evaluation.evaluator_accuracy, 4),
                    "floor_real_frechet": round(floor, 2),
                    "floor_real_frechet_spread": floor_spread,
                    **{k: {m: row[m] for m in ("prompt_accuracy", "frechet_over_real_floor", "coverage")} for k, row in rows.items()},
                    "template_accuracy": templates,
                    "train_images_per_s": stage_throughput(metrics),
                    "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "load_average": machine()["load_average"],
                }
            )
        write_result(
            result_name,
            {
                "dataset": ref,
                "features": features,
                "recipe": {"name": "fashion", "overrides": args.set, "preset": config.preset, "preset_overrides": preset_update, "vae": config.vae.model_dump(), "unet": config.unet.model_dump()},
                "n": evaluation.n,
                "n_real": evaluation.n_real,
                "sampling_steps": args.sample_steps,
                "results": rows,
                "evaluator_ceiling": round(evaluation.evaluator_accuracy, 4),
                "floor_real_frechet": round(floor, 2),
                "floor_real_frechet_spread": floor_spread,
                "floor_vae_frechet": round(evaluation.floor_vae.frechet, 2),
                "floor_vae_frechet_over_real_floor": round(evaluation.floor_vae.frechet / floor, 2),
                "floor_vae_coverage": round(evaluation.floor_vae.coverage, 3),
                "floor_real_coverage": round(evaluation.floor_real.coverage, 3),
                "template_accuracy": templates,
                "target": TARGET,
                "baseline": baseline,
                "vae_val_psnr": last.get("vae_val_psnr"),
                "final_loss": last.get("loss"),
                "import_s": round(import_s, 1),
                "train_wall_s": round(train_s, 1),
                "train_images_per_s": stage_throughput(metrics),
                "eval_wall_s": round(eval_s, 1),
            },
        )


if __name__ == "__main__":
    main()
