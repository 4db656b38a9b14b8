"""`studio pipeline run|list|show`: the end-to-end pipeline from a YAML config."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from app.commands import add_command, emit


def steps_text(summary: dict[str, Any]) -> str:
    lines = [f"pipeline {summary['name']} ({summary['id']}): {summary['status']}"]
    for step in summary["steps"]:
        line = f"  {step['name']:<9} {step['status']:<10} attempts {step['attempts']}"
        if step["failure_reason"]:
            line += f"  {step['failure_reason']}"
        lines.append(line)
    outputs = {s["name"]: s["outputs"] for s in summary["steps"]}
    if outputs.get("select", {}).get("run_id"):
        best = outputs["select"]
        lines.append(f"best run: {best['run_id']} ({best['metric']}={best['value']:.5g})")
    if outputs.get("register", {}).get("uri"):
        lines.append(f"registered: {outputs['register']['uri']} (version {outputs['register']['version']}, export {outputs['export']['export_id']} at {outputs['export']['path']})")
    return "\n".join(lines)


def cmd_run(args: argparse.Namespace) -> int:
    from core.errors import StudioError
    from jobs.pipeline.config import load_pipeline_config
    from jobs.pipeline.runner import get_pipeline, launch, prepare, run, summary

    config = load_pipeline_config(args.config)
    if args.detach:
        pipeline = launch(config, args.config)
        emit(args, summary(pipeline), f"Pipeline {pipeline.name} ({pipeline.id}) started; follow it with `studio pipeline show {pipeline.id}`.")
        return 0
    pipeline = prepare(config, args.config)
    try:
        run(pipeline.id, log=lambda text: print(text, file=sys.stderr, flush=True))
    except StudioError:
        if args.json:
            emit(args, summary(get_pipeline(pipeline.id)))
        raise
    data = summary(get_pipeline(pipeline.id))
    emit(args, data, steps_text(data))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from jobs.pipeline.runner import list_pipelines

    rows = [{"id": p.id, "name": p.name, "status": p.status, "created_at": p.created_at, "failure_reason": p.failure_reason} for p in list_pipelines()]
    text = "\n".join(f"{r['id']}  {r['name']:<24} {r['status']:<10} {r['created_at']:%Y-%m-%d %H:%M}" for r in rows) or "No pipelines yet; run `studio pipeline run --config examples/pipeline-demo.yaml`."
    emit(args, rows, text)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from jobs.pipeline.runner import get_pipeline, summary

    data = summary(get_pipeline(args.ref))
    emit(args, data, steps_text(data))
    return 0


def register(sub: Any) -> None:
    pipeline = sub.add_parser("pipeline", help="dataset -> training -> best run -> ONNX -> registry, in one command")
    psub = pipeline.add_subparsers(dest="pipeline_command", required=True)
    run = add_command(psub, "run", "Run a pipeline from its YAML config; a re-run resumes at the step that failed.", cmd_run)
    run.add_argument("--config", type=Path, required=True, help="pipeline YAML (see examples/pipeline-demo.yaml)")
    run.add_argument("--detach", action="store_true", help="run in the background and return at once")
    add_command(psub, "list", "List pipelines, newest first.", cmd_list)
    show = add_command(psub, "show", "Show a pipeline's steps, their inputs, outputs and failures.", cmd_show)
    show.add_argument("ref", help="pipeline id, or a name for its newest pipeline")
