"""The training config: a plain pydantic object, read from YAML with `key.sub=value` overrides.

Unknown keys and out-of-range values are refused with one sentence naming the key.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from core.config_base import StrictModel, describe_validation_error
from core.errors import StudioError
from core.evaluation.request import EvalSettings


class StageConfig(StrictModel):
    steps: int = Field(ge=0, le=10_000_000)
    batch_size: int = Field(32, ge=1, le=4096)
    lr: float = Field(1e-3, gt=0, le=1)
    lr_schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_steps: int = Field(20, ge=0)
    weight_decay: float = Field(0.0, ge=0, le=1)
    grad_accum: int = Field(1, ge=1, le=1024)
    max_grad_norm: float | None = Field(1.0, gt=0)


class VaeConfig(StageConfig):
    steps: int = Field(650, ge=0, le=10_000_000)
    kl_weight: float = Field(1e-6, ge=0)


class UnetConfig(StageConfig):
    steps: int = Field(1040, ge=0, le=10_000_000)
    prediction_type: Literal["epsilon", "v_prediction"] = "epsilon"
    caption_dropout: float = Field(0.1, ge=0, le=1, description="Share of empty captions, for CFG.")
    min_snr_gamma: float | None = Field(5.0, gt=0)
    noise_offset: float = Field(0.0, ge=0, le=1)
    ema_decay: float | None = Field(None, gt=0, lt=1)
    train_text_encoder: bool = False
    lora_rank: int | None = Field(None, ge=1, le=512, description="Train LoRA adapters on the UNet only.")


class DeepSpeedConfig(StrictModel):
    zero_stage: int = Field(2, ge=0, le=3)
    offload_optimizer: bool = False

    @field_validator("zero_stage")
    @classmethod
    def _refuse_zero3(cls, stage: int) -> int:
        # ZeRO-3 shards the weights themselves, but validation, samples and checkpoints use them whole.
        if stage == 3:
            raise ValueError("ZeRO stage 3 is not supported, as sampling and checkpoints need the whole model on every GPU; use stage 2, with offload_optimizer to save memory")
        return stage


class TrainConfig(StrictModel):
    preset: Literal["tiny", "small", "base", "finetune"] = "tiny"
    base_model: Path | None = Field(None, description="Local Stable-Diffusion-layout folder (finetune).")
    stage: Literal["all", "vae", "unet"] = "all"
    dataset: str | None = Field(None, description="name@version from the catalog.")
    data_dir: Path | None = Field(None, description="A dataset-version folder (manifest.jsonl + images/).")
    output_dir: Path = Path("studio-data/outputs/run")
    checkpoint_dir: Path | None = Field(None, description="Default: output_dir/checkpoints.")
    seed: int = 0
    vae: VaeConfig = VaeConfig()
    unet: UnetConfig = UnetConfig()
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    gradient_checkpointing: bool = False
    cache_latents: bool = Field(True, description="Encode the train split once, when the run sees at least that many images.")
    log_every: int = Field(10, ge=1)
    validate_every: int = Field(100, ge=1)
    sample_every: int = Field(250, ge=1)
    checkpoint_every: int = Field(200, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    validation_prompts: list[str] = Field(default_factory=list, description="Default: the dataset's captions.")
    sample_images_per_prompt: int = Field(4, ge=1, le=16)
    sample_steps: int = Field(25, ge=1, le=1000)
    sample_guidance: float = Field(3.0, ge=0, le=30)
    sample_seed: int = 1234
    device: Literal["auto", "cpu", "cuda"] = "auto"
    deepspeed: DeepSpeedConfig | None = None
    evaluate: EvalSettings | None = Field(None, description="An evaluation job against the dataset's val split, started when training succeeds.")
    mlflow_run_id: str | None = None
    run_name: str | None = None

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.preset == "finetune" and self.base_model is None:
            raise ValueError("preset 'finetune' needs base_model, a local model folder")
        if self.dataset is None and self.data_dir is None:
            raise ValueError("give a dataset (name@version) or a data_dir")
        if self.evaluate is not None and self.dataset is None:
            raise ValueError("evaluate needs a catalog dataset (name@version) to compare with")
        if self.unet.lora_rank and self.preset != "finetune":
            raise ValueError("LoRA (unet.lora_rank) is for fine-tuning; use preset 'finetune'")
        return self

    @property
    def checkpoints(self) -> Path:
        return self.checkpoint_dir or self.output_dir / "checkpoints"

    def stages(self) -> list[str]:
        return ["vae", "unet"] if self.stage == "all" else [self.stage]


def set_override(data: dict[str, Any], assignment: str) -> None:
    """Apply `a.b=value` to nested dicts; the value is parsed as YAML (numbers, booleans, lists)."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key:
        raise StudioError(f"The override {assignment!r} is not of the form key=value.")
    *parents, leaf = key.strip().split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise StudioError(f"The config key '{key}' is not a section.")
    node[leaf] = yaml.safe_load(raw) if raw.strip() else None


def build_config(data: dict[str, Any] | None = None, overrides: list[str] = ()) -> TrainConfig:  # type: ignore[assignment]
    data = copy.deepcopy(data or {})  # overrides must not reach into the caller's (a recipe's) sections
    for assignment in overrides:
        set_override(data, assignment)
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise StudioError(describe_validation_error(exc, "config")) from None


def load_config(path: Path | None, overrides: list[str] = ()) -> TrainConfig:  # type: ignore[assignment]
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise StudioError(f"The config file {path} does not exist.") from None
        except yaml.YAMLError as exc:
            raise StudioError(f"The config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise StudioError(f"The config file {path} must hold a mapping of keys to values.")
        data = loaded or {}
    return build_config(data, overrides)
