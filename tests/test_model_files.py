"""Files other tools load: the tokenizer's published CLIP files, a LoRA adapter in diffusers' and
kohya's formats, and one Stable Diffusion (LDM-layout) checkpoint, out and back in."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import StudioError
from tests.conftest import run_training, use_home

PROMPT = "a handwritten digit seven"
RANK = 4


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """A tiny base model, and that model with a LoRA adapter of random non-zero weights saved as a
    run's final model is (merged, with `lora/` beside); built in a studio home of their own."""
    from core.modeling.io import load_components, save_components
    from core.modeling.lora import add_lora
    from core.modeling.presets import build_components
    from core.settings import reset_settings

    root = tmp_path_factory.mktemp("model-files")
    with pytest.MonkeyPatch.context() as mp:
        use_home(root / "studio", mp)
        base = save_components(build_components("tiny"), root / "base")
        components = load_components(base)
        add_lora(components.unet, RANK)
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for name, param in components.unet.named_parameters():
                if "lora_" in name:
                    param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
        training = {"base_model": str(base), "unet.lr": "0.0001", "unet.steps": "300", "seed": "3", "dataset": "None"}
        merged = save_components(components, root / "merged", training=training)
    reset_settings()
    yield {"base": base, "merged": merged}


def images(pipe) -> np.ndarray:  # type: ignore[no-untyped-def]
    pipe.set_progress_bar_config(disable=True)
    return pipe(PROMPT, num_inference_steps=3, generator=torch.Generator().manual_seed(5), output_type="np").images


def pipeline(folder: Path):  # type: ignore[no-untyped-def]
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(folder)


def test_tokenizer_folder_has_the_published_clip_files(models: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    from transformers import CLIPTokenizer

    folder = models["merged"] / "tokenizer"
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt"):
        assert (folder / name).is_file(), name
    merges = (folder / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert merges[0] == "#version: 0.2" and len(merges) == 1 + 48894  # what CLIP's slow tokenizer reads
    assert json.loads((folder / "special_tokens_map.json").read_text())["bos_token"] == "<|startoftext|>"
    only_bpe = tmp_path / "bpe"  # what a slow tokenizer has to go on: vocab.json and merges.txt
    only_bpe.mkdir()
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(folder / name, only_bpe / name)
    saved = CLIPTokenizer.from_pretrained(folder)
    rebuilt = [CLIPTokenizer(vocab=str(only_bpe / "vocab.json"), merges=str(only_bpe / "merges.txt")), CLIPTokenizer.from_pretrained(only_bpe)]
    for caption in (PROMPT, "A Cat, on the MAT!! 123", "héllo wörld — naïve café", "don't stop"):
        for tokenizer in rebuilt:
            assert tokenizer(caption).input_ids == saved(caption).input_ids, caption


def test_lora_files_load_in_diffusers_like_the_merged_model(models: dict[str, Path]) -> None:
    from core.modeling.lora_files import DIFFUSERS_FILE, KOHYA_FILE

    merged = images(pipeline(models["merged"]))
    assert np.abs(images(pipeline(models["base"])) - merged).max() > 0.05  # the adapter changes the images
    for weight_name in (None, KOHYA_FILE):  # None: diffusers finds pytorch_lora_weights.safetensors itself
        pipe = pipeline(models["base"])
        pipe.load_lora_weights(models["merged"] / "lora", weight_name=weight_name)
        assert np.abs(images(pipe) - merged).max() < 1e-4, weight_name or DIFFUSERS_FILE


def test_kohya_file_keys_alphas_and_metadata(models: dict[str, Path]) -> None:
    from safetensors import safe_open

    from core.modeling.lora_files import KOHYA_FILE, folder_hash, tensors_hash

    with safe_open(models["merged"] / "lora" / KOHYA_FILE, "pt") as f:
        keys, meta = list(f.keys()), f.metadata()
        state = {k: f.get_tensor(k) for k in keys}
    modules = {k.split(".")[0] for k in keys}
    assert "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q" in modules
    assert "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_out_0" in modules
    assert all(re.fullmatch(r"lora_unet_[a-z0-9_]+", m) for m in modules)
    assert len(keys) == 3 * len(modules)
    for module in modules:
        down, up = state[f"{module}.lora_down.weight"], state[f"{module}.lora_up.weight"]
        assert down.shape[0] == RANK and up.shape[1] == RANK and up.abs().max() > 0
        assert state[f"{module}.alpha"].item() == RANK
    assert all(isinstance(v, str) for v in meta.values())
    assert meta["ss_network_module"] == "networks.lora"
    assert (meta["ss_network_dim"], meta["ss_network_alpha"]) == (str(RANK), str(RANK))
    assert meta["ss_base_model_version"] == "sd_v1" and meta["ss_resolution"] == "(32, 32)"
    assert meta["ss_new_sd_model_hash"] == folder_hash(models["base"]) and meta["ss_sd_model_hash"] == meta["ss_new_sd_model_hash"][:8]
    assert meta["sshs_model_hash"] == tensors_hash(state)
    assert (meta["ss_learning_rate"], meta["ss_max_train_steps"], meta["ss_seed"]) == ("0.0001", "300", "3")
    assert "ss_dataset" not in meta  # a config's None is left out, not written as "None"
    assert meta["modelspec.architecture"] == "stable-diffusion-v1/lora" and meta["modelspec.resolution"] == "32x32"


@pytest.mark.slow
def test_lora_run_saves_and_logs_the_adapter_files(demo: str, models: dict[str, Path], home: Path, tmp_path: Path) -> None:
    """A real LoRA fine-tune: the final model's `lora/` files, its settings in kohya's metadata, and MLflow."""
    from safetensors import safe_open

    from core.modeling.lora_files import DIFFUSERS_FILE, KOHYA_FILE
    from core.tracking import create_run, get_tracking

    run_id = create_run("lora-files", {"preset": "finetune"})
    out = tmp_path / "run"
    overrides = [
        f"dataset={demo}", "stage=unet", "unet.steps=2", "unet.batch_size=4", "log_every=1", "validate_every=2", "sample_every=100",
        "sample_steps=2", "sample_images_per_prompt=1", "preset=finetune", f"base_model={models['base']}", "unet.lora_rank=4",
        f"output_dir={out}", f"mlflow_run_id={run_id}", "checkpoint_every=1",
    ]
    run_training(overrides, {"STUDIO_HOME": str(home)})
    with safe_open(out / "model" / "lora" / KOHYA_FILE, "pt") as f:
        meta = f.metadata()
    assert (meta["ss_max_train_steps"], meta["ss_batch_size_per_device"], meta["ss_dataset"]) == ("2", "4", demo)
    assert meta["ss_sd_model_name"] == "base"
    logged = {Path(a.path).name for a in get_tracking().client.list_artifacts(run_id, "model/lora")}
    assert logged == {DIFFUSERS_FILE, KOHYA_FILE}
    pipe = pipeline(out / "model")  # the folder still loads as a plain model
    assert pipe.unet.config.sample_size == 8

    # The Runs comparison's sweep: strength × checkpoint on the base, one seed.
    from core.inference.models import generate
    from core.inference.torch_backend import GenerateRequest
    from core.training.lora_sweep import sweep, sweep_columns

    columns = sweep_columns(run_id, out / "checkpoints", has_final=True)
    assert [c.label for c in columns] == ["step-2unet-0000001", "step-2unet-0000002", "final"]
    request = GenerateRequest(prompt="a handwritten digit seven", steps=2, seed=5)
    grid = {k: [np.asarray(im, dtype=np.int16) for im in v] for k, v in sweep(str(models["base"]), columns, [0.0, 1.0], request).items()}
    base = np.asarray(generate(str(models["base"]), request).images[0], dtype=np.int16)
    assert all(np.array_equal(im, base) for im in grid[0.0])  # strength 0 is the base at every checkpoint
    merged = np.asarray(generate(str(out / "model"), request).images[0], dtype=np.int16)
    assert np.abs(grid[1.0][-1] - merged).max() <= 2  # the final LoRA at 1 is the run's merged model
    assert np.array_equal(grid[1.0][1], grid[1.0][2])  # the last checkpoint holds the final adapter


def test_single_file_loads_in_diffusers_and_imports_back(models: dict[str, Path], home: Path, tmp_path: Path) -> None:
    from diffusers import StableDiffusionPipeline
    from safetensors import safe_open

    from core.modeling.exchange import import_model, single_file
    from core.modeling.io import load_components

    folder = models["merged"]
    path = single_file(str(folder), tmp_path / "model.safetensors")
    with safe_open(path, "pt") as f:
        prefixes = {k.split(".")[0] for k in f.keys()}
        assert f.get_tensor("first_stage_model.encoder.mid.attn_1.q.weight").dim() == 4  # LDM's 1×1 convolutions
        assert "model.diffusion_model.input_blocks.3.1.transformer_blocks.0.attn1.to_q.weight" in f.keys()  # level 2: attention
        assert "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight" in f.keys()
    assert prefixes == {"model", "first_stage_model", "cond_stage_model"}
    expected = images(pipeline(folder))
    loaded = StableDiffusionPipeline.from_single_file(str(path), config=str(folder), local_files_only=True)
    assert np.abs(images(loaded) - expected).max() < 1e-5

    imported = import_model(path, str(folder), "from-single-file")
    assert imported == home.resolve() / "models" / "from-single-file"
    load_components(imported)  # what fine-tuning's base_model goes through
    assert np.abs(images(pipeline(imported)) - expected).max() < 1e-5
    assert single_file(str(folder)).read_bytes() == path.read_bytes()  # the cached copy for the page

    # The Playground and the HTTP API list it, by a name that is not a server path, and generate with it.
    from core.inference.models import generate, list_models
    from core.inference.torch_backend import GenerateRequest

    entry = next(m for m in list_models() if m.kind == "imported")
    assert (entry.id, entry.backends) == ("model:from-single-file", ["torch"])
    generated = generate(entry.id, GenerateRequest(prompt="a red circle", steps=2, seed=0)).images
    assert len(generated) == 1 and generated[0].size == (32, 32)
    with pytest.raises(StudioError, match="no imported model '../from-single-file'"):
        generate("model:../from-single-file", GenerateRequest(prompt="x", steps=1))


@pytest.mark.parametrize("preset", ["small", pytest.param("base", marks=pytest.mark.slow)])
def test_single_file_round_trips_the_larger_presets(preset: str, home: Path, tmp_path: Path) -> None:
    from diffusers import StableDiffusionPipeline

    from core.modeling.io import save_components
    from core.modeling.presets import build_components
    from core.modeling.single_file import export_single_file

    folder = save_components(build_components(preset), tmp_path / preset)
    path = export_single_file(folder, tmp_path / f"{preset}.safetensors")
    a = pipeline(folder)
    b = StableDiffusionPipeline.from_single_file(str(path), config=str(folder), local_files_only=True)
    for part in ("unet", "vae", "text_encoder"):
        sa, sb = getattr(a, part).state_dict(), getattr(b, part).state_dict()
        assert sa.keys() == sb.keys(), part
        assert all(torch.equal(sa[k], sb[k]) for k in sa), part


def test_a_unet_with_the_pooled_caption_is_refused_as_a_single_file_in_one_sentence(home: Path, tmp_path: Path) -> None:
    from diffusers import UNet2DConditionModel

    from core.modeling.io import save_components
    from core.modeling.presets import build_components
    from core.modeling.single_file import export_single_file

    components = build_components("tiny")  # its UNet with the caption pooled into the timestep embedding, as Imagen does
    config = {k: v for k, v in components.unet.config.items() if not k.startswith("_")} | {"addition_embed_type": "text", "addition_embed_type_num_heads": 2}
    components.unet = UNet2DConditionModel.from_config(config)
    folder = save_components(components, tmp_path / "pooled")
    with pytest.raises(StudioError, match=r"^This UNet adds the pooled caption to its timestep embedding.*ONNX export\.$"):
        export_single_file(folder, tmp_path / "pooled.safetensors")
    assert not (tmp_path / "pooled.safetensors").exists()


def test_import_refuses_pickles_and_files_of_another_model(models: dict[str, Path], home: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    from core.modeling.exchange import import_model
    from core.modeling.single_file import export_single_file

    folder = models["merged"]
    pickle = tmp_path / "model.ckpt"
    pickle.write_bytes(b"not opened")
    with pytest.raises(StudioError, match=r"model.ckpt is not a .safetensors file"):
        import_model(pickle, str(folder), "pickled")
    state = load_file(str(export_single_file(folder, tmp_path / "good.safetensors")))
    missing = dict(state)
    missing.pop("model.diffusion_model.out.2.weight")
    save_file(missing, str(tmp_path / "missing.safetensors"))
    with pytest.raises(StudioError, match=r"does not match the model in .*: 1 missing and 0 unexpected weights \(first: model.diffusion_model.out.2.weight\)"):
        import_model(tmp_path / "missing.safetensors", str(folder), "missing")
    key = "model.diffusion_model.out.2.bias"
    wrong = state | {key: torch.zeros(7)}
    save_file(wrong, str(tmp_path / "wrong.safetensors"))
    with pytest.raises(StudioError, match=r"model.diffusion_model.out.2.bias is \(7,\), not \(4,\)"):
        import_model(tmp_path / "wrong.safetensors", str(folder), "wrong")
    assert not (home / "models").exists() or not any((home / "models").iterdir())
    import_model(tmp_path / "good.safetensors", str(folder), "good")
    with pytest.raises(StudioError, match="already exists"):
        import_model(tmp_path / "good.safetensors", str(folder), "good")


def test_cli_writes_single_file_and_lora_files_and_imports(models: dict[str, Path], home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from app.cli import main

    out = tmp_path / "model.safetensors"
    assert main(["model", "single-file", str(models["merged"]), str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["size_bytes"] == out.stat().st_size
    assert main(["model", "lora", str(models["merged"]), str(tmp_path), "--format", "diffusers"]) == 0
    assert (tmp_path / "pytorch_lora_weights.safetensors").is_file() and "Wrote the diffusers LoRA file" in capsys.readouterr().out
    assert main(["model", "lora", str(models["merged"]), str(tmp_path / "style.safetensors"), "--format", "kohya", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["format"] == "kohya" and (tmp_path / "style.safetensors").is_file()
    assert main(["model", "lora", str(models["base"]), str(tmp_path / "none.safetensors")]) == 2
    assert "has no LoRA adapter" in capsys.readouterr().err
    assert main(["model", "import-single-file", str(out), "--config", str(models["merged"]), "--name", "mine", "--json"]) == 0
    assert Path(json.loads(capsys.readouterr().out)["path"]) == home.resolve() / "models" / "mine"
    assert main(["model", "single-file", str(models["merged"]), str(tmp_path / "model.ckpt")]) == 2
    assert "does not end in .safetensors" in capsys.readouterr().err


def export_page() -> None:
    from pages.export import render

    render()


def test_export_page_offers_the_files_for_other_tools(models: dict[str, Path], home: Path) -> None:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_function(export_page, default_timeout=120).run()
    at.selectbox[0].select(at.selectbox[0].options[-1]).run()
    at.text_input[0].input(str(models["merged"])).run()
    prepare = next(b for b in at.button if "Prepare" in b.label)
    prepare.click().run()
    assert not at.exception and not at.error
    buttons = [b.proto for b in at.get("download_button")]
    assert [b.label for b in buttons] == ["⬇️ Single-file checkpoint (.safetensors)", "⬇️ LoRA for diffusers", "⬇️ LoRA for kohya / ComfyUI"]
    assert all(b.ignore_rerun and b.deferred_file_id for b in buttons)


def test_text_encoder_is_saved_in_the_published_clip_layout(models: dict[str, Path], home: Path) -> None:
    """transformers 4.x finds its weights (`text_model.` keys), and transformers 5 reads them back unchanged."""
    from safetensors import safe_open
    from transformers import CLIPTextModel

    from core.modeling.presets import build_components

    with safe_open(models["base"] / "text_encoder" / "model.safetensors", "pt") as f:
        assert all(k.startswith("text_model.") for k in f.keys())
    loaded = CLIPTextModel.from_pretrained(models["base"] / "text_encoder").state_dict()
    built = build_components("tiny").text_encoder.state_dict()  # what `models` saved as its base
    assert loaded.keys() == built.keys() and all(torch.equal(loaded[k], built[k]) for k in loaded)
