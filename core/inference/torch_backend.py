"""Text-to-image generation with PyTorch through diffusers' StableDiffusionPipeline."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import torch
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from core.errors import StudioError
from core.inference.lora import applied, lora_path
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
    lora: str | None = Field(None, description="a LoRA to apply: a run trained with LoRA (its id or model folder), or an uploaded LoRA's id")
    lora_strength: float = Field(1.0, ge=0, le=2)


def size_limits(resolution: int, multiple: int) -> tuple[int, int]:
    """The image sizes a model generates well: from half to twice its training resolution."""
    return max(multiple, resolution // 2 // multiple * multiple), resolution * 2


def size_fits(value: int, resolution: int, multiple: int) -> bool:
    low, high = size_limits(resolution, multiple)
    return value % multiple == 0 and low <= value <= high


def check_size(request: GenerateRequest, resolution: int, multiple: int) -> tuple[int, int]:
    """The request's (height, width), defaulting to the model's resolution; a StudioError if out of range."""
    low, high = size_limits(resolution, multiple)
    size = (request.height or resolution, request.width or resolution)
    for name, value in zip(("height", "width"), size):
        if not size_fits(value, resolution, multiple):
            raise StudioError(f"The {name} must be a multiple of {multiple} between {low} and {high} for this model (got {value}).")
    return size


def pick_device(preference: str = "auto") -> torch.device:
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def components_size_multiple(components: Components) -> int:
    """Image sizes must divide by the VAE's factor times the UNet's downsampling."""
    return 2 ** (len(components.vae.config.block_out_channels) - 1 + len(components.unet.config.block_out_channels) - 1)


@torch.no_grad()
def generate_with(components: Components, request: GenerateRequest, device: torch.device | None = None) -> list[Image.Image]:
    """Images for `request`; the same seed gives the same images."""
    pipe = pipeline_for(components)
    pipe.scheduler = make_scheduler(request.scheduler, components.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    device = device or next(components.unet.parameters()).device
    pipe.to(device)
    height, width = check_size(request, components.resolution, components_size_multiple(components))
    generator = torch.Generator("cpu").manual_seed(request.seed)
    # The LoRA is loaded into the (shared, possibly cached) components for this call only.
    with applied(pipe, lora_path(request.lora), request.lora_strength) if request.lora else nullcontext():
        out = pipe(
            prompt=[clean_caption(request.prompt)] * request.batch,
            negative_prompt=[clean_caption(request.negative_prompt)] * request.batch if request.guidance > 1 else None,
            num_inference_steps=request.steps,
            guidance_scale=request.guidance,
            height=height,
            width=width,
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

    @property
    def resolution(self) -> int:
        return self.components.resolution

    @property
    def size_multiple(self) -> int:
        return components_size_multiple(self.components)

    @property
    def label(self) -> str:
        return f"PyTorch ({self.device.type.upper()})"

    def __call__(self, request: GenerateRequest) -> list[Image.Image]:
        return generate_with(self.components, request, self.device)


def image_grid(images: list[Image.Image], rows: int) -> Image.Image:
    cols = max(1, (len(images) + rows - 1) // rows)
    w, h = images[0].size
    grid = Image.new("RGB", (cols * w, rows * h), "white")
    for i, img in enumerate(images):
        grid.paste(img, ((i % cols) * w, (i // cols) * h))
    return grid
