"""Text-to-image generation with ONNX Runtime over an exported model folder (Optimum's layout).

The loop is the one of diffusers' StableDiffusionPipeline, step for step: the same tokenizer, the
same scheduler objects (built by `make_scheduler`), the same seeded initial latents, classifier-free
guidance as one fused batch. So the same request gives the same images as the PyTorch backend,
within the export's parity tolerance.
"""

from __future__ import annotations

import inspect
import json
import logging
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from core.errors import StudioError
from core.inference.schedulers import make_scheduler
from core.inference.torch_backend import GenerateRequest, check_size
from core.modeling.tokenizer import clean_caption
from core.settings import get_settings

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def is_onnx_export(folder: Path) -> bool:
    return (folder / "unet" / "model.onnx").is_file() and (folder / "model_index.json").is_file()


@lru_cache(maxsize=1)
def cuda_works() -> bool:
    """Whether the CUDA execution provider really runs here.

    onnxruntime-gpu lists CUDA among its available providers even on a machine without a GPU, and
    falls back to the CPU when a session is created; only a session's actual providers tell.
    """
    import onnxruntime as ort

    if CUDA not in ort.get_available_providers() or get_settings().device == "cpu":
        return False
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    ort.set_default_logger_severity(4)  # a failed CUDA load is the answer here, not an error to print
    try:
        session = ort.InferenceSession(model.SerializeToString(), providers=[CUDA, CPU])
    finally:
        ort.set_default_logger_severity(2)
    return CUDA in session.get_providers()


def providers() -> list[str]:
    """CUDA when onnxruntime-gpu finds a GPU (and STUDIO_DEVICE allows it), else the CPU."""
    return [CUDA, CPU] if cuda_works() else [CPU]


def make_session(path: Path, optimization: str = "all"):  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = get_settings().torch_threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[optimization]
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=providers())
    except Exception as exc:  # onnxruntime raises its own exception types for a bad graph
        raise StudioError(f"ONNX Runtime could not load {path}: {str(exc).splitlines()[0][:200]}") from None


def psnr(a: Image.Image, b: Image.Image) -> float:
    """Peak signal-to-noise ratio in dB between two 8-bit images (100 for identical ones)."""
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    mse = float(np.mean((x - y) ** 2))
    return 100.0 if mse == 0 else min(100.0, float(10 * np.log10(255.0**2 / mse)))


def to_pil(images: np.ndarray) -> list[Image.Image]:
    """[-1, 1] NCHW floats -> 8-bit RGB images, rounded as diffusers' image processor does."""
    array = np.clip(images / 2 + 0.5, 0, 1).transpose(0, 2, 3, 1)
    return [Image.fromarray((a * 255).round().astype("uint8")) for a in array]


class OnnxGenerator:
    """An exported model's ONNX Runtime sessions, created once and kept for repeated generations."""

    def __init__(self, folder: Path) -> None:
        from diffusers import DDPMScheduler
        from transformers import CLIPTokenizer

        if not is_onnx_export(folder):
            raise StudioError(f"{folder} is not an ONNX export (unet/model.onnx or model_index.json is missing).")
        self.folder = folder
        self.index: dict[str, Any] = json.loads((folder / "model_index.json").read_text())
        self.resolution = int(self.index["resolution"])
        self.vae_scale_factor = int(self.index["vae_scale_factor"])
        self.scaling_factor = float(json.loads((folder / "vae_decoder" / "config.json").read_text()).get("scaling_factor", 1.0))
        unet_config = json.loads((folder / "unet" / "config.json").read_text())
        self.latent_channels = int(unet_config["in_channels"])
        self.size_multiple = self.vae_scale_factor * 2 ** (len(unet_config["block_out_channels"]) - 1)
        self.tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
        self.train_scheduler = DDPMScheduler.from_pretrained(folder / "scheduler")
        self.text_encoder = make_session(folder / "text_encoder" / "model.onnx")
        self.unet = make_session(folder / "unet" / "model.onnx")
        self.vae_decoder = make_session(folder / "vae_decoder" / "model.onnx")
        self.providers = self.unet.get_providers()

    @property
    def label(self) -> str:
        return f"ONNX Runtime ({'CUDA' if CUDA in self.providers else 'CPU'})"

    def encode(self, texts: list[str]) -> np.ndarray:
        ids = self.tokenizer(
            [clean_caption(t) for t in texts],
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="np",
        ).input_ids.astype(np.int64)
        return self.text_encoder.run(None, {"input_ids": ids})[0]

    def __call__(self, request: GenerateRequest) -> list[Image.Image]:
        if request.lora:
            raise StudioError("LoRA needs the PyTorch backend (an ONNX export is a fixed graph), so pick PyTorch or no LoRA.")
        height, width = check_size(request, self.resolution, self.size_multiple)
        cfg = request.guidance > 1
        n = request.batch
        texts = ([request.negative_prompt] * n if cfg else []) + [request.prompt] * n
        embeds = self.encode(texts)

        scheduler = make_scheduler(request.scheduler, self.train_scheduler.config)
        scheduler.set_timesteps(request.steps, device="cpu")
        extra = {"generator": torch.Generator("cpu").manual_seed(request.seed)}
        shape = (n, self.latent_channels, height // self.vae_scale_factor, width // self.vae_scale_factor)
        latents = torch.randn(shape, generator=extra["generator"]) * scheduler.init_noise_sigma
        accepts_generator = "generator" in inspect.signature(scheduler.step).parameters

        for t in scheduler.timesteps:
            model_input = torch.cat([latents] * 2) if cfg else latents
            model_input = scheduler.scale_model_input(model_input, t)
            timestep = np.full(model_input.shape[0], float(t), dtype=np.float32)
            noise = self.unet.run(
                None,
                {"sample": model_input.numpy(), "timestep": timestep, "encoder_hidden_states": embeds},
            )[0]
            noise_pred = torch.from_numpy(noise)
            if cfg:
                uncond, text = noise_pred.chunk(2)
                noise_pred = uncond + request.guidance * (text - uncond)
            latents = scheduler.step(noise_pred, t, latents, return_dict=False, **(extra if accepts_generator else {}))[0]

        images = self.vae_decoder.run(None, {"latent_sample": (latents / self.scaling_factor).numpy().astype(np.float32)})[0]
        return to_pil(images)
