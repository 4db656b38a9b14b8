"""The pipeline's YAML config: which dataset, where to train, what to sweep, how to pick and ship.

Only pydantic, PyYAML and the training config's schema are imported here, so an Airflow scheduler
can validate a pipeline while parsing its DAG without loading torch or MLflow.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from core.config_base import StrictModel, describe_validation_error
from core.errors import StudioError

# In the order they run; each is recorded in the catalog with its inputs and outputs.
STEPS = ("dataset", "train", "wait", "select", "fetch", "export", "register")
MAX_TRIALS = 16


class SelectConfig(StrictModel):
    metric: str = Field("val_loss", description="An MLflow metric every run logs (its latest value counts).")
    mode: Literal["min", "max"] = "min"


class ExportConfig(StrictModel):
    model: str | None = Field(None, description="Registered model name; default '<pipeline name>-onnx'.")
    alias: str = Field("champion", pattern=r"^[A-Za-z_][\w-]*$", description="Alias set on the new version.")
    fp16: bool = False


class PipelineConfig(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="Re-running a name resumes it.")
    dataset: str = Field(description="name@version, or a bare name for its newest version.")
    push_to_s3: bool = Field(False, description="Push the version to STUDIO_S3_BUCKET (always, for SageMaker).")
    backend: Literal["local", "sagemaker"] = "local"
    processes: int = Field(1, ge=1, le=64, description="Local processes per training (torchrun when > 1).")
    sagemaker: dict[str, Any] = Field(default_factory=dict, description="SageMaker launch options.")
    train: dict[str, Any] = Field(default_factory=dict, description="The base training config.")
    overrides: list[str] = Field(default_factory=list, description="key=value overrides of the base config.")
    sweep: dict[str, list[Any]] = Field(default_factory=dict, description="key: [values]; one training per combination.")
    select: SelectConfig = SelectConfig()
    export: ExportConfig = ExportConfig()
    poll_seconds: float = Field(5.0, gt=0, le=600, description="How often the wait step looks at the jobs.")

    @model_validator(mode="after")
    def _check(self) -> PipelineConfig:
        if "dataset" in self.train or "data_dir" in self.train:
            raise ValueError("give the dataset at the top level ('dataset:'), not inside 'train:'")
        if any(not values for values in self.sweep.values()):
            raise ValueError("every sweep key needs at least one value")
        if len(self.trials()) > MAX_TRIALS:
            raise ValueError(f"the sweep makes {len(self.trials())} trainings; at most {MAX_TRIALS} are allowed")
        return self

    @property
    def pushes(self) -> bool:
        return self.push_to_s3 or self.backend == "sagemaker"

    @property
    def registered_model(self) -> str:
        return self.export.model or f"{self.name}-onnx"

    def trials(self) -> list[dict[str, Any]]:
        """One `{key: value}` per combination of the sweep's values (one empty trial without a sweep)."""
        keys = list(self.sweep)
        return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*self.sweep.values())]

    def trial_overrides(self, trial: dict[str, Any]) -> list[str]:
        # JSON is YAML, so lists and numbers survive the training config's `key=value` parsing.
        return [*self.overrides, *(f"{key}={json.dumps(value)}" for key, value in trial.items())]


def parse_pipeline_config(text: str, source: str = "the pipeline config") -> PipelineConfig:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise StudioError(f"{source} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise StudioError(f"{source} must hold a mapping of keys to values.")
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise StudioError(describe_validation_error(exc, "pipeline")) from None


def load_pipeline_config(path: Path) -> PipelineConfig:
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise StudioError(f"The pipeline config {path} does not exist.") from None
    return parse_pipeline_config(text, f"The pipeline config {path}")
