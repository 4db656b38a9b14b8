"""The two training objectives as modules, so DDP and DeepSpeed can wrap them whole.

Each returns a dict: `loss` to train on, plus any other values the loop logs with it (`mse`). The
UNet's text input is token ids when the text encoder trains, else the frozen encoder's outputs,
computed once per caption (`embed_captions`).

Randomness (noise, timesteps, posterior samples) is drawn by the loop from its own generator and
passed in, which keeps a resumed run bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from diffusers.training_utils import compute_snr
from torch import nn
from transformers import CLIPTokenizer


class VaeObjective(nn.Module):
    """Reconstruction (MSE) plus a small KL term towards the unit Gaussian."""

    def __init__(self, vae: AutoencoderKL, kl_weight: float) -> None:
        super().__init__()
        self.vae = vae
        self.kl_weight = kl_weight

    def forward(self, pixels: torch.Tensor, eps: torch.Tensor) -> dict[str, torch.Tensor]:
        posterior = self.vae.encode(pixels).latent_dist
        latents = posterior.mean + posterior.std * eps
        recon = self.vae.decode(latents).sample
        mse = F.mse_loss(recon.float(), pixels.float())
        kl = posterior.kl().mean() / pixels[0].numel()
        return {"loss": mse + self.kl_weight * kl, "mse": mse.detach()}


def tokenize(tokenizer: CLIPTokenizer, captions: list[str], device: torch.device) -> torch.Tensor:
    return tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids.to(device)


@torch.no_grad()
def embed_captions(text_encoder: nn.Module, tokenizer: CLIPTokenizer, captions: list[str], device: torch.device) -> dict[str, torch.Tensor]:
    """The frozen text encoder's output for each distinct caption, computed once for the whole stage."""
    unique = sorted(set(captions))
    out: dict[str, torch.Tensor] = {}
    for i in range(0, len(unique), 256):
        chunk = unique[i : i + 256]
        out.update(zip(chunk, text_encoder(tokenize(tokenizer, chunk, device))[0], strict=True))
    return out


class DenoiseObjective(nn.Module):
    """Noise (or v) prediction, optionally min-SNR-γ weighted; the text encoder trains if it has grads.

    Subject fine-tuning with prior preservation passes the class images' inputs after the subject's
    (`*prior`, possibly of another size): the loss is the subject's plus `prior_loss_weight` times
    the class images', as diffusers' train_dreambooth computes it.
    """

    def __init__(
        self,
        unet: UNet2DConditionModel,
        text_encoder: nn.Module | None,
        scheduler: DDPMScheduler,
        min_snr_gamma: float | None,
        prior_loss_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.unet = unet
        self.text_encoder = text_encoder
        self.scheduler = scheduler
        self.min_snr_gamma = min_snr_gamma
        self.prior_loss_weight = prior_loss_weight

    def target(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        if self.scheduler.config.prediction_type == "v_prediction":
            return self.scheduler.get_velocity(latents, noise, timesteps)
        return noise

    def forward(
        self,
        latents: torch.Tensor,
        noise: torch.Tensor,
        timesteps: torch.Tensor,
        text: torch.Tensor,
        *prior: torch.Tensor,
        weighted: bool = True,
    ) -> dict[str, torch.Tensor]:
        loss = self.loss(latents, noise, timesteps, text, weighted)
        if not prior:
            return {"loss": loss}
        class_loss = self.loss(*prior, weighted=weighted)  # logged on its own: a rising one means the class drifts
        return {"loss": loss + self.prior_loss_weight * class_loss, "prior_loss": class_loss.detach()}

    def loss(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor, text: torch.Tensor, weighted: bool) -> torch.Tensor:
        # `text` is token ids when the text encoder trains, cached embeddings otherwise.
        hidden = self.text_encoder(text)[0] if self.text_encoder is not None else text
        noisy = self.scheduler.add_noise(latents, noise, timesteps)
        pred = self.unet(noisy, timesteps, hidden).sample
        loss = F.mse_loss(pred.float(), self.target(latents, noise, timesteps).float(), reduction="none")
        loss = loss.mean(dim=(1, 2, 3))
        if weighted and self.min_snr_gamma is not None:
            snr = compute_snr(self.scheduler, timesteps)
            weight = torch.clamp(snr, max=self.min_snr_gamma) / snr
            if self.scheduler.config.prediction_type == "v_prediction":
                weight = torch.clamp(snr, max=self.min_snr_gamma) / (snr + 1)
            loss = loss * weight
        return loss.mean()
