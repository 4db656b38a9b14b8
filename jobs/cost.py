"""A SageMaker cost estimate before launch: price × instances × hours, from the shipped price table."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel

PRICES = Path(__file__).with_name("prices.json")


@lru_cache(maxsize=1)
def price_table() -> dict[str, Any]:
    return json.loads(PRICES.read_text())


@dataclass(frozen=True)
class CostEstimate:
    on_demand_usd: float | None
    spot_usd: float | None  # an estimate: spot prices move and savings vary by region and hour
    price_date: str


def estimate(instance_type: str, count: int, hours: float, spot: bool) -> CostEstimate:
    table = price_table()
    price = table["usd_per_hour"].get(instance_type)
    if price is None:
        return CostEstimate(None, None, table["date"])
    on_demand = price * count * hours
    return CostEstimate(on_demand, on_demand * (1 - table["spot_savings"]) if spot else None, table["date"])


# Approximate speed of each instance relative to one CPU thread of a recent x86 server (what a local
# CPU estimate measures by default), for the small models this studio trains, and each instance's
# GPU memory (per GPU, GiB). Rough: small UNets leave big GPUs underused, so speed grows far less
# than FLOPS; multi-GPU types assume DDP across their GPUs.
SPEED_DATE = "2026-12-02"
SPEED_NOTE = f"approximate, as of {SPEED_DATE}"
INSTANCE_SPEED: dict[str, tuple[float, int]] = {
    "ml.g4dn.xlarge": (12.0, 16),
    "ml.g4dn.12xlarge": (40.0, 16),
    "ml.g5.xlarge": (25.0, 24),
    "ml.g5.2xlarge": (25.0, 24),
    "ml.g5.12xlarge": (80.0, 24),
    "ml.g5.48xlarge": (150.0, 24),
    "ml.g6.xlarge": (20.0, 24),
    "ml.g6.12xlarge": (65.0, 24),
    "ml.p3.2xlarge": (22.0, 16),
    "ml.p4d.24xlarge": (250.0, 40),
    "ml.p5.48xlarge": (400.0, 80),
}
# Billed time outside the training itself: pulling the image and downloading the data channel.
SAGEMAKER_STARTUP_S = 240.0
SCALING = 0.9  # DDP's efficiency per added instance


class CloudEstimate(BaseModel):
    """A run's time and cost on SageMaker, scaled from a local measurement."""

    instance_type: str
    instance_count: int
    relative_speed: float | None  # vs the local measurement; None when the table lacks the type
    gpu_memory_mb: float | None
    seconds: float | None
    on_demand_usd: float | None
    spot_usd: float | None
    price_date: str
    speed_note: str = SPEED_NOTE


def cloud_estimate(local_seconds: float, measured_on_gpu: bool, instance_type: str, count: int, spot: bool) -> CloudEstimate:
    """`local_seconds` measured here, scaled by the instance's relative speed, priced from the table.
    Measured on a GPU, the time is taken as it is: the table compares GPUs with a CPU."""
    speed, gpu_gb = INSTANCE_SPEED.get(instance_type, (None, None))
    if speed is None:
        return CloudEstimate(instance_type=instance_type, instance_count=count, relative_speed=None, gpu_memory_mb=None,
                             seconds=None, on_demand_usd=None, spot_usd=None, price_date=price_table()["date"])
    speed = 1.0 if measured_on_gpu else speed
    seconds = SAGEMAKER_STARTUP_S + local_seconds / (speed * (1 + SCALING * (count - 1)))
    cost = estimate(instance_type, count, seconds / 3600, spot)
    return CloudEstimate(instance_type=instance_type, instance_count=count, relative_speed=speed, gpu_memory_mb=gpu_gb * 1024.0,
                         seconds=seconds, on_demand_usd=cost.on_demand_usd, spot_usd=cost.spot_usd, price_date=cost.price_date)
