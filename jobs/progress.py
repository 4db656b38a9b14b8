"""What a job has done so far, read from the files its training process writes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.db import Job


@dataclass
class Progress:
    stage: str = "vae"
    step: int = 0
    total: int = 0
    fraction: float = 0.0
    metrics: list[dict[str, Any]] = field(default_factory=list)
    latest_sample: Path | None = None


def output_dir(job: Job) -> Path:
    return Path(job.config.get("output_dir") or Path(job.log_path or ".").parent / "output")


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # the last line may be half-written
    return rows


def job_progress(job: Job) -> Progress:
    """Stage, step and share done across all stages, the metric rows, and the newest sample grid."""
    config = job.config
    stages = ["vae", "unet"] if config.get("stage", "all") == "all" else [config.get("stage", "unet")]
    totals = {s: int(config.get(s, {}).get("steps", 0)) for s in stages}
    out = output_dir(job)
    checkpoints = Path(config.get("checkpoint_dir") or out / "checkpoints")
    rows = read_metrics(checkpoints / "metrics.jsonl")
    stage, step = stages[0], 0
    for row in rows:
        if "vae_loss" in row:
            stage, step = "vae", row["step"]
        elif "loss" in row:
            stage, step = "unet", row["step"]
    done = sum(totals[s] for s in stages[: stages.index(stage)]) + step if stage in stages else 0
    total_all = sum(totals.values()) or 1
    samples = sorted((out / "samples").glob("step-*.png"))
    return Progress(stage, step, totals.get(stage, 0), min(1.0, done / total_all), rows, samples[-1] if samples else None)
