"""The `studio` command line: the same functions the pages call, for scripts and tests.

Every subcommand that reports something accepts `--json`. A problem the user can fix prints one
sentence (`error: ...`) and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import core  # noqa: F401  (telemetry off before anything else is imported)
from core.errors import StudioError

Handler = Callable[[argparse.Namespace], Any]
COMMANDS: dict[str, Handler] = {}


def command(name: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        COMMANDS[name] = fn
        return fn

    return register


def emit(args: argparse.Namespace, data: Any, text: str | None = None) -> None:
    if getattr(args, "json", False):
        print(json.dumps(data, indent=1, default=str))
    else:
        print(text if text is not None else json.dumps(data, indent=1, default=str))


# ---- training ------------------------------------------------------------------------------------
def job_summary(job: Any) -> dict[str, Any]:
    return {
        "id": job.id,
        "status": job.status,
        "backend": job.backend,
        "dataset": job.dataset,
        "mlflow_run_id": job.mlflow_run_id,
        "attempts": job.attempts,
        "failure_reason": job.failure_reason,
        "log": job.log_path,
        "output": str(Path(job.log_path).parent / "output") if job.log_path else None,
    }


def wait_for(job_id: str, quiet: bool) -> Any:
    """Follow a job's log until it ends; Ctrl-C detaches (the job keeps running)."""
    from jobs.records import FINAL, get_job

    printed = 0
    while True:
        job = get_job(job_id)
        if not quiet and job.log_path and Path(job.log_path).is_file():
            lines = Path(job.log_path).read_text(errors="replace").splitlines()
            for line in lines[printed:]:
                print(line, file=sys.stderr)
            printed = len(lines)
        if job.status in FINAL:
            return job
        time.sleep(1.0)


@command("train")
def cmd_train(args: argparse.Namespace) -> int:
    from core.datasets.versions import resolve
    from core.training.config import build_config, load_config
    from core.training.recipes import RECIPES
    from jobs.local import submit

    overrides = list(args.set)
    if args.dataset:
        overrides.append(f"dataset={args.dataset}")
    if args.config and args.recipe:
        raise StudioError("Give either --config or --recipe, not both.")
    config = build_config(RECIPES[args.recipe], overrides) if args.recipe else load_config(args.config, overrides)

    if config.dataset:
        name, version = resolve(config.dataset)
        config = config.model_copy(update={"dataset": f"{name}@{version}"})
    job = submit(config, name=args.name, processes=args.processes)
    if args.detach:
        emit(args, job_summary(job), f"Submitted job {job.id} (MLflow run {job.mlflow_run_id}).")
        return 0
    job = wait_for(job.id, quiet=args.json)
    emit(args, job_summary(job), f"Job {job.id} {job.status}." + (f" {job.failure_reason}" if job.failure_reason else ""))
    return 0 if job.status == "succeeded" else 1


@command("demo")
def cmd_demo(args: argparse.Namespace) -> int:
    from core.datasets.demo import ensure_demo_dataset
    from core.training.config import build_config
    from core.training.recipes import DEMO, QUICK_DEMO
    from jobs.local import submit

    ref = ensure_demo_dataset()
    config = build_config({**(QUICK_DEMO if args.quick else DEMO), "dataset": ref}, args.set)
    job = submit(config, name="demo")
    print(f"Demo job {job.id} started on {ref} (MLflow run {job.mlflow_run_id}).", file=sys.stderr)
    if args.detach:
        emit(args, job_summary(job))
        return 0
    job = wait_for(job.id, quiet=args.json)
    summary = job_summary(job)
    samples = sorted((Path(summary["output"]) / "samples").glob("*.png")) if summary["output"] else []
    summary["sample_grid"] = str(samples[-1]) if samples else None
    emit(args, summary, f"Demo {job.status}. Sample grid: {summary['sample_grid']}")
    return 0 if job.status == "succeeded" else 1


@command("jobs")
def cmd_jobs(args: argparse.Namespace) -> int:
    from jobs import local
    from jobs.records import get_job, list_jobs

    if args.action == "list":
        local.refresh()
        rows = [job_summary(j) for j in list_jobs()]
        emit(args, rows, "\n".join(f"{r['id']}  {r['status']:<9}  {r['dataset'] or '-'}  run {r['mlflow_run_id']}" for r in rows) or "No jobs yet.")
        return 0
    if not args.job:
        raise StudioError(f"`studio jobs {args.action}` needs a job id.")
    if args.action == "show":
        emit(args, job_summary(get_job(args.job)))
    elif args.action == "stop":
        emit(args, job_summary(local.stop(args.job)), f"Stopping job {args.job}.")
    elif args.action == "resume":
        emit(args, job_summary(local.resume(args.job)), f"Resumed job {args.job}.")
    elif args.action == "logs":
        print(local.log_tail(args.job, args.lines))
    return 0


# ---- generation ----------------------------------------------------------------------------------
@command("generate")
def cmd_generate(args: argparse.Namespace) -> int:
    import torch
    from pydantic import ValidationError

    from core.inference.torch_backend import GenerateRequest, TorchGenerator, image_grid
    from core.settings import get_settings
    from core.tracking import model_folder

    torch.set_num_threads(get_settings().torch_threads)
    try:
        request = GenerateRequest(
            prompt=args.prompt,
            negative_prompt=args.negative_prompt,
            steps=args.steps,
            guidance=args.guidance,
            seed=args.seed,
            scheduler=args.scheduler,
            batch=args.batch,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        raise StudioError(f"The value of --{first['loc'][0]} is not valid: {first['msg']}.") from None
    started = time.perf_counter()
    images = TorchGenerator(model_folder(args.model), get_settings().device)(request)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    image_grid(images, rows=1).save(out)
    emit(args, {"out": str(out), "images": len(images), "seconds": round(time.perf_counter() - started, 3)}, f"Wrote {out}")
    return 0


# ---- datasets ------------------------------------------------------------------------------------
@command("dataset")
def cmd_dataset(args: argparse.Namespace) -> int:
    from core.datasets.versions import list_datasets, list_versions

    if args.action != "list":
        raise StudioError(f"Unknown dataset action {args.action!r}.")
    rows = []
    for dataset in list_datasets():
        versions = list_versions(dataset.name)
        rows.append({"name": dataset.name, "versions": [v.version for v in versions], "items": versions[0].n_items if versions else 0})
    emit(args, rows, "\n".join(f"{r['name']}@{r['versions'][0]}  {r['items']} items" for r in rows if r["versions"]) or "No datasets yet.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="studio", description="Diffusion Studio on the command line.")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--json", action="store_true", help="print the result as JSON")
        return p

    p = add("train", "train a model (a local job)")
    p.add_argument("--config", type=Path, help="YAML training config")
    p.add_argument("--recipe", choices=["demo", "quick-demo"], help="start from a named recipe")
    p.add_argument("--dataset", help="name@version (or name for its newest version)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--name", help="run name in MLflow")
    p.add_argument("--processes", type=int, default=1, help="processes under torchrun")
    p.add_argument("--detach", action="store_true", help="return at once; the job keeps running")

    p = add("demo", "train the tiny demo model on the digits")
    p.add_argument("--quick", action="store_true", help="a few minutes instead of twenty")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--detach", action="store_true")

    p = add("jobs", "list, show, stop, resume jobs or print their logs")
    p.add_argument("action", choices=["list", "show", "stop", "resume", "logs"])
    p.add_argument("job", nargs="?")
    p.add_argument("--lines", type=int, default=50)

    p = add("generate", "generate images from a run or a model folder")
    p.add_argument("--model", required=True, help="MLflow run id or model folder")
    p.add_argument("--prompt", required=True)
    p.add_argument("--negative-prompt", default="")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scheduler", choices=["ddim", "euler", "dpmpp"], default="ddim")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--out", default="generated.png")

    p = add("dataset", "list datasets and their versions")
    p.add_argument("action", choices=["list"])
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(COMMANDS[args.command](args) or 0)
    except StudioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("Detached; the job keeps running (`studio jobs list`).", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
