"""Presets, the offline tokenizer and the diffusers layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from core.errors import StudioError


def test_tokenizer_is_clip_and_offline(home: Path) -> None:
    from core.modeling.tokenizer import clean_caption, count_tokens, load_tokenizer

    tok = load_tokenizer()
    assert len(tok) == 49408
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (49406, 49407, 49407)
    assert tok.model_max_length == 77
    ids = tok("a handwritten digit seven").input_ids
    assert ids[0] == 49406 and ids[-1] == 49407 and len(ids) == 6
    assert clean_caption("a &amp;  cat\u00a0") == "a & cat"
    assert count_tokens("a cat") == 4


def test_tiny_preset_shapes(home: Path) -> None:
    from core.modeling.presets import PRESETS, build_components

    c = build_components("tiny")
    assert PRESETS["tiny"].latent_size == 8 and c.resolution == 32
    with torch.no_grad():
        latents = c.vae.encode(torch.zeros(1, 3, 32, 32)).latent_dist.mean
        assert latents.shape == (1, 4, 8, 8)
        ids = c.tokenizer(["a cat"], padding="max_length", max_length=77, return_tensors="pt").input_ids
        hidden = c.text_encoder(ids)[0]
        out = c.unet(latents, torch.tensor([10]), hidden).sample
    assert out.shape == (1, 4, 8, 8)


def test_saved_model_loads_in_diffusers(trained_model: Path) -> None:
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(trained_model)
    assert pipe.unet.config.sample_size == 8
    assert not list(trained_model.rglob("*.bin"))
    assert json.loads((trained_model / "model_index.json").read_text())["_class_name"] == "StableDiffusionPipeline"


def test_same_seed_same_image(trained_model: Path) -> None:
    from core.inference.torch_backend import GenerateRequest, TorchGenerator

    gen = TorchGenerator(trained_model, "cpu")
    request = GenerateRequest(prompt="a handwritten digit three", steps=4, seed=7, batch=2)
    a, b = gen(request), gen(request)
    assert [x.tobytes() for x in a] == [x.tobytes() for x in b]
    other = gen(request.model_copy(update={"seed": 8}))
    assert other[0].tobytes() != a[0].tobytes()
    for scheduler in ("euler", "dpmpp"):
        assert gen(request.model_copy(update={"scheduler": scheduler}))[0].size == (32, 32)


def test_pickle_weights_are_refused(trained_model: Path, tmp_path: Path) -> None:
    import shutil

    from core.modeling.io import load_components

    copy = tmp_path / "pickled"
    shutil.copytree(trained_model, copy)
    weights = copy / "unet" / "diffusion_pytorch_model.safetensors"
    weights.rename(copy / "unet" / "diffusion_pytorch_model.bin")
    with pytest.raises(StudioError, match="pickle weights"):
        load_components(copy)
    with pytest.raises(StudioError, match="model_index.json is missing"):
        load_components(tmp_path)
    (copy / "model_index.json").write_text("{not json")
    with pytest.raises(StudioError, match="not valid JSON"):
        load_components(copy)
