"""A SageMaker cost estimate before launch: price × instances × hours, from the shipped price table."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

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
