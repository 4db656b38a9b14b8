"""LoRA at a strength, and the sizes a model was trained at, on a tiny model built from the presets.

The LoRA is made the way a LoRA training makes one (peft on the UNet, `core.modeling.lora`) with
random, non-zero weights, and saved by diffusers' own `save_lora_weights`.
"""

from __future__ import annotations

import json
import pickle
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import StudioError
from core.inference.torch_backend import GenerateRequest

RANK = 4
REQUEST = GenerateRequest(prompt="a handwritten digit seven", steps=2, seed=3, guidance=2.0)


def write_lora(unet: torch.nn.Module, folder: Path, seed: int = 0) -> Path:
    """Add a LoRA with random weights to `unet` (in place) and save it as diffusers does; returns the file."""
    from diffusers import StableDiffusionPipeline

    from core.modeling.lora_files import DIFFUSERS_FILE
    from core.modeling.lora import add_lora, lora_state

    add_lora(unet, RANK)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if "lora_" in name:  # peft starts lora_B at zero: a LoRA that changes nothing
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=lora_state(unet))
    return folder / DIFFUSERS_FILE


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A base model with a LoRA in peft's keys beside it in `lora/`, and the same LoRA merged into a model,
    which a LoRA training's final model is: its own `lora/` holds the LoRA with `lora.down/up` keys
    and in kohya's format (core.modeling.lora_files)."""
    from core.modeling.io import save_components
    from core.modeling.lora_files import DIFFUSERS_FILE, KOHYA_FILE
    from core.modeling.presets import build_components

    root = tmp_path_factory.mktemp("lora-models")
    components = build_components("tiny")
    base = save_components(components, root / "base" / "model")
    lora = write_lora(components.unet, base.parent / "lora")  # beside the base it was trained on
    merged = save_components(components, root / "merged")  # merges the adapters into the weights
    plain = root / "plain"
    shutil.copytree(base, plain, ignore=shutil.ignore_patterns("lora"))
    return {"base": base, "lora": lora, "merged": merged, "plain": plain, "down_up": merged / "lora" / DIFFUSERS_FILE, "kohya": merged / "lora" / KOHYA_FILE}


def pixels(ref: str | Path, **changes: object) -> np.ndarray:
    from core.inference.models import generate

    return np.asarray(generate(str(ref), REQUEST.model_copy(update=changes)).images[0], dtype=np.int16)


def has_adapters(ref: Path) -> bool:
    from core.inference.models import load_generator

    return bool(getattr(load_generator(str(ref)).components.unet, "peft_config", None))


def test_strength_scales_the_lora_and_the_cached_model_returns_to_base(models: dict[str, Path], home: Path) -> None:
    from core.inference.lora import store_lora

    base = pixels(models["base"])
    model_lora = str(models["base"])  # the LoRA found beside the model folder
    assert np.array_equal(pixels(models["base"], lora=model_lora, lora_strength=0.0), base)
    full = pixels(models["base"], lora=model_lora, lora_strength=1.0)
    assert np.abs(full - base).max() > 20
    assert np.abs(full - pixels(models["merged"])).max() <= 2  # the LoRA at 1 is the merged model
    half = pixels(models["base"], lora=model_lora, lora_strength=0.5)
    assert not np.array_equal(half, full) and not np.array_equal(half, base)
    # the same LoRA with `lora.down/up` keys, and with kohya's, loads into the same layers
    for other in (models["down_up"], models["kohya"]):
        assert np.abs(pixels(models["base"], lora=store_lora(other)) - full).max() <= 2, other.name
    # the cached generator is the plain base model again after each request
    assert not has_adapters(models["base"])
    assert np.array_equal(pixels(models["base"]), base)


def test_concurrent_requests_with_different_loras_do_not_mix(models: dict[str, Path], home: Path) -> None:
    from core.inference.lora import store_lora

    kohya = store_lora(models["kohya"])
    variants = [{}, {"lora": str(models["base"]), "lora_strength": 1.0}, {"lora": kohya, "lora_strength": 0.3}, {}, {"lora": str(models["base"]), "lora_strength": 2.0}]
    alone = [pixels(models["base"], **v) for v in variants]
    with ThreadPoolExecutor(len(variants)) as pool:
        together = list(pool.map(lambda v: pixels(models["base"], **v), variants))
    assert all(np.array_equal(a, b) for a, b in zip(alone, together))


def one_sentence(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message and message.endswith(".") and "Traceback" not in message
    return message


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (pickle.dumps({"unet.conv_in.lora_A.weight": [0.0]}), "not a safetensors file"),
        (b"PK\x03\x04" + b"\0" * 64, "not a safetensors file"),  # torch.save's zip
        ((40).to_bytes(8, "little") + b'{"a": {"dtype": "F32", "shape": [9], "data_offsets": [0, 36]}}', "damaged or incomplete"),
        (b"", "not a safetensors file"),
    ],
)
def test_files_that_are_not_safetensors_are_refused_by_content(tmp_path: Path, home: Path, content: bytes, reason: str) -> None:
    from core.inference.lora import store_lora, uploads_dir

    path = tmp_path / "evil.safetensors"
    path.write_bytes(content)
    with pytest.raises(StudioError) as exc:
        store_lora(path)
    assert reason in one_sentence(exc)
    assert not any(uploads_dir().iterdir())  # nothing kept, not even the temporary


def test_a_lora_over_the_size_limit_is_refused(models: dict[str, Path], home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.inference.lora import LoraTooLarge, store_lora
    from core.settings import reset_settings

    monkeypatch.setenv("STUDIO_LORA_MAX_BYTES", "4096")
    reset_settings()
    with pytest.raises(LoraTooLarge) as exc:
        store_lora(models["lora"])
    assert "STUDIO_LORA_MAX_BYTES" in one_sentence(exc)


def hostile_states(lora: Path) -> list[tuple[dict[str, torch.Tensor], str]]:
    from safetensors.torch import load_file

    state = load_file(str(lora))
    a_key = next(k for k in state if k.endswith("to_q.lora_A.weight"))
    wrong_shape = {**state, a_key: torch.ones(RANK, state[a_key].shape[1] + 1)}
    foreign = {k.replace("down_blocks", "side_blocks"): v for k, v in state.items()}
    half = {k: v for k, v in state.items() if k != a_key}
    return [
        (foreign, "names layers this model does not have"),
        ({**state, "vae.encoder.conv_in.lora_A.weight": torch.ones(RANK, 3)}, "names layers this model does not have"),
        ({"unet.conv_in.weight": torch.ones(8, 4, 3, 3)}, "not LoRA weights"),
        (wrong_shape, "does not fit this model"),
        (half, "only half of the weights"),
        ({"lora_unet_nowhere_to_q.lora_down.weight": torch.ones(RANK, 8), "lora_unet_nowhere_to_q.lora_up.weight": torch.ones(8, RANK)}, "names layers"),
    ]


def test_a_lora_that_does_not_fit_the_model_is_refused_and_nothing_applied(models: dict[str, Path], home: Path, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from core.inference.lora import store_lora

    base = pixels(models["base"])
    for number, (state, reason) in enumerate(hostile_states(models["lora"])):
        path = tmp_path / f"{number}.safetensors"
        save_file(state, str(path))
        lora = store_lora(path)  # a well-formed safetensors file: refused only against the model
        with pytest.raises(StudioError) as exc:
            pixels(models["base"], lora=lora)
        assert reason in one_sentence(exc), state.keys()
        assert not has_adapters(models["base"])
    assert np.array_equal(pixels(models["base"]), base)


def test_the_lora_of_a_run_is_found_inside_or_beside_its_model(models: dict[str, Path], tmp_path: Path, home: Path) -> None:
    from core.inference.lora import find_lora_weights, lora_path

    assert find_lora_weights(models["base"]) == models["lora"]
    beside = tmp_path / "run" / "model"
    beside.mkdir(parents=True)
    (tmp_path / "run" / "lora").mkdir()
    shutil.copy(models["lora"], tmp_path / "run" / "lora")
    assert lora_path(str(beside)) == tmp_path / "run" / "lora" / models["lora"].name
    with pytest.raises(StudioError) as exc:
        lora_path(str(models["plain"]))
    assert "has no LoRA weights" in one_sentence(exc)
    with pytest.raises(StudioError) as exc:
        lora_path("0" * 64)
    assert "no uploaded LoRA" in one_sentence(exc)


def test_sizes_offered_come_from_buckets_json_and_non_square_generates(models: dict[str, Path], tmp_path: Path, home: Path) -> None:
    from core.inference.models import generate, model_sizes

    bucketed = tmp_path / "bucketed"
    shutil.copytree(models["base"], bucketed)
    assert model_sizes(str(bucketed)) == [(32, 32)]  # no buckets.json: the square training size only
    # most common first; 100×8 is outside what this model generates (16 to 64), so it is not offered
    (bucketed / "buckets.json").write_text(json.dumps({"sizes": [[48, 32], [32, 48], [32, 32], [100, 8]], "resolution": 32}))
    assert model_sizes(str(bucketed)) == [(32, 32), (48, 32), (32, 48)]
    (bucketed / "buckets.json").write_text("not json")
    assert model_sizes(str(bucketed)) == [(32, 32)]
    images = generate(str(models["base"]), REQUEST.model_copy(update={"width": 48, "height": 24, "batch": 2})).images
    assert [im.size for im in images] == [(48, 24)] * 2
    with pytest.raises(StudioError) as exc:
        generate(str(models["base"]), REQUEST.model_copy(update={"width": 72}))
    assert "width must be a multiple of 8 between 16 and 64" in one_sentence(exc)


def test_a_lora_is_not_applied_again_to_the_model_it_is_merged_into(models: dict[str, Path]) -> None:
    from core.inference.models import generate

    merged = models["merged"]  # a LoRA run's final model: merged, its adapter also in its own lora/
    with pytest.raises(StudioError, match="already has that LoRA merged in"):
        generate(str(merged), REQUEST.model_copy(update={"lora": str(merged)}))


def test_the_cli_generates_with_a_lora_file_at_a_size(models: dict[str, Path], home: Path, tmp_path: Path) -> None:
    from PIL import Image

    from app.cli import main
    from core.inference.lora import store_lora

    out = tmp_path / "lora.png"
    args = ["generate", "--model", str(models["base"]), "--prompt", REQUEST.prompt, "--steps", str(REQUEST.steps), "--seed", str(REQUEST.seed),
            "--guidance", str(REQUEST.guidance), "--lora", str(models["lora"]), "--lora-strength", "0.5", "--width", "40", "--height", "24", "--out", str(out)]
    assert main(args) == 0
    made = np.asarray(Image.open(out).convert("RGB"), dtype=np.int16)
    expected = pixels(models["base"], lora=store_lora(models["lora"]), lora_strength=0.5, width=40, height=24)
    assert made.shape == (24, 40, 3) and np.abs(made - expected).max() <= 1
