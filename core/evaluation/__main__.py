"""`python -m core.evaluation --model RUN_OR_FOLDER --dataset NAME@VERSION --out DIR [...]`

Runs one evaluation (what an evaluation job runs), writes DIR/result.json and the grids, and, with
`--run-id`, logs them to that MLflow run. Progress lines go to stdout; a problem the user can fix
prints `error: <sentence>` and exits 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.errors import StudioError
from core.evaluation.features import FEATURES
from core.files import atomic_write_text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.evaluation", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="an MLflow run id or a model folder")
    parser.add_argument("--dataset", required=True, help="name@version")
    parser.add_argument("--out", type=Path, required=True, help="folder for result.json and the grids")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--guidance", default="1,2,4", help="comma-separated guidance scales")
    parser.add_argument("--features", choices=FEATURES, default="evaluator")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run-id", help="log the result to this MLflow run")
    args = parser.parse_args(argv)

    import torch
    from pydantic import ValidationError

    from core.config_base import describe_validation_error
    from core.evaluation.evaluate import evaluate
    from core.evaluation.request import EvalRequest
    from core.settings import get_settings

    torch.set_num_threads(get_settings().torch_threads)

    def progress(fraction: float, text: str) -> None:
        print(json.dumps({"progress": round(fraction, 4), "text": text}), flush=True)

    try:
        try:
            guidance = [float(g) for g in args.guidance.split(",") if g.strip()]
            request = EvalRequest(model=args.model, dataset=args.dataset, n=args.n, guidance=guidance, features=args.features, steps=args.steps, seed=args.seed)
        except ValidationError as exc:
            raise StudioError(describe_validation_error(exc, "evaluation")) from None
        except ValueError as exc:  # a guidance scale that is not a number
            raise StudioError(f"The evaluation settings are not valid: {exc}.") from None
        result = evaluate(request, args.out, progress)
        atomic_write_text(args.out / "result.json", result.model_dump_json(indent=1))
        if args.run_id:
            from core.evaluation.records import log_result

            log_result(args.run_id, result, args.out)
    except StudioError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
