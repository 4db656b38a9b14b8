"""One `.safetensors` in the original Stable Diffusion (LDM) layout, out of and into a model folder.

AUTOMATIC1111, ComfyUI and `StableDiffusionPipeline.from_single_file` read one file with the
weights under `model.diffusion_model.` (UNet), `first_stage_model.` (VAE) and
`cond_stage_model.transformer.text_model.` (CLIP text). The key mapping is the inverse of
diffusers' own converters (`convert_ldm_unet_checkpoint`, `convert_ldm_vae_checkpoint`,
`convert_ldm_clip_checkpoint` in diffusers/loaders/single_file_utils.py); a file holds no configs,
so loading it back needs the model folder it came from (or one with the same configs).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from core.errors import StudioError
from core.files import atomic_path
from core.modeling.io import check_model_folder, check_safetensors, save_components
from core.modeling.presets import Components

UNET, VAE, TEXT = "model.diffusion_model.", "first_stage_model.", "cond_stage_model.transformer."
# A buffer published SD 1.x checkpoints hold under the text encoder's prefix; an import skips it, and
# everything outside the three prefixes too (EMA copies, the noise schedule).
IGNORED = ("cond_stage_model.transformer.text_model.embeddings.position_ids",)
UNET_TOP = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3", "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}
VAE_TOP = {"conv_norm_out": "norm_out"}  # conv_in, conv_out, quant_conv, post_quant_conv keep their names
VAE_RESNET = {"conv_shortcut": "nin_shortcut"}
VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _renamed(rest: str, names: dict[str, str]) -> str:
    """`rest` with its leading module name (one or two dotted parts) renamed by `names`."""
    for old, new in names.items():
        if rest.startswith(old + "."):
            return new + rest[len(old) :]
    return rest


def unet_key(key: str, config: dict[str, Any]) -> str:
    """A diffusers UNet key → its LDM key, as `convert_ldm_unet_checkpoint` reads it back."""
    layers = config["layers_per_block"]
    if config.get("addition_embed_type"):
        raise StudioError(
            "This UNet adds the pooled caption to its timestep embedding, which a Stable Diffusion checkpoint has no place for; "
            "use the model folder or its ONNX export."
        )
    if not isinstance(layers, int):
        raise StudioError("Only a UNet with the same number of layers in every block can be written as a Stable Diffusion checkpoint.")
    p = key.split(".")
    head = ".".join(p[:2]) if p[0] == "time_embedding" else p[0]
    if head in UNET_TOP:
        return UNET_TOP[head] + key[len(head) :]
    if p[0] == "mid_block":  # resnet, attention, resnet
        index = 1 if p[1] == "attentions" else 2 * int(p[2])
        rest = ".".join(p[3:])
        return f"middle_block.{index}.{_renamed(rest, UNET_RESNET) if p[1] == 'resnets' else rest}"
    if p[0] not in ("down_blocks", "up_blocks"):
        raise StudioError(f"The UNet weight {key} has no place in a Stable Diffusion checkpoint.")
    block, kind, per_block = int(p[1]), p[2], layers + 1  # LDM numbers each resnet(+attention) and each resampler
    if kind == "downsamplers":
        return f"input_blocks.{(block + 1) * per_block}.0.op.{p[-1]}"
    if kind == "upsamplers":
        after = 2 if config["up_block_types"][block].startswith("CrossAttn") else 1
        return f"output_blocks.{block * per_block + layers}.{after}.conv.{p[-1]}"
    index = 1 + block * per_block + int(p[3]) if p[0] == "down_blocks" else block * per_block + int(p[3])
    rest = ".".join(p[4:])
    side = "input_blocks" if p[0] == "down_blocks" else "output_blocks"
    return f"{side}.{index}.{'0.' + _renamed(rest, UNET_RESNET) if kind == 'resnets' else '1.' + rest}"


def vae_key(key: str, config: dict[str, Any]) -> str:
    """A diffusers VAE key → its LDM key, as `convert_ldm_vae_checkpoint` reads it back."""
    p = key.split(".")
    if p[0] in ("quant_conv", "post_quant_conv"):
        return key
    side, group = p[0], p[1]
    if group in ("conv_in", "conv_out", "conv_norm_out"):
        return f"{side}.{VAE_TOP.get(group, group)}.{p[-1]}"
    if group == "mid_block":
        rest = ".".join(p[4:])
        if p[2] == "resnets":
            return f"{side}.mid.block_{int(p[3]) + 1}.{_renamed(rest, VAE_RESNET)}"
        return f"{side}.mid.attn_1.{_renamed(rest, VAE_ATTENTION)}"
    if group not in ("down_blocks", "up_blocks"):
        raise StudioError(f"The VAE weight {key} has no place in a Stable Diffusion checkpoint.")
    # LDM numbers the decoder's blocks from the lowest resolution up, diffusers from the top down.
    block = int(p[2]) if group == "down_blocks" else len(config["up_block_types"]) - 1 - int(p[2])
    stage = "down" if group == "down_blocks" else "up"
    if p[3] in ("downsamplers", "upsamplers"):
        return f"{side}.{stage}.{block}.{stage}sample.conv.{p[-1]}"
    return f"{side}.{stage}.{block}.block.{p[4]}.{_renamed('.'.join(p[5:]), VAE_RESNET)}"


def text_key(key: str) -> str:
    """transformers ≥ 5.6 saves CLIPTextModel without its `text_model.` level; LDM keeps it."""
    return key if key.startswith("text_model.") else "text_model." + key


def _is_vae_attention_matrix(ldm_key: str) -> bool:
    """LDM's VAE attention projections are 1×1 convolutions, diffusers' are linear layers."""
    return ".mid.attn_1." in ldm_key and ldm_key.endswith(("q.weight", "k.weight", "v.weight", "proj_out.weight"))


def ldm_names(unet_keys: Iterable[str], vae_keys: Iterable[str], text_keys: Iterable[str], unet_config: dict, vae_config: dict) -> dict[str, str]:
    """{LDM key: "<part>/<diffusers key>"} for every weight of the three models."""
    names = {UNET + unet_key(k, unet_config): f"unet/{k}" for k in unet_keys}
    names |= {VAE + vae_key(k, vae_config): f"vae/{k}" for k in vae_keys}
    names |= {TEXT + text_key(k): f"text_encoder/{k}" for k in text_keys}
    return names


def _read(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for path in sorted(folder.glob("*.safetensors")):
        state |= load_file(str(path))
    return state


def export_single_file(folder: Path, out: Path) -> Path:
    """Write the model folder's three models as one LDM-layout `.safetensors` (scheduler and
    tokenizer stay in the folder, which `from_single_file(out, config=folder)` reads)."""
    from safetensors.torch import save_file

    check_model_folder(folder)
    parts = {part: _read(folder / part) for part in ("unet", "vae", "text_encoder")}
    configs = {part: json.loads((folder / part / "config.json").read_text()) for part in ("unet", "vae")}
    names = ldm_names(parts["unet"], parts["vae"], parts["text_encoder"], configs["unet"], configs["vae"])
    state = {}
    for ldm, source in names.items():
        part, key = source.split("/", 1)
        tensor = parts[part][key]
        state[ldm] = tensor[:, :, None, None] if _is_vae_attention_matrix(ldm) else tensor
    with atomic_path(out) as tmp:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp), metadata={"format": "pt"})
    return out


def _components_from_configs(folder: Path) -> Components:
    """Freshly initialised models with the folder's configs, its tokenizer and its scheduler."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    try:
        return Components(
            text_encoder=CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder")),
            vae=AutoencoderKL.from_config(AutoencoderKL.load_config(folder, subfolder="vae")),
            unet=UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder, subfolder="unet")),
            tokenizer=CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer"),
            scheduler=DDPMScheduler.from_pretrained(folder, subfolder="scheduler"),
        )
    except (OSError, ValueError, KeyError) as exc:
        raise StudioError(f"{folder} has no usable model configs: {str(exc).splitlines()[0]}") from None


def import_single_file(path: Path, config_folder: Path, dest: Path) -> Path:
    """An LDM-layout `.safetensors` → a diffusers model folder at `dest` (a fine-tuning `base_model`),
    with the configs, tokenizer and scheduler of `config_folder`."""
    from safetensors.torch import load_file

    if path.suffix != ".safetensors":
        raise StudioError(f"{path.name} is not a .safetensors file; only those are imported, since pickle checkpoints can run code when opened.")
    if not path.is_file():
        raise StudioError(f"The file {path} does not exist.")
    check_safetensors(path)
    c = _components_from_configs(config_folder)
    models = {"unet": c.unet, "vae": c.vae, "text_encoder": c.text_encoder}
    targets = {part: m.state_dict() for part, m in models.items()}
    names = ldm_names(targets["unet"], targets["vae"], targets["text_encoder"], dict(c.unet.config), dict(c.vae.config))
    state = {k: v for k, v in load_file(str(path)).items() if k.startswith((UNET, VAE, TEXT)) and k not in IGNORED}
    missing, unexpected = sorted(set(names) - set(state)), sorted(set(state) - set(names))
    if missing or unexpected:
        example = (missing or unexpected)[0]
        raise StudioError(
            f"{path.name} does not match the model in {config_folder}: {len(missing)} missing and "
            f"{len(unexpected)} unexpected weights (first: {example})."
        )
    loaded: dict[str, dict[str, torch.Tensor]] = {part: {} for part in models}
    for ldm, source in names.items():
        part, key = source.split("/", 1)
        want = targets[part][key].shape
        tensor = state[ldm].reshape(want) if _is_vae_attention_matrix(ldm) and state[ldm].numel() == want.numel() else state[ldm]
        if tensor.shape != want:
            raise StudioError(f"{path.name} does not match the model in {config_folder}: {ldm} is {tuple(tensor.shape)}, not {tuple(want)}.")
        loaded[part][key] = tensor
    for part, model in models.items():
        model.load_state_dict(loaded[part])
    return save_components(c, dest)
