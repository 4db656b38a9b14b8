"""Local copies of run artifacts: single files (sample images, prompts), whole models, model zips.

Artifacts never change once logged, so each is downloaded once into STUDIO_HOME's cache. Several
loaders may ask for the same one at once (the playground, the API, a pipeline): each downloads into
its own staging folder, checks it got every file, and renames it into place; whoever comes second
keeps the first copy and drops its own, so a reader never sees half a model.
"""

from __future__ import annotations

import errno
import os
import shutil
import time
from pathlib import Path

from mlflow.entities import FileInfo

from core.errors import StudioError
from core.files import temp_sibling, zip_folder
from core.settings import get_settings
from core.tracking.connection import get_tracking

MODEL = "model"  # the artifact folder that holds a run's final model (diffusers layout)
IMPORTED = "model:"  # the id prefix of a model imported from a single file (Settings.models_dir)
NO_MODEL_TTL_S = 60.0  # a run without a model may still get one (a relay, the pipeline's fetch)

# Run id -> until when the answer to "has a model" holds (monotonic seconds; inf once it has one).
_model_known: dict[str, tuple[bool, float]] = {}


def _cache(*parts: str) -> Path:
    return get_settings().cache_dir.joinpath(*parts)


def has_model(run_id: str) -> bool:
    """Whether the run logged a `model` folder; remembered, so listing models walks no artifacts twice."""
    known = _model_known.get(run_id)
    if known and known[1] > time.monotonic():
        return known[0]
    found = (_cache("models", run_id) / "model_index.json").is_file() or any(a.path == MODEL for a in list_artifacts(run_id))
    _model_known[run_id] = (found, float("inf") if found else time.monotonic() + NO_MODEL_TTL_S)
    return found


def forget(run_id: str) -> None:
    """Drop what is remembered about the run's model (it was just logged, or the run deleted)."""
    _model_known.pop(run_id, None)


def drop_cache(run_id: str) -> None:
    """Remove the run's local copies (its run is being deleted)."""
    forget(run_id)
    for folder in (_cache("runs", run_id), _cache("models", run_id)):
        shutil.rmtree(folder, ignore_errors=True)
    _cache("zips", f"{run_id}-model.zip").unlink(missing_ok=True)


def list_artifacts(run_id: str, path: str | None = None) -> list[FileInfo]:
    return get_tracking().client.list_artifacts(run_id, path)


def artifact_tree(run_id: str, path: str) -> dict[str, int | None]:
    """Every file under the artifact folder `path` (full artifact paths), with its size if the store tells it."""
    files: dict[str, int | None] = {}
    stack = [path]
    while stack:
        for a in list_artifacts(run_id, stack.pop()):
            if a.is_dir:
                stack.append(a.path)
            else:
                files[a.path] = a.file_size
    return files


def _complete(folder: Path, run_id: str, path: str) -> bool:
    local = {f"{path}/{p.relative_to(folder).as_posix()}": p.stat().st_size for p in folder.rglob("*") if p.is_file()}
    remote = artifact_tree(run_id, path)
    return local.keys() == remote.keys() and all(size in (None, local[name]) for name, size in remote.items())


def _download(run_id: str, path: str, dest: Path, folder: bool) -> Path:
    """Download the artifact `path` to `dest` through a staging folder of this loader's own."""
    staging = temp_sibling(dest)
    staging.mkdir(parents=True)
    try:
        local = Path(get_tracking().client.download_artifacts(run_id, path, str(staging)))
        if folder and not _complete(local, run_id, path):
            raise StudioError(f"The download of {path!r} from run {run_id} is incomplete; try again.")
        try:
            os.rename(local, dest)  # atomic; refused for a folder another loader renamed into place first
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def artifact_file(run_id: str, path: str) -> Path:
    """A local copy of one artifact file (a sample image, validation_prompts.json)."""
    dest = _cache("runs", run_id, path)
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            _download(run_id, path, dest, folder=False)
        except Exception:
            raise StudioError(f"The run {run_id} has no artifact {path!r}.") from None
    return dest


def model_folder(ref: str) -> Path:
    """A local diffusers-layout folder for a model folder path, an imported model (`model:<name>`)
    or an MLflow run id (its `model` artifact)."""
    if ref.startswith(IMPORTED):
        name = ref[len(IMPORTED) :]
        folder = get_settings().models_dir / name
        if "/" in name or name.startswith(".") or not (folder / "model_index.json").is_file():
            raise StudioError(f"There is no imported model {name!r}; `studio model import-single-file FILE --config RUN --name NAME` adds one.")
        return folder
    path = Path(ref).expanduser()
    if path.is_dir():
        return path
    if "/" in ref or ref.startswith("."):
        raise StudioError(f"The model folder {ref} does not exist.")
    dest = _cache("models", ref)
    if (dest / "model_index.json").is_file():
        return dest
    try:
        get_tracking().client.get_run(ref)
    except Exception:
        raise StudioError(f"{ref!r} is neither a model folder nor an MLflow run id.") from None
    if not has_model(ref):
        raise StudioError(f"The run {ref} has no trained model yet (no 'model' artifact).")
    dest.parent.mkdir(parents=True, exist_ok=True)
    return _download(ref, MODEL, dest, folder=True)


def model_zip(run_id: str) -> Path:
    """The run's final model folder as a zip (diffusers layout inside), built once."""
    dest = _cache("zips", f"{run_id}-model.zip")
    return dest if dest.is_file() else zip_folder(model_folder(run_id), dest)
