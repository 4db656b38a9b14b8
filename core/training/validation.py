"""What the loop measures between steps: held-out metrics and the sample grid.

Plain functions of the model and a split, so the numbers do not depend on the loop's state: the
VAE's reconstruction error, the UNet's held-out loss with fixed noise and timesteps, and one row of
generated images per validation prompt with fixed seeds (at each of the sizes sampled). A split's
buckets are measured one at a time; with one bucket the numbers are the square-only studio's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from diffusers import AutoencoderKL
from PIL import Image, ImageDraw, ImageFont

from core.datasets.buckets import Size
from core.inference.torch_backend import GenerateRequest, generate_with, image_grid
from core.modeling.presets import Components
from core.training.data import Split
from core.training.objectives import DenoiseObjective

VAL_LIMIT = 256  # held-out images measured; enough for a stable mean, cheap at every validation


@torch.no_grad()
def encode_stats(vae: AutoencoderKL, split: Split, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Posterior mean and std of every image of a split, one pair per bucket (also the loop's latent cache)."""
    means: list[list[torch.Tensor]] = [[] for _ in split.buckets]
    stds: list[list[torch.Tensor]] = [[] for _ in split.buckets]
    for chunk in split.chunks(128):
        bucket, _ = split.locate(chunk)
        dist = vae.encode(split.pixels(chunk).to(device)).latent_dist
        means[bucket].append(dist.mean)
        stds[bucket].append(dist.std)
    return [(torch.cat(m), torch.cat(s)) for m, s in zip(means, stds, strict=True)]


@torch.no_grad()
def reconstruction(vae: AutoencoderKL, split: Split, device: torch.device) -> dict[str, float]:
    """`val_mse` and `val_psnr` of the VAE's reconstructions of the split's first images."""
    was_training = vae.training
    vae.eval()
    errors = []
    for index in split.head(VAL_LIMIT).chunks(64):
        chunk = split.pixels(index).to(device)
        recon = vae.decode(vae.encode(chunk).latent_dist.mean).sample.clamp(-1, 1)
        errors.append(((recon - chunk) ** 2).flatten(1).mean(1).cpu())
    vae.train(was_training)
    mse = torch.cat(errors)
    # PSNR on [0, 1] images: the [-1, 1] range has a peak-to-peak of 2, so MSE/4.
    psnr = float((10 * torch.log10(1.0 / (mse / 4).clamp_min(1e-10))).mean())
    return {"val_mse": float(mse.mean()), "val_psnr": psnr}


@torch.no_grad()
def heldout_loss(
    components: Components, split: Split, device: torch.device, text: Callable[[list[str]], torch.Tensor], encode_text: bool
) -> dict[str, float]:
    """`val_loss`: the unweighted denoising loss with fixed noise and timesteps, so values are
    comparable across steps and runs. `text` gives the objective's text input for captions."""
    c = components
    val = split.head(VAL_LIMIT)
    fixed = torch.Generator().manual_seed(20_251_126)
    latents = [mean * c.vae.config.scaling_factor for mean, _ in encode_stats(c.vae, val, device)]
    noise = [torch.randn(bucket.shape, generator=fixed).to(device) for bucket in latents]
    timesteps = torch.randint(0, c.scheduler.config.num_train_timesteps, (len(val),), generator=fixed).to(device)
    objective = DenoiseObjective(c.unet, c.text_encoder if encode_text else None, c.scheduler, None)
    total = 0.0
    for chunk in val.chunks(64):
        bucket, local = val.locate(chunk)
        inputs = text([val.captions[i] for i in chunk.tolist()])
        total += float(objective(latents[bucket][local], noise[bucket][local], timesteps[chunk], inputs, weighted=False)["loss"]) * len(chunk)
    return {"val_loss": total / len(val)}


LABEL_MAX_PX = 360  # longer prompts are cut with an ellipsis


def prompt_grid(rows: list[Image.Image], prompts: list[str]) -> Image.Image:
    """The sample rows stacked, each labelled with its prompt on the left, so a grid reads on its own."""
    row_h = rows[0].height
    font = ImageFont.load_default(size=max(10, min(20, row_h // 3)))
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def fit(text: str) -> str:
        while draw.textlength(text, font=font) > LABEL_MAX_PX and len(text) > 1:
            text = text[:-2] + "…"
        return text

    labels = [fit(p) for p in prompts]
    pad = 6
    label_w = int(max(draw.textlength(t, font=font) for t in labels)) + 2 * pad
    grid = Image.new("RGB", (label_w + max(r.width for r in rows), row_h * len(rows)), "white")
    canvas = ImageDraw.Draw(grid)
    for i, (row, label) in enumerate(zip(rows, labels, strict=True)):
        grid.paste(row, (label_w, i * row_h))
        canvas.text((pad, i * row_h + row_h // 2), label, fill="black", font=font, anchor="lm")
    return grid


def side_by_side(parts: list[Image.Image]) -> Image.Image:
    """Images of different sizes in one row, each centred on the tallest's height."""
    row = Image.new("RGB", (sum(p.width for p in parts), max(p.height for p in parts)), "white")
    left = 0
    for part in parts:
        row.paste(part, (left, (row.height - part.height) // 2))
        left += part.width
    return row


@torch.no_grad()
def sample_rows(components: Components, prompts: list[str], device: torch.device, sizes: list[Size], **settings: Any) -> list[Image.Image]:
    """One row of images per prompt: for each (width, height), images with the same `GenerateRequest`
    settings (seed included)."""
    return [
        side_by_side([image_grid(generate_with(components, GenerateRequest(prompt=p, width=w, height=h, **settings), device), rows=1) for w, h in sizes])
        for p in prompts
    ]
