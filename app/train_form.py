"""The Train form as a model: its fields, and the mapping to and from a training config.

`from_config` fills the form from a recipe, a job's config or a cloned run's; `to_config` turns it
back into a `TrainConfig`. Whatever the form does not show (warmup, caption dropout, sampling, a
cloned SageMaker job's VPC…) rides along in `base`, so it comes through unchanged. The Train page
only draws these fields, one widget per field, keyed `train.<field>`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from core.training.config import TrainConfig, build_config
from core.training.recipes import DEMO
from jobs.sagemaker import SageMakerLaunch

# Keys of a config that belong to the run it made, not to a new one.
RUN_KEYS = frozenset({"dataset", "data_dir", "output_dir", "checkpoint_dir", "mlflow_run_id", "run_name"})
# Keys a job's config holds beside the TrainConfig: how it was launched.
LAUNCH_KEYS = frozenset({"processes", "sagemaker"})
EVALUATE_N = 200  # images per guidance when the form turns evaluation on: a quick check, not the full 1,000


class TrainForm(BaseModel):
    """The Train form's values. Zero stands for "off" where the config has None (EMA, min-SNR, LoRA)."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = ""
    version: str = ""
    preset: str
    stage: str
    seed: int
    base_model: str
    vae_steps: int
    unet_steps: int
    batch_size: int
    lr: float
    vae_batch_size: int
    vae_lr: float
    train_text: bool
    ema: float
    min_snr: float
    noise_offset: float
    v_prediction: bool
    mixed_precision: str
    grad_checkpointing: bool
    lora_rank: int
    checkpoint_every: int
    validate_every: int
    sample_every: int
    prompts: str
    zero_stage: Literal["off", "0", "1", "2"]
    offload: bool
    evaluate: bool
    evaluate_n: int
    # Where it runs. Only a job's config sets these; a recipe or a run leaves them as they are.
    backend: Literal["local", "sagemaker"] = "local"
    processes: int = 1
    instance_type: str = "ml.g5.2xlarge"
    instance_count: int = 1
    max_hours: float = 4.0
    spot: bool = True
    role: str = ""
    # The config the form was filled from, as a job holds it (SageMaker options under `sagemaker`).
    base: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def default(cls) -> TrainForm:
        """A fresh form: the demo recipe, so one click on a fresh studio trains the digits model."""
        return cls.from_config(DEMO)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> TrainForm:
        """The form filled from a recipe, a cloned run's config or a job's (which adds its launch)."""
        train = build_config({k: v for k, v in config.items() if k not in LAUNCH_KEYS})
        unet, vae, ds = train.unet, train.vae, train.deepspeed
        name, _, version = (train.dataset or "").partition("@")
        base = train.model_dump(mode="json", exclude=set(RUN_KEYS))
        launch: dict[str, Any] = {}
        if "sagemaker" in config:
            cloud = {k: v for k, v in config["sagemaker"].items() if k in SageMakerLaunch.model_fields}  # not its S3 URIs
            base["sagemaker"] = cloud
            launch = {"backend": "sagemaker", "instance_type": cloud["instance_type"], "instance_count": cloud["instance_count"],
                      "max_hours": cloud["max_run_hours"], "spot": cloud["spot"], "role": cloud.get("role") or ""}
        elif "processes" in config:
            launch = {"backend": "local", "processes": config["processes"]}
        return cls(
            dataset=name,
            version=version,
            preset=train.preset,
            stage=train.stage,
            seed=train.seed,
            base_model=str(train.base_model or ""),
            vae_steps=vae.steps,
            unet_steps=unet.steps,
            batch_size=unet.batch_size,
            lr=unet.lr,
            vae_batch_size=vae.batch_size,
            vae_lr=vae.lr,
            train_text=unet.train_text_encoder,
            ema=unet.ema_decay or 0.0,
            min_snr=unet.min_snr_gamma or 0.0,
            noise_offset=unet.noise_offset,
            v_prediction=unet.prediction_type == "v_prediction",
            mixed_precision=train.mixed_precision,
            grad_checkpointing=train.gradient_checkpointing,
            lora_rank=unet.lora_rank or 0,
            checkpoint_every=train.checkpoint_every,
            validate_every=train.validate_every,
            sample_every=train.sample_every,
            prompts="\n".join(train.validation_prompts),
            zero_stage=str(ds.zero_stage) if ds else "off",
            offload=bool(ds and ds.offload_optimizer),
            evaluate=train.evaluate is not None,
            evaluate_n=train.evaluate.n if train.evaluate else EVALUATE_N,
            base=base,
            **launch,
        )

    def to_config(self) -> TrainConfig:
        """The form as a validated TrainConfig over `base`; a bad value raises one StudioError sentence."""
        kept = {k: v for k, v in self.base.items() if k not in LAUNCH_KEYS}
        return build_config(
            {
                **kept,
                "dataset": f"{self.dataset}@{self.version}" if self.version else self.dataset or None,
                "preset": self.preset,
                "stage": self.stage,
                "seed": self.seed,
                "base_model": self.base_model or None,
                "vae": {**kept.get("vae", {}), "steps": self.vae_steps, "batch_size": self.vae_batch_size, "lr": self.vae_lr},
                "unet": {
                    **kept.get("unet", {}),
                    "steps": self.unet_steps,
                    "batch_size": self.batch_size,
                    "lr": self.lr,
                    "train_text_encoder": self.train_text,
                    "ema_decay": self.ema or None,
                    "min_snr_gamma": self.min_snr or None,
                    "noise_offset": self.noise_offset,
                    "prediction_type": "v_prediction" if self.v_prediction else "epsilon",
                    "lora_rank": self.lora_rank or None,
                },
                "mixed_precision": self.mixed_precision,
                "gradient_checkpointing": self.grad_checkpointing,
                "checkpoint_every": self.checkpoint_every,
                "validate_every": self.validate_every,
                "sample_every": self.sample_every,
                "validation_prompts": [p.strip() for p in self.prompts.splitlines() if p.strip()],
                "deepspeed": None if self.zero_stage == "off" else {"zero_stage": int(self.zero_stage), "offload_optimizer": self.offload},
                "evaluate": {**(kept.get("evaluate") or {}), "n": self.evaluate_n} if self.evaluate else None,
            }
        )

    def sagemaker_options(self) -> dict[str, Any] | None:
        """The `jobs.sagemaker.SageMakerLaunch` options, over a cloned job's; None for a local launch."""
        if self.backend != "sagemaker":
            return None
        options = {**self.base.get("sagemaker", {}), "instance_type": self.instance_type, "instance_count": self.instance_count,
                   "max_run_hours": self.max_hours, "spot": self.spot, "role": self.role}
        if not self.role:
            del options["role"]  # the launch falls back to STUDIO_SAGEMAKER_ROLE
        return options
