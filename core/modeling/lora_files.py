"""A trained LoRA adapter alone, in the two files other tools load.

- `pytorch_lora_weights.safetensors`: diffusers' format, written by diffusers' own
  `save_lora_weights`, so `StableDiffusionPipeline.load_lora_weights(folder)` loads it.
- `kohya_lora.safetensors`: kohya-ss's format (ComfyUI, AUTOMATIC1111, kohya's scripts): per adapted
  layer `lora_unet_<module path with underscores>.lora_down.weight` / `.lora_up.weight` / `.alpha`
  (diffusers' module names, as kohya uses for an SD 1.x UNet), with kohya's `ss_*` and `modelspec.*`
  metadata, all strings.

A final model keeps both in `<model folder>/lora/` (see core.modeling.io): diffusers loads only the
parts `model_index.json` names, and the folder is logged to MLflow with the model.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from diffusers import UNet2DConditionModel

from core.modeling.presets import Components

FOLDER = "lora"
DIFFUSERS_FILE = "pytorch_lora_weights.safetensors"
KOHYA_FILE = "kohya_lora.safetensors"
FORMATS = {"diffusers": DIFFUSERS_FILE, "kohya": KOHYA_FILE}
WEIGHT_PARTS = ("text_encoder", "vae", "unet")

# kohya's metadata key ← the run's flattened config key (core.training.config).
TRAINING_KEYS = {
    "ss_learning_rate": "unet.lr",
    "ss_unet_lr": "unet.lr",
    "ss_max_train_steps": "unet.steps",
    "ss_steps": "unet.steps",
    "ss_batch_size_per_device": "unet.batch_size",
    "ss_gradient_accumulation_steps": "unet.grad_accum",
    "ss_lr_warmup_steps": "unet.warmup_steps",
    "ss_lr_scheduler": "unet.lr_schedule",
    "ss_max_grad_norm": "unet.max_grad_norm",
    "ss_noise_offset": "unet.noise_offset",
    "ss_min_snr_gamma": "unet.min_snr_gamma",
    "ss_caption_dropout_rate": "unet.caption_dropout",
    "ss_mixed_precision": "mixed_precision",
    "ss_seed": "seed",
    "ss_dataset": "dataset",
}


def adapter(unet: UNet2DConditionModel) -> tuple[dict[str, torch.Tensor], int, float]:
    """The adapter's peft state dict (`<module>.lora_A.weight`, `.lora_B.weight`), rank and alpha."""
    from peft.utils import get_peft_model_state_dict

    config = unet.peft_config["default"]
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in get_peft_model_state_dict(unet).items()}
    return state, int(config.r), float(config.lora_alpha)


def kohya_state(peft_state: Mapping[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """peft's `<module>.lora_A.weight` → kohya's `lora_unet_<module_with_underscores>.lora_down.weight`."""
    out: dict[str, torch.Tensor] = {}
    for key, value in peft_state.items():
        module, kind, _ = key.rsplit(".", 2)
        name = "lora_unet_" + module.replace(".", "_")
        out[f"{name}.{'lora_down' if kind == 'lora_A' else 'lora_up'}.weight"] = value
        out[f"{name}.alpha"] = torch.tensor(alpha)
    return out


def folder_hash(folder: Path) -> str:
    """sha256 of a model folder's weights (every part's safetensors, in name order): the base
    model's identity in kohya's `ss_new_sd_model_hash`, as a file's sha256 is for a checkpoint."""
    digest = hashlib.sha256()
    for path in sorted(p for part in WEIGHT_PARTS for p in (folder / part).glob("*.safetensors")):
        digest.update(path.relative_to(folder).as_posix().encode())
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def tensors_hash(state: Mapping[str, torch.Tensor]) -> str:
    """kohya's `sshs_model_hash` of a LoRA file: sha256 of its tensor bytes (the file after its header)."""
    from safetensors.torch import save

    data = save(dict(state))
    header = int.from_bytes(data[:8], "little")
    return hashlib.sha256(data[8 + header :]).hexdigest()


def kohya_metadata(
    state: Mapping[str, torch.Tensor], rank: int, alpha: float, resolution: int, prediction_type: str, training: Mapping[str, Any]
) -> dict[str, str]:
    """kohya's `ss_*` keys (those that apply to a UNet-only LoRA) and the SAI model spec's `modelspec.*`."""
    training = {k: v for k, v in training.items() if v not in (None, "None")}  # flattened configs say "None"
    base = training.get("base_model")
    base_hash = folder_hash(Path(base)) if base and Path(base).is_dir() else ""
    now = datetime.now(UTC)
    meta = {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(rank),
        "ss_network_alpha": f"{alpha:g}",
        "ss_network_train_unet_only": "True",
        "ss_base_model_version": "sd_v1",
        "ss_v2": "False",
        "ss_v_parameterization": str(prediction_type == "v_prediction"),
        "ss_resolution": f"({resolution}, {resolution})",
        "ss_sd_model_name": Path(base).name if base else "",
        "ss_sd_model_hash": base_hash[:8],
        "ss_new_sd_model_hash": base_hash,
        "sshs_model_hash": tensors_hash(state),
        "ss_training_finished_at": str(now.timestamp()),
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": "stable-diffusion-v1/lora",
        "modelspec.implementation": "diffusers",
        "modelspec.title": Path(base).name if base else "LoRA",
        "modelspec.resolution": f"{resolution}x{resolution}",
        "modelspec.prediction_type": "v" if prediction_type == "v_prediction" else "epsilon",
        "modelspec.date": now.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    meta |= {key: str(training[name]) for key, name in TRAINING_KEYS.items() if name in training}
    return meta


def save_lora_files(components: Components, folder: Path, training: Mapping[str, Any] | None = None) -> None:
    """Write the UNet's adapter as `folder/pytorch_lora_weights.safetensors` and `folder/kohya_lora.safetensors`.

    `training` is the run's flattened config (`unet.lr`, `base_model`, ...), recorded in kohya's metadata.
    """
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from safetensors.torch import save_file

    unet = components.unet
    state, rank, alpha = adapter(unet)
    folder.mkdir(parents=True, exist_ok=True)
    StableDiffusionPipeline.save_lora_weights(
        folder,
        unet_lora_layers=convert_state_dict_to_diffusers(state),
        unet_lora_adapter_metadata=unet.peft_config["default"].to_dict(),
        weight_name=DIFFUSERS_FILE,
    )
    kohya = kohya_state(state, alpha)
    prediction = components.scheduler.config.prediction_type
    meta = kohya_metadata(kohya, rank, alpha, components.resolution, prediction, training or {})
    save_file(kohya, str(folder / KOHYA_FILE), metadata=meta)
