"""A past run's training config, rebuilt from its MLflow params, to clone it into a new training."""

from __future__ import annotations

import ast
from typing import Any

from core.errors import StudioError
from core.tracking.runs import get_run
from core.training.config import TrainConfig, build_config

NOT_CLONED = {"output_dir", "checkpoint_dir", "mlflow_run_id"}  # where and as what the old run ran


def _parse_param(value: str) -> Any:
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


def run_config(run_id: str) -> dict[str, Any]:
    """The run's training config as the Train form takes it (flattened params nested again)."""
    params = get_run(run_id).data.params
    if "preset" not in params:
        raise StudioError(f"The run {run_id} has no training parameters to clone yet.")
    nested: dict[str, Any] = {}
    for key, value in params.items():
        *parents, leaf = key.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = _parse_param(value)
    known = {k: v for k, v in nested.items() if k in TrainConfig.model_fields and k not in NOT_CLONED}
    return build_config(known).model_dump(mode="json", exclude=NOT_CLONED)
