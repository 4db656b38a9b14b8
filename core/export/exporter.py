"""Export a run's (or a folder's) model to ONNX: graphs, optimization, parity, catalog, MLflow.

An export that is beyond tolerance fails loudly: its folder is removed and nothing is recorded or
registered. A good one is renamed into place, logged to the run under `onnx/` with its parity
metrics, registered as a new version of a model in MLflow's registry, and recorded in the catalog.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from core import audit
from core.access import require, server_path
from core.datasets.buckets import TRAINED_SIZES_FILE
from core.db import Export, new_id, session_scope
from core.errors import StudioError
from core.export.graphs import PARTS, export_graphs
from core.export.optimize import convert_fp16, optimize_graph
from core.export.parity import ParityReport, parity_report
from core.files import staged_folder, zip_folder
from core.inference.onnx_backend import cuda_works
from core.modeling.io import load_components
from core.settings import get_settings
from core.tracking import create_run, model_folder
from core.tracking.registry import register_version
from core.tracking.runs import get_run
from core.tracking.writes import log_artifacts, log_metrics, set_status

Progress = Callable[[float, str], None]


class ParityError(StudioError):
    """An export whose graphs disagree with PyTorch beyond tolerance; carries the report."""

    def __init__(self, message: str, report: ParityReport) -> None:
        super().__init__(message)
        self.report = report


def registry_name(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", label).strip("-") + "-onnx"


def log_to_mlflow(folder: Path, report: ParityReport, run_id: str | None, label: str, name: str | None) -> tuple[str, str, str]:
    """Log the export to its run (a new run for a plain folder) and register it; (run, model, version)."""
    if run_id is None:
        run_id = create_run(f"export {label}", {"source_folder": label})
        set_status(run_id, "FINISHED")
    log_artifacts(run_id, folder, "onnx")
    log_metrics(run_id, {"onnx_psnr_db": min(report.psnr_db), **{f"onnx_max_rel_{c.name}": c.max_rel for c in report.components}})
    model = name or registry_name(label)
    version = register_version(model, run_id, "onnx", "ONNX exports from Diffusion Studio", tags={"fp16": str(report.fp16).lower()})
    return run_id, model, str(version)


def export_model(ref: str, out: Path | None = None, fp16: bool = False, name: str | None = None, progress: Progress | None = None) -> Export:
    """Export the model of run id or folder `ref` into `out` (default: STUDIO_HOME/exports/<id>)."""
    require("export")
    step = progress or (lambda _f, _t: None)
    if fp16 and not cuda_works():
        raise StudioError("An fp16 export is for the CUDA execution provider, and ONNX Runtime finds no GPU here.")
    export_id = new_id()
    out = server_path(out or get_settings().home.resolve() / "exports" / export_id)
    if Path(ref).expanduser().is_dir():
        server_path(ref)
    if out.exists() and any(out.iterdir()):
        raise StudioError(f"The export folder {out} already exists and is not empty.")
    step(0.02, "Loading the model…")
    folder = model_folder(ref)
    run_id = None if Path(ref).expanduser().is_dir() else ref
    components = load_components(folder)
    for module in (components.text_encoder, components.vae, components.unet):
        module.to("cpu").eval()

    with staged_folder(out) as tmp:
        export_graphs(components, tmp, lambda f, text: step(0.05 + 0.55 * f, text))
        if (folder / TRAINED_SIZES_FILE).is_file():  # so the playground offers its sizes for the export too
            shutil.copy2(folder / TRAINED_SIZES_FILE, tmp / TRAINED_SIZES_FILE)
        for i, part in enumerate(PARTS):
            step(0.6 + 0.1 * i / len(PARTS), f"Optimizing the {part.replace('_', ' ')} graph…")
            optimize_graph(tmp / part / "model.onnx")
            if fp16:
                convert_fp16(tmp / part / "model.onnx")
        step(0.7, "Checking parity with PyTorch (components, then whole generations)…")
        with torch.no_grad():
            report = parity_report(components, tmp, fp16)
        (tmp / "parity.json").write_text(report.model_dump_json(indent=1))
        if not report.passed:
            raise ParityError(f"The export disagrees with PyTorch beyond tolerance: {', '.join(report.failures())}; nothing was registered.", report)

    try:
        step(0.9, "Logging to MLflow and registering the model version…")
        label = folder.name if run_id is None else (get_run(run_id).info.run_name or run_id)
        run_id, model, version = log_to_mlflow(out, report, run_id, label, name)
        size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
        with session_scope() as session:
            record = Export(
                id=export_id,
                source=ref,
                mlflow_run_id=run_id,
                path=str(out),
                fp16=fp16,
                parity=report.model_dump(mode="json"),
                registered_model=model,
                registered_version=version,
                size_bytes=size,
            )
            session.add(record)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    audit.record("model.export", export_id, source=ref, registered=f"{model} v{version}")
    step(1.0, f"Exported to {out}.")
    return record


def export_files(record: Export) -> list[tuple[str, int]]:
    root = Path(record.path)
    return [(str(p.relative_to(root)), p.stat().st_size) for p in sorted(root.rglob("*")) if p.is_file()]


def export_zip(record: Export) -> Path:
    """The export as one zip file (made once, next to the cache), for downloading."""
    dest = get_settings().cache_dir / "export-zips" / f"{record.id}.zip"
    if dest.is_file():
        return dest
    return zip_folder(Path(record.path), dest, prefix=record.id)
