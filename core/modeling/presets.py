"""Model presets: a CLIP text encoder, an AutoencoderKL and a conditional UNet, built from config.

`tiny` is what the tests and the demo use (32×32 RGB, latents 4×8×8). Its UNet is narrow (32/64
channels) with attention only at 4×4: on a CPU thread it trains on 4× the images per second of
the 64/128 UNet with attention at both levels, and on the digits images, not width, are what
teach the prompt in the demo's budget; on Fashion-MNIST the wider `tiny-wide` (64/128, attention at
4×4, latents 8×8×8) scores better (bench/results/quality_ablations.json). `small` and `base` are for real GPUs. Fine-tuning starts from a local Stable-Diffusion-layout folder instead (`finetune`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from pydantic import BaseModel
from transformers import CLIPTextConfig, CLIPTextModel

from core.modeling.tokenizer import MAX_LENGTH, load_tokenizer

PresetName = Literal["tiny", "tiny-wide", "small", "base"]


class Preset(BaseModel):
    resolution: int
    vae_channels: tuple[int, ...]
    latent_channels: int = 4
    unet_channels: tuple[int, ...]
    unet_attention: tuple[bool, ...]
    unet_layers: int = 1
    text_width: int
    text_layers: int
    text_heads: int
    attention_head_dim: int = 8
    norm_groups: int = 32

    @property
    def latent_size(self) -> int:
        return self.resolution // 2 ** (len(self.vae_channels) - 1)


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        resolution=32,
        vae_channels=(32, 64, 64),
        unet_channels=(32, 64),
        unet_attention=(False, True),
        text_width=64,
        text_layers=2,
        text_heads=2,
    ),
    # Fashion-MNIST's: twice the UNet's channels (the narrow UNet, even on 3x the images, scores
    # worse there), attention only at 4x4 (1.6x the images per second), and 8 latent channels (the
    # VAE's reconstructions 1.06x the real floor against 1.33x with 4, in the same time).
    "tiny-wide": Preset(
        resolution=32,
        vae_channels=(32, 64, 64),
        latent_channels=8,
        unet_channels=(64, 128),
        unet_attention=(False, True),
        text_width=64,
        text_layers=2,
        text_heads=2,
    ),
    "small": Preset(
        resolution=64,
        vae_channels=(64, 128, 128),
        unet_channels=(128, 256, 256),
        unet_attention=(False, True, True),
        unet_layers=2,
        text_width=256,
        text_layers=4,
        text_heads=4,
        attention_head_dim=32,
    ),
    "base": Preset(
        resolution=256,
        vae_channels=(128, 256, 512, 512),
        unet_channels=(192, 384, 768, 768),
        unet_attention=(False, True, True, True),
        unet_layers=2,
        text_width=512,
        text_layers=8,
        text_heads=8,
        attention_head_dim=64,
    ),
}


@dataclass
class Components:
    """The pieces of a text-to-image latent diffusion model, as diffusers names them."""

    text_encoder: CLIPTextModel
    vae: AutoencoderKL
    unet: UNet2DConditionModel
    tokenizer: object
    scheduler: DDPMScheduler

    @property
    def resolution(self) -> int:
        return self.unet.config.sample_size * 2 ** (len(self.vae.config.block_out_channels) - 1)


def build_text_encoder(preset: Preset) -> CLIPTextModel:
    tokenizer = load_tokenizer()
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=preset.text_width,
        intermediate_size=preset.text_width * 4,
        num_hidden_layers=preset.text_layers,
        num_attention_heads=preset.text_heads,
        max_position_embeddings=MAX_LENGTH,
        projection_dim=preset.text_width,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config)


def build_vae(preset: Preset) -> AutoencoderKL:
    n = len(preset.vae_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=preset.vae_channels,
        layers_per_block=1,
        latent_channels=preset.latent_channels,
        norm_num_groups=min(preset.norm_groups, min(preset.vae_channels)),
        sample_size=preset.resolution,
        scaling_factor=1.0,
    )


def build_unet(preset: Preset) -> UNet2DConditionModel:
    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in preset.unet_attention)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(preset.unet_attention))
    return UNet2DConditionModel(
        sample_size=preset.latent_size,
        in_channels=preset.latent_channels,
        out_channels=preset.latent_channels,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=preset.unet_channels,
        layers_per_block=preset.unet_layers,
        cross_attention_dim=preset.text_width,
        attention_head_dim=preset.attention_head_dim,
        norm_num_groups=min(preset.norm_groups, min(preset.unet_channels)),
    )


def build_scheduler(prediction_type: str = "epsilon", zero_terminal_snr: bool = False) -> DDPMScheduler:
    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        prediction_type=prediction_type,
        rescale_betas_zero_snr=zero_terminal_snr,
        clip_sample=False,
        steps_offset=1,
    )


def build_components(name: PresetName, prediction_type: str = "epsilon", seed: int = 0, zero_terminal_snr: bool = False) -> Components:
    preset = PRESETS[name]
    torch.manual_seed(seed)
    return Components(
        text_encoder=build_text_encoder(preset),
        vae=build_vae(preset),
        unet=build_unet(preset),
        tokenizer=load_tokenizer(),
        scheduler=build_scheduler(prediction_type, zero_terminal_snr),
    )
