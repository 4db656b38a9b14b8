"""Export a run's (or a folder's) model to ONNX: graphs, optimization, parity, catalog, MLflow.

An export that is beyond tolerance fails loudly: its folder is removed and nothing is recorded or
registered. A good one is renamed into place, logged to the run under `onnx/` with its parity
metrics, registered as a new version of a model in MLflow's registry, and recorded in the catalog.
"""

from __future__ import annotations

import re
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch
from sqlalchemy import select

from core.db import Export, new_id, session_scope
from core.errors import StudioError
from core.export.graphs import PARTS, export_graphs
from core.export.optimize import convert_fp16, optimize_graph
from core.export.parity import ParityReport, parity_report
from core.inference.onnx_backend import cuda_works
from core.modeling.io import load_components
from core.settings import get_settings
from core.tracking import get_tracking, model_folder

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
    from mlflow.exceptions import MlflowException

    tracking = get_tracking()
    client = tracking.client
    if run_id is None:
        run_id = client.create_run(tracking.experiment_id, run_name=f"export {label}", tags={"source_folder": label}).info.run_id
        client.set_terminated(run_id)
    client.log_artifacts(run_id, str(folder), "onnx")
    metrics = {"onnx_psnr_db": min(report.psnr_db), **{f"onnx_max_rel_{c.name}": c.max_rel for c in report.components}}
    for key, value in metrics.items():
        client.log_metric(run_id, key, value)
    model = name or registry_name(label)
    try:
        client.create_registered_model(model, description="ONNX exports from Diffusion Studio")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    source = f"{client.get_run(run_id).info.artifact_uri}/onnx"
    version = client.create_model_version(model, source, run_id=run_id, tags={"fp16": str(report.fp16).lower()})
    return run_id, model, str(version.version)


def export_model(ref: str, out: Path | None = None, fp16: bool = False, name: str | None = None, progress: Progress | None = None) -> Export:
    """Export the model of run id or folder `ref` into `out` (default: STUDIO_HOME/exports/<id>)."""
    step = progress or (lambda _f, _t: None)
    if fp16 and not cuda_works():
        raise StudioError("An fp16 export is for the CUDA execution provider, and ONNX Runtime finds no GPU here.")
    export_id = new_id()
    out = (out or get_settings().home.resolve() / "exports" / export_id).resolve()
    if out.exists() and any(out.iterdir()):
        raise StudioError(f"The export folder {out} already exists and is not empty.")
    step(0.02, "Loading the model…")
    folder = model_folder(ref)
    run_id = None if Path(ref).expanduser().is_dir() else ref
    components = load_components(folder)
    for module in (components.text_encoder, components.vae, components.unet):
        module.to("cpu").eval()

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}-{export_id}")
    try:
        export_graphs(components, tmp, lambda f, text: step(0.05 + 0.55 * f, text))
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
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    try:
        step(0.9, "Logging to MLflow and registering the model version…")
        label = folder.name if run_id is None else (get_tracking().client.get_run(run_id).info.run_name or run_id)
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
    step(1.0, f"Exported to {out}.")
    return record


def list_exports(limit: int = 100) -> list[Export]:
    with session_scope() as session:
        return list(session.scalars(select(Export).order_by(Export.created_at.desc()).limit(limit)))


def get_export(export_id: str) -> Export:
    with session_scope() as session:
        record = session.get(Export, export_id)
    if record is None:
        raise StudioError(f"There is no export {export_id!r}.")
    return record


def newest_export_of(run_id: str) -> Export | None:
    with session_scope() as session:
        query = select(Export).where(Export.mlflow_run_id == run_id).order_by(Export.created_at.desc()).limit(1)
        return session.scalars(query).first()


def export_files(record: Export) -> list[tuple[str, int]]:
    root = Path(record.path)
    return [(str(p.relative_to(root)), p.stat().st_size) for p in sorted(root.rglob("*")) if p.is_file()]


def export_zip(record: Export) -> Path:
    """The export as one zip file (made once, next to the cache), for downloading."""
    dest = get_settings().cache_dir / "export-zips" / f"{record.id}.zip"
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for rel, _size in export_files(record):
            archive.write(Path(record.path) / rel, f"{record.id}/{rel}")
    tmp.rename(dest)
    return dest
