"""The ONNX Runtime pipeline against the PyTorch one on a really trained and exported tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import StudioError
from core.inference.torch_backend import GenerateRequest

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("scheduler", ["ddim", "euler", "dpmpp"])
def test_same_seed_and_scheduler_match_between_backends(exported: dict, scheduler: str) -> None:
    from core.inference.models import generate
    from core.inference.onnx_backend import psnr

    request = GenerateRequest(
        prompt="a handwritten digit four", negative_prompt="a digit one", steps=6, guidance=4.0,
        seed=11, scheduler=scheduler, batch=2, height=40, width=24,
    )
    onnx = generate(exported["export_id"], request, "onnx")
    torch = generate(exported["run_id"], request, "torch")
    assert onnx.backend_label == "ONNX Runtime (CPU)" and torch.backend_label == "PyTorch (CPU)"
    assert [im.size for im in onnx.images] == [(24, 40)] * 2
    assert min(psnr(a, b) for a, b in zip(onnx.images, torch.images)) >= 40


def test_seeds_and_sessions_cached_per_export(exported: dict) -> None:
    import numpy as np

    from core.inference.models import generate, load_generator

    assert load_generator(exported["run_id"], "onnx") is load_generator(exported["run_id"], "onnx")
    request = GenerateRequest(prompt="a handwritten digit two", steps=3, seed=5)
    first = generate(exported["run_id"], request, "onnx").images[0]
    again = generate(exported["export_id"], request, "onnx").images[0]
    other = generate(exported["export_id"], request.model_copy(update={"seed": 6}), "onnx").images[0]
    assert np.array_equal(np.asarray(first), np.asarray(again))
    assert not np.array_equal(np.asarray(first), np.asarray(other))


def test_providers_detected_by_a_real_session() -> None:
    from core.inference.onnx_backend import CPU, providers

    assert providers()[-1] == CPU  # no GPU here: CUDA is listed as available but does not run


def test_onnx_without_export_and_bad_size_are_user_errors(exported: dict, trained_model: Path) -> None:
    from core.inference.models import generate, onnx_folder

    with pytest.raises(StudioError, match="no ONNX export"):
        onnx_folder(str(trained_model))
    with pytest.raises(StudioError, match="multiple of 8 between 16 and 64"):
        generate(exported["export_id"], GenerateRequest(prompt="x", steps=1, height=128), "onnx")


def test_cli_generates_with_either_backend(exported: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import json

    from PIL import Image

    from app.cli import main

    for backend in ("onnx", "torch"):
        out = tmp_path / f"{backend}.png"
        code = main(["generate", "--model", exported["export_id"], "--backend", backend, "--prompt", "a digit", "--steps", "2", "--batch", "2", "--out", str(out), "--json"])
        assert code == 0
        assert json.loads(capsys.readouterr().out)["backend"].startswith("ONNX" if backend == "onnx" else "PyTorch")
        assert Image.open(out).size == (64, 32)
