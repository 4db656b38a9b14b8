"""The models a user can generate with, and one cached generator per model and backend.

A model is named by an MLflow run id, an export id or a folder (a diffusers model or an ONNX
export). Either backend works with any of them when the other half exists: ONNX Runtime on a run
uses the run's newest export; PyTorch on an export uses the model it was exported from.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal, Protocol

from PIL import Image
from pydantic import BaseModel

from core.errors import StudioError
from core.inference.torch_backend import GenerateRequest, size_limits

Backend = Literal["torch", "onnx"]
BACKEND_LABELS: dict[str, str] = {"torch": "PyTorch", "onnx": "ONNX Runtime"}


class Generator(Protocol):
    resolution: int
    size_multiple: int
    label: str

    def __call__(self, request: GenerateRequest) -> list[Image.Image]: ...


class ModelEntry(BaseModel):
    id: str
    label: str
    kind: Literal["run", "export"]
    backends: list[Backend]
    run_id: str | None = None


@dataclass
class Generation:
    images: list[Image.Image]
    seconds: float
    backend_label: str


def list_models(limit: int = 30) -> list[ModelEntry]:
    """Finished runs with a trained model, newest first, then the exports in the catalog."""
    from core.export.exporter import list_exports
    from core.tracking import get_tracking

    tracking = get_tracking()
    exports = list_exports()
    exported_runs = {e.mlflow_run_id for e in exports}
    entries = []
    runs = tracking.client.search_runs(
        [tracking.experiment_id], "attributes.status = 'FINISHED'", order_by=["attributes.start_time DESC"], max_results=limit
    )
    for run in runs:
        if any(a.path == "model" for a in tracking.client.list_artifacts(run.info.run_id)):
            entries.append(
                ModelEntry(
                    id=run.info.run_id,
                    label=f"run {run.info.run_name or run.info.run_id} ({run.info.run_id[:8]})",
                    kind="run",
                    backends=["torch", "onnx"] if run.info.run_id in exported_runs else ["torch"],
                    run_id=run.info.run_id,
                )
            )
    for export in exports:
        entries.append(
            ModelEntry(
                id=export.id,
                label=f"export {export.registered_model} v{export.registered_version} ({export.id})",
                kind="export",
                backends=["onnx", "torch"],
                run_id=export.mlflow_run_id,
            )
        )
    return entries


def _export_by(**where: str):  # type: ignore[no-untyped-def]
    from sqlalchemy import select

    from core.db import Export, session_scope

    with session_scope() as session:
        query = select(Export).filter_by(**where).order_by(Export.created_at.desc()).limit(1)
        return session.scalars(query).first()


def onnx_folder(ref: str) -> Path:
    from core.inference.onnx_backend import is_onnx_export

    path = Path(ref).expanduser()
    if path.is_dir() and is_onnx_export(path):
        return path
    record = _export_by(id=ref) or _export_by(mlflow_run_id=ref) or _export_by(source=ref)
    if record is None:
        raise StudioError(f"{ref!r} has no ONNX export yet; export it first (`studio export {ref}`).")
    return Path(record.path)


def torch_folder(ref: str) -> Path:
    from core.inference.onnx_backend import is_onnx_export
    from core.tracking import model_folder

    path = Path(ref).expanduser()
    if path.is_dir() and is_onnx_export(path):
        record = _export_by(path=str(path.resolve()))
        if record is None:
            raise StudioError(f"{ref} is an ONNX export the catalog does not know, so its PyTorch model is unknown; use the onnx backend.")
        return model_folder(record.source)
    record = _export_by(id=ref)
    return model_folder(record.source if record else ref)


@lru_cache(maxsize=6)
def _load(ref: str, backend: Backend, home: str) -> Generator:
    if backend == "onnx":
        from core.inference.onnx_backend import OnnxGenerator

        return OnnxGenerator(onnx_folder(ref))
    from core.inference.torch_backend import TorchGenerator
    from core.settings import get_settings

    return TorchGenerator(torch_folder(ref), get_settings().device)


def load_generator(ref: str, backend: Backend = "torch") -> Generator:
    """The generator of `ref` on `backend`, loaded once per process (sessions cached per export)."""
    from core.settings import get_settings

    if backend not in BACKEND_LABELS:
        raise StudioError(f"Unknown backend {backend!r}; use torch or onnx.")
    return _load(ref, backend, str(get_settings().home.resolve()))


_lock = threading.Lock()  # one generation at a time: the cores are shared by every request


def generate(ref: str, request: GenerateRequest, backend: Backend = "torch") -> Generation:
    generator = load_generator(ref, backend)
    with _lock:
        started = time.perf_counter()
        images = generator(request)
        return Generation(images=images, seconds=time.perf_counter() - started, backend_label=generator.label)


def model_limits(ref: str, backend: Backend = "torch") -> dict[str, int]:
    generator = load_generator(ref, backend)
    low, high = size_limits(generator.resolution, generator.size_multiple)
    return {"resolution": generator.resolution, "multiple": generator.size_multiple, "min_size": low, "max_size": high}
