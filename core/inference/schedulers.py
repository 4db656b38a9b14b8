"""The sampling schedulers users pick by name; each is built from the model's training scheduler."""

from __future__ import annotations

from typing import Any, Literal

from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

SchedulerName = Literal["ddim", "euler", "dpmpp"]
SCHEDULERS: dict[str, Any] = {
    "ddim": DDIMScheduler,
    "euler": EulerDiscreteScheduler,
    "dpmpp": DPMSolverMultistepScheduler,
}


def make_scheduler(name: SchedulerName, train_config: dict[str, Any]):  # type: ignore[no-untyped-def]
    extra = {"algorithm_type": "dpmsolver++"} if name == "dpmpp" else {}
    config = {k: v for k, v in dict(train_config).items() if not k.startswith("_")}
    config["timestep_spacing"] = "trailing"
    config["steps_offset"] = 1
    return SCHEDULERS[name].from_config(config, **extra)
