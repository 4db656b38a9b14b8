"""The models a user can generate with, and one cached generator per model and backend.

A model is named by an MLflow run id, an export id, an imported model (`model:<name>`) or a folder
(a diffusers model or an ONNX export). Either backend works with any of them when the other half
exists: ONNX Runtime on a run uses the run's newest export; PyTorch on an export uses the model it
was exported from.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal, Protocol

from PIL import Image
from pydantic import BaseModel

from core.datasets.buckets import TRAINED_SIZES_FILE
from core.errors import StudioError
from core.inference.lora import lora_path
from core.inference.torch_backend import GenerateRequest, size_fits

Backend = Literal["torch", "onnx"]
BACKEND_LABELS: dict[str, str] = {"torch": "PyTorch", "onnx": "ONNX Runtime"}

log = logging.getLogger(__name__)


class Generator(Protocol):
    folder: Path
    resolution: int
    size_multiple: int
    label: str

    def __call__(self, request: GenerateRequest) -> list[Image.Image]: ...


class ModelEntry(BaseModel):
    id: str
    label: str
    kind: Literal["run", "export", "imported"]
    backends: list[Backend]
    run_id: str | None = None


@dataclass
class Generation:
    images: list[Image.Image]
    seconds: float
    backend_label: str


def list_models(limit: int = 30) -> list[ModelEntry]:
    """Finished runs with a trained model, newest first, then the exports in the catalog, then the
    models imported from single-file checkpoints."""
    from core.export_records import list_exports
    from core.settings import get_settings
    from core.tracking.artifacts import IMPORTED, has_model
    from core.tracking.runs import RunQuery, list_runs

    exports = list_exports()
    exported_runs = {e.mlflow_run_id for e in exports}
    entries = [
        ModelEntry(
            id=row.run_id,
            label=f"run {row.name} ({row.run_id[:8]})",
            kind="run",
            backends=["torch", "onnx"] if row.run_id in exported_runs else ["torch"],
            run_id=row.run_id,
        )
        for row in list_runs(RunQuery(status=["FINISHED"], page_size=limit)).rows
        if has_model(row.run_id)
    ]
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
    imported = get_settings().models_dir
    for folder in sorted(imported.iterdir()) if imported.is_dir() else []:
        if (folder / "model_index.json").is_file():
            entries.append(ModelEntry(id=IMPORTED + folder.name, label=f"imported {folder.name}", kind="imported", backends=["torch"]))
    return entries


def onnx_folder(ref: str) -> Path:
    from core.export_records import find_export
    from core.inference.onnx_backend import is_onnx_export

    path = Path(ref).expanduser()
    if path.is_dir() and is_onnx_export(path):
        return path
    record = find_export(id=ref) or find_export(mlflow_run_id=ref) or find_export(source=ref)
    if record is None:
        raise StudioError(f"{ref!r} has no ONNX export yet; export it first (`studio export {ref}`).")
    return Path(record.path)


def torch_folder(ref: str) -> Path:
    from core.export_records import find_export
    from core.inference.onnx_backend import is_onnx_export
    from core.tracking import model_folder

    path = Path(ref).expanduser()
    if path.is_dir() and is_onnx_export(path):
        record = find_export(path=str(path.resolve()))
        if record is None:
            raise StudioError(f"{ref} is an ONNX export the catalog does not know, so its PyTorch model is unknown; use the onnx backend.")
        return model_folder(record.source)
    record = find_export(id=ref)
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


def generate_side_by_side(run_ids: list[str], request: GenerateRequest) -> dict[str, list[Image.Image]]:
    """One prompt and seed through each run's final model (the engine's own generation code)."""
    from core.inference.torch_backend import TorchGenerator
    from core.settings import get_settings
    from core.tracking import model_folder

    device = get_settings().device
    return {rid: TorchGenerator(model_folder(rid), device)(request) for rid in run_ids}


# One generation or model load at a time: the cores (and the GPU's memory) are shared by every
# request, two requests for a model not loaded yet must not load it twice, and a LoRA one request
# loads into a cached model is unloaded before another request uses that model.
_lock = threading.Lock()


def generate(ref: str, request: GenerateRequest, backend: Backend = "torch") -> Generation:
    with _lock:
        generator = load_generator(ref, backend)
        if request.lora and backend == "torch" and lora_path(request.lora).resolve().is_relative_to(generator.folder.resolve()):
            # A LoRA run's final model holds its adapter merged in (lora/ is a copy): applying it again doubles it.
            raise StudioError("This model already has that LoRA merged in; apply the LoRA to the base model it was fine-tuned from.")
        started = time.perf_counter()
        images = generator(request)
        return Generation(images=images, seconds=time.perf_counter() - started, backend_label=generator.label)


def trained_sizes(folder: Path) -> list[tuple[int, int]]:
    """The (width, height) sizes a model was trained at, most common first, from the `buckets.json`
    aspect-ratio bucketing writes into its folder ({"sizes": [[w, h], ...], "resolution": R}); [] without one."""
    path = folder / TRAINED_SIZES_FILE
    if not path.is_file():
        return []
    try:
        return [(int(w), int(h)) for w, h in json.loads(path.read_text())["sizes"]]
    except (ValueError, KeyError, TypeError):  # a hint only: a damaged file must not stop generation
        log.warning("Ignoring %s: it is not {\"sizes\": [[width, height], ...]}.", path)
        return []


def model_sizes(ref: str, backend: Backend = "torch") -> list[tuple[int, int]]:
    """The (width, height) sizes to offer for a model: its square training size first, then the
    bucket sizes it was trained at that it can generate."""
    with _lock:
        generator = load_generator(ref, backend)
    resolution, multiple = generator.resolution, generator.size_multiple
    sizes = [(resolution, resolution), *trained_sizes(generator.folder)]
    return list(dict.fromkeys(s for s in sizes if all(size_fits(v, resolution, multiple) for v in s)))
