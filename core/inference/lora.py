"""LoRA weights applied to a PyTorch model for one generation, at a strength.

A LoRA comes from a run that trained one (`lora/pytorch_lora_weights.safetensors`, inside or beside
its model folder) or from an uploaded file, kept under STUDIO_HOME/cache/loras by its sha256 (its
id). A file is checked before any weight is applied: safetensors by its content, at most
STUDIO_LORA_MAX_BYTES, and every key naming a layer of the base model with that layer's shapes.
diffusers loads it (`load_lora_weights`, kohya's `lora_unet_…` keys too) and unloads it after the
generation, so a cached generator is the plain base model again for the next request.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.errors import StudioError
from core.files import NO_SPACE, DiskFull, temp_sibling
from core.modeling.lora_files import DIFFUSERS_FILE, FOLDER  # in (or beside) a LoRA training's model folder
from core.settings import get_settings

UPLOAD_ID = re.compile(r"[0-9a-f]{64}")
ADAPTER = "studio-lora"
MAX_HEADER_BYTES = 100 << 20  # safetensors' own limit on the JSON header
CHUNK = 1 << 20


class LoraTooLarge(StudioError):
    """A LoRA file over STUDIO_LORA_MAX_BYTES (the API answers 413)."""


def uploads_dir() -> Path:
    return get_settings().cache_dir / "loras"


def is_upload_id(ref: str) -> bool:
    return UPLOAD_ID.fullmatch(ref) is not None


def find_lora_weights(folder: Path) -> Path | None:
    """The diffusers-format LoRA of a trained model folder: in its `lora/` folder, or in a `lora/` beside it."""
    for candidate in (folder / FOLDER / DIFFUSERS_FILE, folder.parent / FOLDER / DIFFUSERS_FILE):
        if candidate.is_file():
            return candidate
    return None


def lora_path(ref: str) -> Path:
    """The LoRA file of `ref`: an uploaded LoRA's id, a model folder, or an MLflow run id."""
    if is_upload_id(ref):
        path = uploads_dir() / f"{ref}.safetensors"
        if not path.is_file():
            raise StudioError(f"There is no uploaded LoRA {ref[:12]}…; upload the file again.")
        return path
    folder = Path(ref).expanduser()
    found = find_lora_weights(folder) if folder.is_dir() else run_lora_weights(ref)
    if found is None:
        raise StudioError(f"{ref} has no LoRA weights (no {FOLDER}/{DIFFUSERS_FILE} in or beside its model); pick a run trained with LoRA.")
    return found


def run_lora_weights(run_id: str) -> Path | None:
    """A run's LoRA: inside its downloaded `model` artifact, else the `lora` artifact logged beside it."""
    from core.tracking import model_folder
    from core.tracking.artifacts import artifact_file

    inside = model_folder(run_id) / FOLDER / DIFFUSERS_FILE
    if inside.is_file():
        return inside
    try:
        return artifact_file(run_id, f"{FOLDER}/{DIFFUSERS_FILE}")
    except StudioError:
        return None


def check_file(path: Path) -> None:
    """Refuse anything but a safetensors file within the size limit, by its bytes (never its name)."""
    limit = get_settings().lora_max_bytes
    size = path.stat().st_size
    if size > limit:
        raise LoraTooLarge(f"The LoRA file is larger than STUDIO_LORA_MAX_BYTES ({limit:,} bytes), so it was refused.")
    with path.open("rb") as f:
        head = f.read(9)
    # safetensors: an 8-byte little-endian header length, then a JSON object; a pickle or zip starts otherwise.
    header_length = int.from_bytes(head[:8], "little") if len(head) == 9 else 0
    if not (head[8:9] == b"{" and 2 <= header_length <= min(MAX_HEADER_BYTES, size - 8)):
        raise StudioError("The LoRA file is not a safetensors file (pickle and other formats can run code when opened), so it was refused.")
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            if not list(f.keys()):
                raise StudioError("The LoRA file holds no weights.")
    except StudioError:
        raise
    except Exception as exc:  # SafetensorError: the reason goes into the sentence
        reason = str(exc).splitlines()[0].rstrip(". ") if str(exc) else type(exc).__name__
        raise StudioError(f"The LoRA file is damaged or incomplete ({reason}), so it was refused.") from None


class LoraUpload:
    """A LoRA file being received: streamed to a temporary file in the uploads folder, counted and
    hashed as it comes, checked, then kept as `<sha256>.safetensors` (its id)."""

    def __init__(self) -> None:
        uploads_dir().mkdir(parents=True, exist_ok=True)
        self.limit = get_settings().lora_max_bytes
        self.size = 0
        self.sha = hashlib.sha256()
        self.tmp = temp_sibling(uploads_dir() / "upload.safetensors")
        self.file = self.tmp.open("wb")

    def __enter__(self) -> LoraUpload:
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()
        self.tmp.unlink(missing_ok=True)

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:  # counted while reading: a lying Content-Length cannot pass
            raise LoraTooLarge(f"The LoRA file is larger than STUDIO_LORA_MAX_BYTES ({self.limit:,} bytes), so it was refused.")
        self.sha.update(chunk)
        try:
            self.file.write(chunk)
        except OSError as exc:
            if exc.errno in NO_SPACE:
                raise DiskFull(f"No space left on the disk holding {uploads_dir()} while saving the LoRA file.") from None
            raise

    def finish(self) -> str:
        self.file.close()
        check_file(self.tmp)
        lora_id = self.sha.hexdigest()
        os.replace(self.tmp, uploads_dir() / f"{lora_id}.safetensors")  # same content, same name: a repeat upload is harmless
        return lora_id


def store_lora(path: Path) -> str:
    """Keep a LoRA file from this machine (the playground's upload) as an uploaded LoRA; returns its id."""
    with LoraUpload() as upload, path.open("rb") as f:
        while chunk := f.read(CHUNK):
            upload.write(chunk)
        return upload.finish()


def peft_keys(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """One model's part of a diffusers LoRA state in peft's names (`<layer>.lora_A.weight`), as diffusers converts it."""
    from diffusers.utils import convert_state_dict_to_diffusers, convert_state_dict_to_peft, convert_unet_state_dict_to_peft

    part = {k.removeprefix(f"{prefix}."): v for k, v in state.items() if k.startswith(f"{prefix}.")}
    if not part:
        return part
    if prefix == "unet":
        return convert_unet_state_dict_to_peft(part)
    return convert_state_dict_to_peft(convert_state_dict_to_diffusers(part))


def expected_shapes(layer: nn.Module, rank: int) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """The shapes of lora_A and lora_B for `layer`, as peft makes them; None for a layer LoRA cannot adapt."""
    if isinstance(layer, nn.Linear):
        return (rank, layer.in_features), (layer.out_features, rank)
    if isinstance(layer, nn.Conv2d):
        return (rank, layer.in_channels, *layer.kernel_size), (layer.out_channels, rank, 1, 1)
    return None


def check_fits(path: Path, models: dict[str, nn.Module]) -> None:
    """Refuse, in one sentence, a LoRA whose keys name layers `models` do not have or whose shapes differ."""
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import load_file

    check_file(path)
    try:
        state, _alphas = StableDiffusionPipeline.lora_state_dict(load_file(str(path)))
    except (ValueError, KeyError) as exc:  # kohya keys diffusers cannot convert
        raise StudioError(f"The LoRA file's keys are in no format diffusers reads ({str(exc).split(':')[0].strip()}), so nothing was applied.") from None
    not_lora = [k for k in state if "lora" not in k]
    if not_lora:
        raise StudioError(f"The LoRA file holds weights that are not LoRA weights (e.g. {not_lora[0]}), so nothing was applied.")
    foreign = [k for k in state if k.split(".", 1)[0] not in models]
    if foreign:
        raise StudioError(f"The LoRA names layers this model does not have (e.g. {foreign[0]}), so nothing was applied.")
    for prefix, model in models.items():
        layers = dict(model.named_modules())
        pairs: dict[str, dict[str, torch.Tensor]] = {}
        for key, tensor in peft_keys(state, prefix).items():
            name, _, part = key.partition(".lora_")
            if part not in ("A.weight", "B.weight") or name not in layers:
                raise StudioError(f"The LoRA names layers this model does not have (e.g. {prefix}.{key}), so nothing was applied.")
            pairs.setdefault(name, {})[part[0]] = tensor
        for name, pair in pairs.items():
            check_pair(f"{prefix}.{name}", layers[name], pair)


def check_pair(name: str, layer: nn.Module, pair: dict[str, torch.Tensor]) -> None:
    if pair.keys() != {"A", "B"}:
        raise StudioError(f"The LoRA has only half of the weights of {name} (lora_A and lora_B go together), so nothing was applied.")
    expected = expected_shapes(layer, pair["A"].shape[0])
    if expected is None:
        raise StudioError(f"The LoRA adapts {name}, a {type(layer).__name__} LoRA cannot adapt, so nothing was applied.")
    for (part, tensor), shape in zip(pair.items(), expected):
        if tuple(tensor.shape) != shape:
            raise StudioError(
                f"The LoRA does not fit this model: {name}.lora_{part} is {tuple(tensor.shape)} where the model needs {shape}, so nothing was applied."
            )


@contextmanager
def applied(pipe: Any, path: Path, strength: float) -> Iterator[None]:
    """The pipeline with the LoRA at `strength` inside the block; exactly its base model again after it."""
    check_fits(path, {"unet": pipe.unet, "text_encoder": pipe.text_encoder})
    try:
        try:
            pipe.load_lora_weights(str(path), adapter_name=ADAPTER, use_safetensors=True, local_files_only=True)
        except (ValueError, RuntimeError, OSError) as exc:
            raise StudioError(f"diffusers could not load the LoRA ({str(exc).splitlines()[0][:200]}), so nothing was applied.") from None
        pipe.set_adapters([ADAPTER], adapter_weights=[strength])
        yield
    finally:
        pipe.unload_lora_weights()

