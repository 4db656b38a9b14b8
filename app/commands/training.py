"""`studio train|demo|job|generate`: training jobs and generation."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from app.commands import add_command, emit
from core.errors import StudioError
from core.training.recipes import DESCRIPTIONS, RECIPES


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
    """Follow a job until it ends, printing its log where it writes one here; Ctrl-C detaches (the
    job keeps running)."""
    from jobs import control
    from jobs.records import FINAL

    printed = 0
    while True:
        job = control.poll(job_id)
        if not quiet and job.log_path and Path(job.log_path).is_file():
            lines = Path(job.log_path).read_text(errors="replace").splitlines()
            for line in lines[printed:]:
                print(line, file=sys.stderr)
            printed = len(lines)
        if job.status in FINAL:
            return job
        time.sleep(1.0)


def load_launch_config(args: argparse.Namespace) -> Any:
    """The training config from --config or --recipe, with --dataset and --set applied and resolved."""
    from core.datasets.versions import resolve
    from core.training.config import build_config, load_config

    overrides = list(args.set)
    if args.dataset:
        overrides.append(f"dataset={args.dataset}")
    if args.config and args.recipe:
        raise StudioError("Give either --config or --recipe, not both.")
    config = build_config(RECIPES[args.recipe], overrides) if args.recipe else load_config(args.config, overrides)
    if config.dataset:
        name, version = resolve(config.dataset)
        config = config.model_copy(update={"dataset": f"{name}@{version}"})
    return config


def cmd_launch(args: argparse.Namespace) -> int:
    from jobs import control
    from jobs.estimate import estimate_launch
    from jobs.sagemaker import SageMakerLaunch

    cloud = None
    if args.backend == "sagemaker":
        cloud = {"instance_type": args.instance_type, "instance_count": args.instance_count, "spot": not args.no_spot, "max_run_hours": args.max_hours}
        if args.role:
            cloud["role"] = args.role
        cloud = {k: v for k, v in cloud.items() if v is not None}
    config = load_launch_config(args)
    estimate = None
    if args.dry_run or args.estimate:
        options = SageMakerLaunch.model_validate(cloud).model_dump() if cloud is not None else None  # the defaults filled in
        estimate = estimate_launch(config, options)
    if args.dry_run:
        emit(args, estimate.model_dump(mode="json"), estimate.summary())
        return 1 if estimate.refusal else 0
    job = control.launch(config, backend=args.backend, name=args.name, processes=args.processes, sagemaker=cloud, estimate=estimate)
    if args.detach:
        emit(args, job_summary(job), f"Submitted job {job.id} ({job.status}, MLflow run {job.mlflow_run_id}).")
        return 0
    job = wait_for(job.id, quiet=args.json)
    emit(args, job_summary(job), f"Job {job.id} {job.status}." + (f" {job.failure_reason}" if job.failure_reason else ""))
    return 0 if job.status == "succeeded" else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from core.datasets.demo import ensure_demo_dataset
    from core.training.config import build_config
    from core.training.recipes import DEMO, QUICK_DEMO
    from jobs import control

    ref = ensure_demo_dataset()
    config = build_config({**(QUICK_DEMO if args.quick else DEMO), "dataset": ref}, args.set)
    job = control.launch(config, name="demo")
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


def cmd_job(args: argparse.Namespace) -> int:
    from jobs import control
    from jobs.records import get_job, list_jobs

    if args.action == "launch":
        return cmd_launch(args)
    if args.action == "list":
        control.refresh()
        rows = [job_summary(j) for j in list_jobs()]
        emit(args, rows, "\n".join(f"{r['id']}  {r['backend']:<9}  {r['status']:<9}  {r['dataset'] or '-'}  run {r['mlflow_run_id']}" for r in rows) or "No jobs yet.")
        return 0
    if not args.job:
        raise StudioError(f"`studio job {args.action}` needs a job id.")
    if args.action == "status":
        control.refresh()
        summary = job_summary(get_job(args.job))
        emit(args, summary, f"{summary['id']}  {summary['status']}" + (f"  {summary['failure_reason']}" if summary["failure_reason"] else ""))
    elif args.action == "logs":
        print(control.logs(args.job, args.lines))
    elif args.action == "move":
        order = [j.id for j in control.move(args.job, args.by)]
        emit(args, order, "Queue: " + " ".join(order))
    else:
        job = {"stop": control.stop, "resume": control.resume, "cancel": control.cancel}[args.action](args.job)
        emit(args, job_summary(job), f"Job {job.id} is {job.status}.")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    import torch
    from pydantic import ValidationError

    from core.inference.models import generate
    from core.inference.torch_backend import GenerateRequest, image_grid
    from core.settings import get_settings

    torch.set_num_threads(get_settings().torch_threads)
    lora = args.lora
    if lora and Path(lora).is_file():  # a .safetensors file: checked and kept like a playground upload
        from core.inference.lora import store_lora

        lora = store_lora(Path(lora))
    try:
        request = GenerateRequest(
            prompt=args.prompt,
            negative_prompt=args.negative_prompt,
            steps=args.steps,
            guidance=args.guidance,
            seed=args.seed,
            scheduler=args.scheduler,
            batch=args.batch,
            width=args.width,
            height=args.height,
            lora=lora,
            lora_strength=args.lora_strength,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        raise StudioError(f"The value of --{str(first['loc'][0]).replace('_', '-')} is not valid: {first['msg']}.") from None
    result = generate(args.model, request, args.backend)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    image_grid(result.images, rows=1).save(out)
    data = {"out": str(out), "images": len(result.images), "seconds": round(result.seconds, 3), "backend": result.backend_label}
    emit(args, data, f"Wrote {out} ({result.backend_label}, {result.seconds:.2f} s)")
    return 0


def add_launch_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="YAML training config")
    p.add_argument("--recipe", choices=list(RECIPES), help="start from a named recipe: " + "; ".join(f"{k}: {v}" for k, v in DESCRIPTIONS.items()))
    p.add_argument("--dataset", help="name@version (or name for its newest version)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--name", help="run name in MLflow")
    p.add_argument("--backend", choices=["local", "sagemaker"], default="local")
    p.add_argument("--processes", type=int, default=1, help="local: processes under torchrun")
    p.add_argument("--instance-type", help="sagemaker: e.g. ml.g5.2xlarge")
    p.add_argument("--instance-count", type=int, help="sagemaker: nodes")
    p.add_argument("--no-spot", action="store_true", help="sagemaker: on-demand instead of managed spot")
    p.add_argument("--max-hours", type=float, help="sagemaker: maximum run time")
    p.add_argument("--role", help="sagemaker: IAM role ARN (default STUDIO_SAGEMAKER_ROLE)")
    p.add_argument("--detach", action="store_true", help="return at once; the job keeps running")
    p.add_argument("--estimate", action="store_true", help="first run a few real steps: refuse a run that would not fit, record the estimate with the run")
    p.add_argument("--dry-run", action="store_true", help="print the estimate (memory, s/step, total time, SageMaker cost) and launch nothing")


def register(sub: Any) -> None:
    p = add_command(sub, "train", "train a model (same as `studio job launch`)", cmd_launch)
    add_launch_args(p)

    p = add_command(sub, "demo", "train the tiny demo model on the digits", cmd_demo)
    p.add_argument("--quick", action="store_true", help="under 5 minutes instead of about 10")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--detach", action="store_true")

    p = add_command(sub, "job", "launch, list, follow, stop, resume, cancel or reorder jobs", cmd_job)
    p.add_argument("action", choices=["launch", "list", "status", "logs", "stop", "resume", "cancel", "move"])
    p.add_argument("job", nargs="?")
    p.add_argument("--lines", type=int, default=50, help="logs: how many lines")
    p.add_argument("--by", type=int, default=-1, help="move: places to move (negative: earlier)")
    add_launch_args(p)

    p = add_command(sub, "generate", "generate images from a run or a model folder", cmd_generate)
    p.add_argument("--model", required=True, help="MLflow run id, export id, model folder or ONNX export folder")
    p.add_argument("--prompt", required=True)
    p.add_argument("--negative-prompt", default="")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scheduler", choices=["ddim", "euler", "dpmpp"], default="ddim")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--backend", choices=["torch", "onnx"], default="torch", help="PyTorch or ONNX Runtime (needs an export)")
    p.add_argument("--width", type=int, help="default: the model's training size")
    p.add_argument("--height", type=int, help="default: the model's training size")
    p.add_argument("--lora", help="a LoRA (PyTorch): a run trained with LoRA, its model folder, or a .safetensors file")
    p.add_argument("--lora-strength", type=float, default=1.0, help="0 is the base model, 1 the LoRA as trained (0-2)")
    p.add_argument("--out", default="generated.png")
