"""One strict base and one error describer for every config: the training and the pipeline config
refuse the same mistakes with sentences of the same shape."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import yaml
from pydantic import Field, ValidationError, field_validator

from core.config_base import StrictModel, describe_validation_error
from core.errors import StudioError
from core.training.config import build_config
from jobs.pipeline.config import parse_pipeline_config

BASES: dict[str, tuple[Callable[[dict[str, Any]], object], dict[str, Any], str]] = {
    # config kind: (how it is read, a valid minimal config, the word its sentences use)
    "training": (build_config, {"dataset": "digits@v1"}, "config"),
    "pipeline": (lambda data: parse_pipeline_config(yaml.safe_dump(data)), {"name": "p", "dataset": "digits"}, "pipeline"),
}
MISTAKES: dict[str, dict[str, tuple[dict[str, Any], str]]] = {
    "training": {
        "unknown key": ({"unet": {"stepz": 5}}, "The config key 'unet.stepz' is not known."),
        "wrong type": ({"seed": "soon"}, "The config value 'seed' is not valid: Input should be a valid integer, unable to parse string as an integer."),
        "failed validator": ({"preset": "finetune"}, "The config is not valid: preset 'finetune' needs base_model, a local model folder."),
    },
    "pipeline": {
        "unknown key": ({"export": {"alais": "x"}}, "The pipeline key 'export.alais' is not known."),
        "wrong type": ({"poll_seconds": "soon"}, "The pipeline value 'poll_seconds' is not valid: Input should be a valid number, unable to parse string as a number."),
        "failed validator": ({"sweep": {"seed": []}}, "The pipeline is not valid: every sweep key needs at least one value."),
    },
}


@pytest.mark.parametrize("mistake", ["unknown key", "wrong type", "failed validator"])
@pytest.mark.parametrize("kind", ["training", "pipeline"])
def test_both_configs_describe_a_mistake_alike(kind: str, mistake: str) -> None:
    read, valid, _ = BASES[kind]
    change, expected = MISTAKES[kind][mistake]
    read(valid)  # the base itself is fine
    with pytest.raises(StudioError) as caught:
        read({**valid, **change})
    assert str(caught.value) == expected
    assert "Value error" not in str(caught.value)


class Thing(StrictModel):
    side: int = 8
    labels: list[str] = Field(default_factory=list)

    @field_validator("side")
    @classmethod
    def _even(cls, value: int) -> int:
        if value % 2:
            raise ValueError("must be even")
        return value


def test_one_sentence_per_problem_with_a_dotted_location() -> None:
    with pytest.raises(ValidationError) as caught:
        Thing.model_validate({"side": 3, "labels": ["cat", 7], "colour": "red"})
    assert describe_validation_error(caught.value, "thing") == (
        "The thing value 'side' is not valid: must be even. "
        "The thing value 'labels.1' is not valid: Input should be a valid string. "
        "The thing key 'colour' is not known."
    )


def test_assignments_are_validated_too() -> None:
    thing = Thing()
    with pytest.raises(ValidationError):
        thing.side = 5
