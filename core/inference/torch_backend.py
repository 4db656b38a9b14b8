"""Text-to-image generation with PyTorch through diffusers' StableDiffusionPipeline."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from core.inference.schedulers import SchedulerName, make_scheduler
from core.modeling.io import load_components, pipeline_for
from core.modeling.presets import Components
from core.modeling.tokenizer import clean_caption


class GenerateRequest(BaseModel):
    """One generation, the same for every backend, the CLI, the playground and the HTTP API."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=2000)
    negative_prompt: str = Field("", max_length=2000)
    steps: int = Field(25, ge=1, le=200)
    guidance: float = Field(3.0, ge=0, le=30)
    seed: int = Field(0, ge=0, le=2**32 - 1)
    scheduler: SchedulerName = "ddim"
    batch: int = Field(1, ge=1, le=16)
    height: int | None = Field(None, ge=8, le=2048, multiple_of=8)
    width: int | None = Field(None, ge=8, le=2048, multiple_of=8)


def pick_device(preference: str = "auto") -> torch.device:
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


@torch.no_grad()
def generate_with(components: Components, request: GenerateRequest, device: torch.device | None = None) -> list[Image.Image]:
    """Images for `request`; the same seed gives the same images."""
    pipe = pipeline_for(components)
    pipe.scheduler = make_scheduler(request.scheduler, components.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    device = device or next(components.unet.parameters()).device
    pipe.to(device)
    size = components.resolution
    generator = torch.Generator("cpu").manual_seed(request.seed)
    out = pipe(
        prompt=[clean_caption(request.prompt)] * request.batch,
        negative_prompt=[clean_caption(request.negative_prompt)] * request.batch if request.guidance > 1 else None,
        num_inference_steps=request.steps,
        guidance_scale=request.guidance,
        height=request.height or size,
        width=request.width or size,
        generator=generator,
    )
    return list(out.images)


class TorchGenerator:
    """A model folder loaded once and kept for repeated generations."""

    def __init__(self, folder: Path, device: str = "auto") -> None:
        self.folder = folder
        self.device = pick_device(device)
        self.components = load_components(folder)
        for module in (self.components.text_encoder, self.components.vae, self.components.unet):
            module.to(self.device).eval()

    def __call__(self, request: GenerateRequest) -> list[Image.Image]:
        return generate_with(self.components, request, self.device)


def image_grid(images: list[Image.Image], rows: int) -> Image.Image:
    cols = max(1, (len(images) + rows - 1) // rows)
    w, h = images[0].size
    grid = Image.new("RGB", (cols * w, rows * h), "white")
    for i, img in enumerate(images):
        grid.paste(img, ((i % cols) * w, (i // cols) * h))
    return grid
