"""Tools built on transformers 4.x read a model folder the studio saved (with transformers 5):
the slow CLIPTokenizer from vocab.json + merges.txt, CLIPTextModel's weights, and Optimum's ONNX
export, whose images match the studio's own. Runs in .venv-compat (`make test-compat`)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import transformers

if int(transformers.__version__.split(".")[0]) >= 5:
    pytest.skip("tests/compat needs transformers 4.x (make test-compat)", allow_module_level=True)

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CAPTIONS = ["a handwritten digit seven", "A Cat, on the MAT!! 123", "don't stop — naïve café"]
GENERATE = {"num_inference_steps": 3, "output_type": "np"}

# Run by the studio's own environment: a tiny model saved as the studio saves one, and what the
# studio computes from it (token ids, text features, images) for the 4.x tools to match.
STUDIO_SIDE = """
import json, sys, numpy as np, torch
from pathlib import Path
from core.export.graphs import export_graphs
from core.modeling.io import pipeline_for, save_components
from core.modeling.presets import build_components
folder, captions, generate = Path(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3])
c = build_components("tiny")
save_components(c, folder)
export_graphs(c, folder.parent / "studio-onnx")
ids = [c.tokenizer(t).input_ids for t in captions]
with torch.no_grad():
    tokens = c.tokenizer(captions[:1], padding="max_length", max_length=77, return_tensors="pt").input_ids
    features = c.text_encoder(tokens)[0].numpy()
    images = pipeline_for(c)(captions[0], generator=torch.Generator().manual_seed(0), **generate).images
np.savez(folder.parent / "studio.npz", features=features, images=images)
print(json.dumps(ids))
"""


@pytest.fixture(scope="module")
def studio_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[list[int]], dict[str, np.ndarray]]:
    root = tmp_path_factory.mktemp("compat")
    env = {**os.environ, "STUDIO_HOME": str(root / "studio"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [str(REPO / ".venv" / "bin" / "python"), "-c", STUDIO_SIDE, str(root / "model"), json.dumps(CAPTIONS), json.dumps(GENERATE)],
        cwd=REPO, env=env, capture_output=True, text=True, check=True,
    )
    return root / "model", json.loads(proc.stdout.splitlines()[-1]), dict(np.load(root / "studio.npz"))


def test_slow_and_fast_clip_tokenizers_match_the_studio(studio_model) -> None:  # type: ignore[no-untyped-def]
    from transformers import CLIPTokenizer, CLIPTokenizerFast

    folder, ids, _ = studio_model
    for cls in (CLIPTokenizer, CLIPTokenizerFast):  # the slow one reads vocab.json and merges.txt
        tokenizer = cls.from_pretrained(folder, subfolder="tokenizer")
        assert [tokenizer(t).input_ids for t in CAPTIONS] == ids, cls.__name__


def test_clip_text_model_loads_every_weight(studio_model) -> None:  # type: ignore[no-untyped-def]
    from transformers import CLIPTextModel, CLIPTokenizer

    folder, _, studio = studio_model
    model, info = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    tokens = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")(CAPTIONS[:1], padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        assert np.abs(model(tokens)[0].numpy() - studio["features"]).max() < 1e-5


def test_optimum_onnx_export_generates_the_studios_images(studio_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from optimum.exporters.onnx import main_export
    from optimum.onnxruntime import ORTStableDiffusionPipeline

    folder, _, studio = studio_model
    main_export(str(folder), output=tmp_path / "onnx", task="text-to-image", device="cpu")
    pipe = ORTStableDiffusionPipeline.from_pretrained(tmp_path / "onnx")
    images = pipe(CAPTIONS[0], generator=torch.Generator().manual_seed(0), **GENERATE).images
    assert np.abs(images - studio["images"]).max() < 1e-4


def test_the_studios_onnx_export_runs_in_optimums_pipeline(studio_model) -> None:  # type: ignore[no-untyped-def]
    from optimum.onnxruntime import ORTStableDiffusionPipeline

    folder, _, studio = studio_model
    pipe = ORTStableDiffusionPipeline.from_pretrained(folder.parent / "studio-onnx")
    images = pipe(CAPTIONS[0], generator=torch.Generator().manual_seed(0), **GENERATE).images
    assert np.abs(images - studio["images"]).max() < 1e-3
