"""Save and load models in the diffusers layout, with safetensors weights only.

`diffusers.StableDiffusionPipeline.from_pretrained(folder)` loads what `save_components` writes.
Loading refuses pickle-based weights (`.bin`, `.pt`, `.ckpt`), which can run code when opened.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from core.errors import StudioError
from core.files import staged_folder
from core.modeling.presets import Components

UNSAFE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
PARTS = ("text_encoder", "vae", "unet", "tokenizer", "scheduler")


def pipeline_for(components: Components):  # type: ignore[no-untyped-def]
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(
        vae=components.vae,
        text_encoder=components.text_encoder,
        tokenizer=components.tokenizer,
        unet=components.unet,
        scheduler=components.scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def save_components(components: Components, folder: Path, merge_lora: bool = True, training: Mapping[str, Any] | None = None) -> Path:
    """Write the model atomically: into a temporary sibling folder, then renamed into place.

    A UNet with LoRA adapters is saved plain (see core.modeling.lora): merged for a final model,
    the unmerged base for a checkpoint (`merge_lora=False`). A final model also keeps the adapter
    alone in `lora/` (core.modeling.lora_files), with `training` (the run's flattened config) in
    its kohya metadata. The text encoder and tokenizer are written as published CLIP models are.
    """
    from dataclasses import replace

    from core.modeling.lora import has_lora, plain_unet
    from core.modeling.lora_files import FOLDER, save_lora_files
    from core.modeling.tokenizer import write_vocab_files

    plain = components
    if has_lora(components.unet):
        plain = replace(components, unet=plain_unet(components.unet, merged=merge_lora))
    with staged_folder(folder) as tmp:
        pipeline_for(plain).save_pretrained(tmp, safe_serialization=True)
        publish_text_encoder(tmp / "text_encoder")
        write_vocab_files(tmp / "tokenizer")
        if merge_lora and plain is not components:
            save_lora_files(components, tmp / FOLDER, training)
    return folder


def publish_text_encoder(folder: Path) -> None:
    """Give the saved CLIP text encoder's keys their published `text_model.` level back.

    transformers ≥ 5.6 saves CLIPTextModel without it; transformers 4.x (and the tools built on it)
    then matches no key and silently loads random weights. openai/clip-vit-large-patch14 and SD 1.x
    keep the level, and transformers 5 reads both layouts.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    for path in folder.glob("*.safetensors"):
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata()
        state = load_file(str(path))
        published = {k if k.startswith("text_model.") else f"text_model.{k}": v for k, v in state.items()}
        save_file(published, str(path), metadata=metadata)


def check_model_folder(folder: Path) -> None:
    """Raise a one-sentence StudioError unless `folder` is a safetensors diffusers-layout model."""
    if not folder.is_dir():
        raise StudioError(f"The model folder {folder} does not exist.")
    index = folder / "model_index.json"
    if not index.is_file():
        raise StudioError(f"{folder} is not a diffusers model folder (model_index.json is missing).")
    try:
        json.loads(index.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise StudioError(f"{index} is not valid JSON.") from None
    for part in ("text_encoder", "vae", "unet"):
        weights = list((folder / part).glob("*.safetensors"))
        unsafe = [p.name for p in (folder / part).glob("*") if p.suffix in UNSAFE_SUFFIXES]
        if unsafe and not weights:
            raise StudioError(
                f"{folder / part} holds only pickle weights ({unsafe[0]}); convert them to safetensors first."
            )
        if not weights:
            raise StudioError(f"{folder / part} has no safetensors weights.")
        for path in weights:
            check_safetensors(path)


def check_safetensors(path: Path) -> None:
    """Refuse a truncated or damaged .safetensors file before any weight of the model is loaded
    (its header must parse and its tensors must cover the file exactly)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            f.keys()
    except Exception as exc:  # SafetensorError, OSError: the reason goes into the sentence
        reason = str(exc).splitlines()[0].rstrip(". ") if str(exc) else type(exc).__name__
        raise StudioError(f"{path} is damaged or incomplete ({reason}), so the model was not loaded.") from None


def load_components(folder: Path, prediction_type: str | None = None, zero_terminal_snr: bool | None = None) -> Components:
    """Load a Stable-Diffusion-layout folder (ours or any other) from local files only; a training run
    may set the scheduler's prediction type and terminal SNR (None keeps the folder's)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    check_model_folder(folder)
    try:
        scheduler = DDPMScheduler.from_pretrained(folder, subfolder="scheduler")
        wanted = {"prediction_type": prediction_type, "rescale_betas_zero_snr": zero_terminal_snr}
        if changed := {k: v for k, v in wanted.items() if v is not None and scheduler.config.get(k) != v}:
            scheduler = DDPMScheduler.from_config(scheduler.config, **changed)
            if scheduler.config.rescale_betas_zero_snr and scheduler.config.prediction_type != "v_prediction":
                raise StudioError(f"The model in {folder} has a zero-terminal-SNR schedule, which needs v-prediction: set unet.prediction_type to v_prediction, or unet.zero_terminal_snr to false.")
        return Components(
            text_encoder=CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", use_safetensors=True),
            vae=AutoencoderKL.from_pretrained(folder, subfolder="vae", use_safetensors=True),
            unet=UNet2DConditionModel.from_pretrained(folder, subfolder="unet", use_safetensors=True),
            tokenizer=CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer"),
            scheduler=scheduler,
        )
    except (OSError, ValueError, KeyError) as exc:
        raise StudioError(f"The model in {folder} could not be loaded: {str(exc).splitlines()[0]}") from None
