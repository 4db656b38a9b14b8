"""`studio eval RUN --dataset NAME@VERSION [--n 1000] [--features evaluator|inception|imagenet]`: evaluate a run."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from app.commands import add_command, emit
from core.errors import StudioError
from core.evaluation.features import DESCRIPTIONS, FEATURES


def summary(result: Any) -> str:
    lines = [
        f"{result.dataset}, {result.features} features, N={result.n} generated vs {result.n_real} real, {result.steps} sampling steps",
        f"evaluator ceiling (held-out accuracy) {result.evaluator_accuracy:.3f}; "
        f"Fréchet floors: real-vs-real {result.floor_real.frechet:.2f}, VAE {result.floor_vae.frechet:.2f}",
        f"{'guidance':>8} {'accuracy':>8} {'Fréchet':>8} {'KID':>8} {'coverage':>8} {'precision':>9} {'recall':>7} {'img/s':>6}",
    ]
    for r in result.results:
        m = r.metrics
        lines.append(f"{r.guidance:>8g} {r.prompt_accuracy:>8.3f} {m.frechet:>8.2f} {m.kid:>8.4f} {m.coverage:>8.3f} {m.precision:>9.3f} {m.recall:>7.3f} {r.images_per_second:>6.2f}")
    return "\n".join(lines)


def cmd_eval(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from core.config_base import describe_validation_error
    from core.evaluation.request import EvalRequest
    from jobs import control
    from jobs import evaluate as jobs

    try:
        guidance = [float(g) for g in args.guidance.split(",") if g.strip()]
        request = EvalRequest(model=args.run, dataset=args.dataset, n=args.n, guidance=guidance, features=args.features, steps=args.steps)
    except ValidationError as exc:
        raise StudioError(describe_validation_error(exc, "evaluation")) from None
    except ValueError as exc:  # a guidance scale that is not a number
        raise StudioError(f"The evaluation settings are not valid: {exc}.") from None
    job = control.evaluate_run(request)
    if args.detach:
        emit(args, {"job": job.id, "status": job.status, "run": args.run}, f"Started evaluation job {job.id}.")
        return 0
    shown = ""
    while job.status not in ("succeeded", "failed", "stopped"):
        time.sleep(1.0)
        job = control.poll(job.id)
        fraction, text = jobs.progress(job.id)
        if not args.json and text != shown:
            print(f"\r[{fraction:4.0%}] {text:<60}", end="", file=sys.stderr, flush=True)
            shown = text
    if not args.json:
        print(file=sys.stderr)
    if job.status != "succeeded":
        raise StudioError(f"The evaluation {job.status}: {job.failure_reason or 'see ' + str(job.log_path)}")
    result = jobs.result(job.id)
    emit(args, {"job": job.id, "run": args.run, **result.model_dump()}, summary(result))
    return 0


def register(sub: Any) -> None:
    p = add_command(sub, "eval", "evaluate a run's model against a dataset version (prompt accuracy, Fréchet distance, KID, coverage)", cmd_eval)
    p.add_argument("run", help="the MLflow run id of a trained model")
    p.add_argument("--dataset", required=True, help="name@version to compare with (its val split)")
    p.add_argument("--n", type=int, default=1000, help="generated images per guidance scale (default 1000)")
    p.add_argument("--features", choices=FEATURES, default="evaluator", help="feature network for the distribution metrics: " + "; ".join(f"{k}: {v}" for k, v in DESCRIPTIONS.items()))
    p.add_argument("--guidance", default="1,2,4", help="comma-separated guidance scales (default 1,2,4)")
    p.add_argument("--steps", type=int, default=25, help="sampling steps (default 25)")
    p.add_argument("--detach", action="store_true", help="start the job and return at once")
