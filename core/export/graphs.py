"""The four ONNX graphs of a model, in the folder layout of Optimum's ONNX Runtime SD pipelines.

```
text_encoder/model.onnx   input_ids[B,77] int64         -> last_hidden_state[B,77,D]
unet/model.onnx           sample[B,C,h,w], timestep[B], encoder_hidden_states[B,77,D] -> out_sample
vae_decoder/model.onnx    latent_sample[B,C,h,w]        -> sample[B,3,H,W]
vae_encoder/model.onnx    sample[B,3,H,W]               -> latent_parameters[B,2C,h,w]
tokenizer/, scheduler/, <part>/config.json, model_index.json
```

We use the TorchScript exporter (`dynamo=False`): torch 2.13's default `torch.export` exporter
needs `onnxscript`, which is not part of our stack, and both give the same graphs here (parity
~1e-6); the TorchScript one also exports in a fraction of the time.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from core.modeling.presets import Components
from core.modeling.tokenizer import write_vocab_files

OPSET = 17
PARTS = ("text_encoder", "unet", "vae_decoder", "vae_encoder")
Progress = Callable[[float, str], None]


class TextEncoder(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids, return_dict=False)[0]


class UNet(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        return self.model(sample, timestep, encoder_hidden_states, return_dict=False)[0]


class VaeDecoder(nn.Module):
    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, latent_sample: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latent_sample, return_dict=False)[0]


class VaeEncoder(nn.Module):
    """Returns the latent distribution's parameters (mean and log-variance), as Optimum does."""

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, sample: torch.Tensor) -> torch.Tensor:
        moments = self.vae.encoder(sample)
        return self.vae.quant_conv(moments) if self.vae.quant_conv is not None else moments


def vae_factor(components: Components) -> int:
    return 2 ** (len(components.vae.config.block_out_channels) - 1)


def example_inputs(
    components: Components, batch: int = 2, size: int | None = None, generator: torch.Generator | None = None
) -> dict[str, tuple[torch.Tensor, ...]]:
    """Random inputs of the right shapes for every graph (the export traces them; parity reuses them)."""
    g = generator or torch.Generator().manual_seed(0)
    size = size or components.resolution
    latent = size // vae_factor(components)
    channels = components.unet.config.in_channels
    width = components.text_encoder.config.hidden_size
    length = components.tokenizer.model_max_length
    vocab = components.text_encoder.config.vocab_size
    return {
        "text_encoder": (torch.randint(0, vocab, (batch, length), generator=g),),
        "unet": (
            torch.randn(batch, channels, latent, latent, generator=g),
            torch.rand(batch, generator=g) * 999,
            torch.randn(batch, length, width, generator=g),
        ),
        "vae_decoder": (torch.randn(batch, components.vae.config.latent_channels, latent, latent, generator=g),),
        "vae_encoder": (torch.rand(batch, 3, size, size, generator=g) * 2 - 1,),
    }


def modules(components: Components) -> dict[str, nn.Module]:
    return {
        "text_encoder": TextEncoder(components.text_encoder),
        "unet": UNet(components.unet),
        "vae_decoder": VaeDecoder(components.vae),
        "vae_encoder": VaeEncoder(components.vae),
    }


IO_NAMES: dict[str, tuple[list[str], list[str]]] = {
    "text_encoder": (["input_ids"], ["last_hidden_state"]),
    "unet": (["sample", "timestep", "encoder_hidden_states"], ["out_sample"]),
    "vae_decoder": (["latent_sample"], ["sample"]),
    "vae_encoder": (["sample"], ["latent_parameters"]),
}

# Batch is dynamic everywhere; height and width wherever the graph is convolutional.
IMAGE_AXES = {0: "batch", 2: "height", 3: "width"}
DYNAMIC_AXES: dict[str, dict[str, dict[int, str]]] = {
    "text_encoder": {"input_ids": {0: "batch"}, "last_hidden_state": {0: "batch"}},
    "unet": {"sample": IMAGE_AXES, "timestep": {0: "batch"}, "encoder_hidden_states": {0: "batch"}, "out_sample": IMAGE_AXES},
    "vae_decoder": {"latent_sample": IMAGE_AXES, "sample": IMAGE_AXES},
    "vae_encoder": {"sample": IMAGE_AXES, "latent_parameters": IMAGE_AXES},
}


def export_graph(name: str, module: nn.Module, inputs: tuple[torch.Tensor, ...], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    input_names, output_names = IO_NAMES[name]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings about Python-side shape checks
        torch.onnx.export(
            module.eval(),
            inputs,
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=DYNAMIC_AXES[name],
            do_constant_folding=True,
        )


def save_configs(components: Components, out: Path) -> None:
    """What the ONNX pipeline needs besides the graphs: tokenizer, scheduler, configs, the index."""
    components.tokenizer.save_pretrained(out / "tokenizer")
    write_vocab_files(out / "tokenizer")  # Optimum's pipelines on transformers 4.x read these
    components.scheduler.save_pretrained(out / "scheduler")
    components.text_encoder.config.save_pretrained(out / "text_encoder")
    components.unet.save_config(out / "unet")
    components.vae.save_config(out / "vae_decoder")
    components.vae.save_config(out / "vae_encoder")
    index = {
        "_class_name": "ORTStableDiffusionPipeline",
        "scheduler": ["diffusers", type(components.scheduler).__name__],
        "text_encoder": ["onnx", "model.onnx"],
        "tokenizer": ["transformers", type(components.tokenizer).__name__],
        "unet": ["onnx", "model.onnx"],
        "vae_decoder": ["onnx", "model.onnx"],
        "vae_encoder": ["onnx", "model.onnx"],
        "resolution": components.resolution,
        "vae_scale_factor": vae_factor(components),
    }
    (out / "model_index.json").write_text(json.dumps(index, indent=1))


def export_graphs(components: Components, out: Path, progress: Progress | None = None) -> None:
    """Export every graph of `components` and its configs into `out` (an empty folder)."""
    inputs = example_inputs(components)
    for i, (name, module) in enumerate(modules(components).items()):
        if progress:
            progress(i / len(PARTS), f"Exporting {name.replace('_', ' ')} to ONNX…")
        export_graph(name, module, inputs[name], out / name / "model.onnx")
    save_configs(components, out)
