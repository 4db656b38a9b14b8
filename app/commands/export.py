"""`studio export|exports|model|serve`: ONNX exports, files other tools load, and the HTTP API with the playground."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from app.commands import add_command, emit


def export_summary(record: Any) -> dict[str, Any]:
    return {
        "id": record.id,
        "source": record.source,
        "mlflow_run_id": record.mlflow_run_id,
        "path": record.path,
        "fp16": record.fp16,
        "registered_model": record.registered_model,
        "registered_version": record.registered_version,
        "size_bytes": record.size_bytes,
        "parity": record.parity,
    }


def parity_text(parity: dict[str, Any]) -> str:
    lines = [f"{'component':<14} {'max abs':>10} {'max rel':>10}"]
    for c in parity["components"]:
        lines.append(f"{c['name']:<14} {c['max_abs']:>10.2e} {c['max_rel']:>10.2e}{'' if c['passed'] else '  FAIL'}")
    lines.append(f"end to end PSNR: {', '.join(f'{p:.1f} dB' for p in parity['psnr_db'])} (providers {', '.join(parity['providers'])})")
    return "\n".join(lines)


def cmd_export(args: argparse.Namespace) -> int:
    import torch

    from core.export.exporter import ParityError, export_model
    from core.settings import get_settings

    torch.set_num_threads(get_settings().torch_threads)

    def progress(fraction: float, text: str) -> None:
        if not args.json:
            print(f"[{fraction:4.0%}] {text}", file=sys.stderr)

    try:
        record = export_model(args.ref, args.out, fp16=args.fp16, name=args.name, progress=progress)
    except ParityError as exc:
        print(parity_text(exc.report.model_dump(mode="json")), file=sys.stderr)
        raise
    summary = export_summary(record)
    text = (
        f"{parity_text(record.parity)}\nExported to {record.path} "
        f"(registered as {record.registered_model} version {record.registered_version}, export id {record.id})."
    )
    emit(args, summary, text)
    return 0


def cmd_exports(args: argparse.Namespace) -> int:
    from core.export_records import list_exports

    rows = [export_summary(r) for r in list_exports()]
    lines = [f"{r['id']}  {r['registered_model']} v{r['registered_version']}  {r['path']}" for r in rows]
    emit(args, rows, "\n".join(lines) or "No exports yet (`studio export RUN_ID`).")
    return 0


def cmd_single_file(args: argparse.Namespace) -> int:
    from core.modeling.exchange import single_file

    out = single_file(args.ref, args.out)
    size = out.stat().st_size
    text = f"Wrote {out} ({size / 1e6:.1f} MB, Stable Diffusion layout); load it with the model folder as its config."
    emit(args, {"path": str(out), "size_bytes": size}, text)
    return 0


def cmd_lora(args: argparse.Namespace) -> int:
    import shutil

    from core.files import atomic_path
    from core.modeling.exchange import lora_file

    source = lora_file(args.ref, args.format)
    out = args.out / source.name if args.out.is_dir() else args.out
    with atomic_path(out) as tmp:
        shutil.copyfile(source, tmp)
    emit(args, {"path": str(out), "format": args.format, "size_bytes": out.stat().st_size}, f"Wrote the {args.format} LoRA file {out}.")
    return 0


def cmd_import_single_file(args: argparse.Namespace) -> int:
    from core.modeling.exchange import import_model

    folder = import_model(args.file, args.config, args.name)
    text = f"Imported {args.file.name} as the model folder {folder}; fine-tune it with preset finetune and base_model={folder}."
    emit(args, {"path": str(folder), "name": args.name}, text)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.api import create_app

    print(f"Serving the API on http://{args.host}:{args.port} (docs at /docs, playground at /playground).", file=sys.stderr)
    uvicorn.run(create_app(bind_host=args.host), host=args.host, port=args.port, log_level="warning")
    return 0


def register(sub: Any) -> None:
    p = add_command(sub, "export", "export a run's or a folder's model to ONNX, with a parity report", cmd_export)
    p.add_argument("ref", help="MLflow run id or model folder")
    p.add_argument("--out", type=Path, help="export folder (default: STUDIO_HOME/exports/<id>)")
    p.add_argument("--fp16", action="store_true", help="fp16 graphs for the CUDA execution provider")
    p.add_argument("--name", help="registered model name in MLflow (default: <run name>-onnx)")

    add_command(sub, "exports", "list the ONNX exports", cmd_exports)

    model = sub.add_parser("model", help="a model as files other tools load: one Stable Diffusion checkpoint, its LoRA adapter; import a checkpoint")
    actions = model.add_subparsers(dest="action", required=True)
    p = add_command(actions, "single-file", "write a run's or a folder's model as one .safetensors in the original Stable Diffusion layout", cmd_single_file)
    p.add_argument("ref", help="MLflow run id or model folder")
    p.add_argument("out", type=Path, help="the .safetensors file to write")
    p = add_command(actions, "lora", "write a LoRA run's adapter alone, for diffusers' load_lora_weights or kohya / ComfyUI", cmd_lora)
    p.add_argument("ref", help="MLflow run id or model folder")
    p.add_argument("out", type=Path, help="the file to write, or a folder to write it into")
    p.add_argument("--format", choices=("diffusers", "kohya"), default="diffusers")
    p = add_command(actions, "import-single-file", "import a Stable Diffusion .safetensors checkpoint as a model folder (a fine-tuning base)", cmd_import_single_file)
    p.add_argument("file", type=Path, help="the .safetensors checkpoint")
    p.add_argument("--config", required=True, help="run id or model folder with the same architecture (configs, tokenizer, scheduler)")
    p.add_argument("--name", required=True, help="the new model's name (STUDIO_HOME/models/<name>)")

    p = add_command(sub, "serve", "serve the HTTP API and the playground", cmd_serve)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
