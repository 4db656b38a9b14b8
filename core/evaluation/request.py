"""What an evaluation is asked to do. Light pydantic models: the training config embeds the settings
(`evaluate:`, run when training succeeds) and the CLI and pages build requests without torch."""

from __future__ import annotations

from pydantic import Field

from core.config_base import StrictModel
from core.evaluation.features import FeatureName


class EvalSettings(StrictModel):
    n: int = Field(1000, ge=10, le=100_000, description="Generated images per guidance scale.")
    guidance: list[float] = Field(default_factory=lambda: [1.0, 2.0, 4.0], min_length=1)
    features: FeatureName = "evaluator"
    steps: int = Field(25, ge=1, le=200, description="Sampling steps.")


class EvalRequest(EvalSettings):
    model: str = Field(description="An MLflow run id or a model folder.")
    dataset: str = Field(description="name@version (or name for the newest).")
    seed: int = 0
