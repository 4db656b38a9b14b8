"""Damaged model files: a truncated .safetensors, a corrupt model_index.json, a truncated state.pt.

Each is refused with one sentence by the real loaders (load_components, the playground's generator
loading, checkpoint resume) before any weight is used; nothing half-loaded is kept or cached.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from core.errors import StudioError
from core.inference.models import load_generator
from core.modeling.io import load_components
from core.training.checkpoint import load_state, resolve_resume, save_checkpoint, save_state


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from core.modeling.io import save_components
    from core.modeling.presets import build_components

    return save_components(build_components("tiny"), tmp_path_factory.mktemp("model") / "model")


@pytest.fixture
def model(saved_model: Path, tmp_path: Path, home: Path) -> Path:
    return Path(shutil.copytree(saved_model, tmp_path / "model"))


def truncate(path: Path) -> bytes:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return data


@pytest.mark.parametrize("part", ["unet", "text_encoder"])
def test_a_truncated_safetensors_file_is_refused(model: Path, part: str) -> None:
    weights = next((model / part).glob("*.safetensors"))
    whole = truncate(weights)
    said = f"{weights} is damaged or incomplete (Error while deserializing header: incomplete metadata, file not fully covered), so the model was not loaded."
    with pytest.raises(StudioError) as raised:
        load_components(model)
    assert str(raised.value) == said
    with pytest.raises(StudioError) as raised:
        load_generator(str(model))  # the playground and the API load models this way
    assert str(raised.value) == said

    weights.write_bytes(whole)  # nothing of the failed load was cached: the mended model loads
    assert load_generator(str(model)).components.unet is not None


def test_a_corrupt_model_index_is_refused(model: Path) -> None:
    index = model / "model_index.json"
    index.write_text('{"_class_name": "StableDiffusionPipeline", ')
    for load in (load_components, lambda folder: load_generator(str(folder))):
        with pytest.raises(StudioError) as raised:
            load(model)
        assert str(raised.value) == f"{index} is not valid JSON."


def test_a_truncated_checkpoint_state_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    state = {"stage": "unet", "step": 5, "w": torch.arange(4096.0)}
    folder = save_checkpoint(root, "step-2unet-0000005", lambda f: save_state(f / "state.pt", state), keep=2)
    assert resolve_resume(root, "latest") == folder and load_state(folder / "state.pt")["step"] == 5
    truncate(folder / "state.pt")

    with pytest.raises(StudioError) as raised:  # what `--resume latest` (and a path) does first
        resolve_resume(root, "latest")
    assert str(raised.value) == (
        f"The checkpoint {folder} was changed after the studio saved it (state.pt does not match its recorded sha256); it will not be loaded."
    )
    with pytest.raises(StudioError):
        resolve_resume(root, str(folder))
    with pytest.raises(StudioError) as raised:  # and the state itself, read without its manifest, is refused too
        load_state(folder / "state.pt")
    assert (
        str(raised.value)
        == f"The checkpoint state {folder / 'state.pt'} is damaged or incomplete, so the training was not resumed from it."
    )
