"""LoRA on the UNet (peft): plain weights for saving, adapter weights for checkpoints.

A UNet with adapters has `...to_q.base_layer.weight` and `...lora_A...` keys that diffusers'
loaders do not know. The saved model is therefore always a plain UNet: with the adapters merged
into the weights for the final model, unmerged (the frozen base) in checkpoints, whose adapter
weights are kept beside it so a resume continues exactly.
"""

from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel

TARGET_MODULES = ["to_q", "to_k", "to_v", "to_out.0"]


def has_lora(unet: UNet2DConditionModel) -> bool:
    return bool(getattr(unet, "peft_config", None))


def add_lora(unet: UNet2DConditionModel, rank: int) -> None:
    from peft import LoraConfig

    unet.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=TARGET_MODULES))


def lora_state(unet: UNet2DConditionModel) -> dict[str, torch.Tensor]:
    from peft.utils import get_peft_model_state_dict

    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(unet).items()}


def load_lora_state(unet: UNet2DConditionModel, state: dict[str, torch.Tensor]) -> None:
    from peft.utils import set_peft_model_state_dict

    set_peft_model_state_dict(unet, state)


def plain_unet(unet: UNet2DConditionModel, merged: bool) -> UNet2DConditionModel:
    """A copy without adapter layers: base + LoRA delta when `merged`, the frozen base otherwise."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in unet.modules() if isinstance(m, BaseTunerLayer)]
    if merged:
        for layer in layers:
            layer.merge()
    try:
        state = {k.replace(".base_layer", ""): v.detach().clone() for k, v in unet.state_dict().items() if "lora_" not in k}
    finally:
        if merged:
            for layer in layers:
                layer.unmerge()
    clean = UNet2DConditionModel.from_config(unet.config)
    clean.load_state_dict(state)
    return clean.to(next(unet.parameters()).device)
