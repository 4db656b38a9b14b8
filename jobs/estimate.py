"""The estimate before a launch: `python -m core.training.estimate` in a process of its own, the
SageMaker time and cost from `jobs.cost`, and one sentence when the run would not fit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pydantic import BaseModel

from core.errors import StudioError
from core.training.config import TrainConfig
from core.training.estimate import RunEstimate, memory_refusal
from jobs.cost import CloudEstimate, cloud_estimate

REPO = Path(__file__).resolve().parent.parent
TIMEOUT_S = 600


class LaunchEstimate(BaseModel):
    run: RunEstimate  # measured on this machine
    sagemaker: CloudEstimate | None = None
    refusal: str | None = None  # why the launch is refused; None when it fits

    @property
    def total_seconds(self) -> float | None:
        """The run's expected wall time where it will run."""
        return self.sagemaker.seconds if self.sagemaker else self.run.total_seconds

    def summary(self) -> str:
        """A few lines for the CLI: memory, seconds per step, total time, cost, and the refusal."""
        run = self.run
        steps = ", ".join(f"{s.name} {s.seconds_per_step:.3f} s/step × {s.steps}" for s in run.stages)
        lines = [f"Peak memory about {run.peak_memory_mb:,.0f} MB of {run.device_memory_mb:,.0f} MB ({run.memory_measure} on this {run.device}).",
                 f"Measured here: {steps}; about {minutes(run.total_seconds)} in all, checks and checkpoints included."]
        cloud = self.sagemaker
        if cloud and cloud.seconds is not None:
            spot = f", with spot about ${cloud.spot_usd:,.2f}" if cloud.spot_usd is not None else ""
            lines.append(f"On {cloud.instance_count} × {cloud.instance_type}: about {minutes(cloud.seconds)}, ${cloud.on_demand_usd:,.2f} on demand{spot} "
                         f"(speed {cloud.speed_note}; prices of {cloud.price_date}).")
        elif cloud:
            lines.append(f"No speed or price for {cloud.instance_type} in the shipped tables.")
        if self.refusal:
            lines.append(f"Refused: {self.refusal}")
        return "\n".join(lines)

    def tags(self) -> dict[str, float]:
        """What the run records (as `estimate.<key>` tags) to compare with its real duration."""
        values = {"peak_memory_mb": self.run.peak_memory_mb, **{f"seconds_per_step.{s.name}": s.seconds_per_step for s in self.run.stages}}
        if self.total_seconds is not None:
            values["total_seconds"] = self.total_seconds
        if self.sagemaker and self.sagemaker.on_demand_usd is not None:
            values["on_demand_usd"] = self.sagemaker.on_demand_usd
        return values


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def measure(config: TrainConfig) -> RunEstimate:
    """A few real steps of `config` in a child process; a failure is one sentence."""
    try:
        proc = subprocess.run([sys.executable, "-m", "core.training.estimate"], input=config.model_dump_json(), capture_output=True,
                              text=True, cwd=REPO, timeout=TIMEOUT_S, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    except subprocess.TimeoutExpired:
        raise StudioError(f"The estimate took over {TIMEOUT_S // 60} minutes; lower the batch sizes or pick a smaller preset.") from None
    if proc.returncode != 0:
        errors = [line[len("error: "):] for line in proc.stderr.splitlines() if line.startswith("error: ")]
        if errors:
            raise StudioError(errors[-1])
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise StudioError(f"The estimate failed: {tail[:300]}")
    return RunEstimate.model_validate_json(proc.stdout.strip().splitlines()[-1])


def estimate_launch(config: TrainConfig, sagemaker: dict | None = None, memory_limit_mb: float | None = None) -> LaunchEstimate:
    """The estimate of a launch; `sagemaker` holds the cloud options of a SageMaker launch.
    `memory_limit_mb` overrides the device's memory (the GPU's, the instance GPU's, or free RAM)."""
    run = measure(config)
    if not sagemaker:
        return LaunchEstimate(run=run, refusal=memory_refusal(run, memory_limit_mb))
    cloud = cloud_estimate(run.total_seconds, run.device == "cuda", sagemaker["instance_type"], sagemaker.get("instance_count", 1), sagemaker.get("spot", True))
    # On the instance only the model, its optimizer and the batches sit in GPU memory: the peak over the baseline.
    limit = memory_limit_mb if memory_limit_mb is not None else cloud.gpu_memory_mb
    on_gpu = run.model_copy(update={"peak_memory_mb": run.model_memory_mb, "device": "cuda"})
    return LaunchEstimate(run=run, sagemaker=cloud, refusal=memory_refusal(on_gpu, limit) if limit is not None else None)
