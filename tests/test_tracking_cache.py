"""The artifact and model download cache, and the remembered "does this run have a model", against
a real MLflow store: several loaders downloading one model at once, and listings that walk no
artifacts twice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LOAD = "import sys; from core.tracking import model_folder; print(model_folder(sys.argv[1]))"


def fake_model(folder: Path) -> dict[str, int]:
    """A folder in the diffusers layout (model_index.json and component folders), big enough that
    concurrent downloads overlap; returns relative path -> size."""
    files = {"model_index.json": json.dumps({"_class_name": "StableDiffusionPipeline"}).encode()}
    for part in ("unet", "vae", "text_encoder"):
        files[f"{part}/config.json"] = json.dumps({"part": part}).encode()
        for i in range(4):
            files[f"{part}/weights-{i}.safetensors"] = os.urandom(1_500_000)
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    return {rel: len(data) for rel, data in files.items()}


def run_with_model(tmp_path: Path, name: str) -> tuple[str, dict[str, int]]:
    from core.tracking import create_run
    from core.tracking.writes import log_artifacts, set_status

    source = tmp_path / f"{name}-model"
    sizes = fake_model(source)
    run_id = create_run(name)
    log_artifacts(run_id, source, "model")
    set_status(run_id, "FINISHED")
    return run_id, sizes


def files_of(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_size for p in folder.rglob("*") if p.is_file()}


def test_threads_and_processes_download_one_model_at_once(home: Path, tmp_path: Path) -> None:
    from core.settings import get_settings
    from core.tracking import model_folder

    run_id, sizes = run_with_model(tmp_path, "shared")
    cache = get_settings().cache_dir / "models"

    # Four processes and four threads start together on an empty cache.
    env = {**os.environ, "STUDIO_HOME": str(home)}
    procs = [subprocess.Popen([sys.executable, "-c", LOAD, run_id], env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    barrier, results, errors = threading.Barrier(4), [], []

    def load() -> None:
        barrier.wait()
        try:
            results.append(model_folder(run_id))
        except Exception as exc:  # noqa: BLE001  (collected and asserted below)
            errors.append(exc)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    outputs = [p.communicate(timeout=300) for p in procs]

    assert errors == []
    assert [p.returncode for p in procs] == [0] * 4, [err[-2000:] for _, err in outputs]
    dest = cache / run_id
    assert set(results) == {dest} and {Path(out.strip().splitlines()[-1]) for out, _ in outputs} == {dest}
    assert files_of(dest) == sizes  # every file, whole, once
    assert sorted(p.name for p in cache.iterdir()) == [run_id]  # no staging folder left behind


def test_a_failed_download_leaves_nothing_behind(home: Path) -> None:
    from core.errors import StudioError
    from core.settings import get_settings
    from core.tracking import create_run, model_folder
    from core.tracking.artifacts import artifact_file

    run_id = create_run("empty")
    with pytest.raises(StudioError, match="no trained model"):
        model_folder(run_id)
    with pytest.raises(StudioError, match="no artifact"):
        artifact_file(run_id, "images/missing.png")
    cache = get_settings().cache_dir
    assert not (cache / "models").exists() or not any((cache / "models").iterdir())
    assert not any(p.is_file() for p in (cache / "runs").rglob("*")) if (cache / "runs").exists() else True


def test_the_second_listing_walks_no_artifacts(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.tracking import MlflowClient

    from core.inference.models import list_models
    from core.tracking import create_run
    from core.tracking.edits import delete_run
    from core.tracking.writes import log_artifacts, set_status

    a, _ = run_with_model(tmp_path, "a")
    b, _ = run_with_model(tmp_path, "b")
    later = create_run("model-comes-later")  # finished without a model (e.g. a SageMaker job before the pipeline's fetch)
    set_status(later, "FINISHED")

    listed: list[str] = []
    real = MlflowClient.list_artifacts

    def counted(self: MlflowClient, run_id: str, path: str | None = None) -> list:
        listed.append(run_id)
        return real(self, run_id, path)

    monkeypatch.setattr(MlflowClient, "list_artifacts", counted)
    assert [m.id for m in list_models()] == [b, a]
    assert sorted(listed) == sorted([a, b, later])
    listed.clear()
    assert [m.id for m in list_models()] == [b, a]
    assert listed == []  # remembered, for runs with a model and (for a while) without

    # A model logged through the package is seen at once; a deleted run is forgotten.
    log_artifacts(later, tmp_path / "a-model", "model")
    assert [m.id for m in list_models()] == [later, b, a]
    assert listed == [later]
    delete_run(a)
    assert [m.id for m in list_models()] == [later, b]
