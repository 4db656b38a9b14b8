"""A short summary of the newest MLflow runs, for Home."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from core.tracking import get_tracking


@dataclass
class RunSummary:
    run_id: str
    name: str
    status: str
    dataset: str
    last_loss: float | None
    val_loss: float | None
    started: datetime


def recent_runs(limit: int = 10) -> list[RunSummary]:
    tracking = get_tracking()
    runs = tracking.client.search_runs([tracking.experiment_id], order_by=["attributes.start_time DESC"], max_results=limit)
    return [
        RunSummary(
            run_id=r.info.run_id,
            name=r.info.run_name or r.info.run_id,
            status=r.info.status,
            dataset=r.data.tags.get("dataset", ""),
            last_loss=r.data.metrics.get("loss"),
            val_loss=r.data.metrics.get("val_loss"),
            started=datetime.fromtimestamp(r.info.start_time / 1000, tz=timezone.utc),
        )
        for r in runs
    ]
