"""Where the loop's numbers go: the console, `metrics.jsonl`, and MLflow when it is reachable.

`metrics.jsonl` is always written (next to the checkpoints, which SageMaker syncs to S3), so a job
that cannot reach the tracking server still has its curve relayed into the same MLflow run.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from PIL import Image

log = logging.getLogger("core.training")


class MetricsSink:
    def __init__(self, jsonl: Path, run_id: str | None, flush_every: int = 10) -> None:
        self.jsonl = jsonl
        jsonl.parent.mkdir(parents=True, exist_ok=True)
        self.run_id = run_id
        self.flush_every = flush_every
        self.pending: list[Any] = []
        self.client = None
        if run_id:
            try:
                from core.tracking import get_tracking

                self.client = get_tracking().client
                self.client.get_run(run_id)
            except Exception as exc:  # an unreachable server must not stop training
                log.warning("MLflow is not reachable (%s); metrics go to %s only.", exc, jsonl)
                self.client = None

    def log(self, step: int, values: dict[str, float]) -> None:
        now = time.time()
        with self.jsonl.open("a") as f:
            f.write(json.dumps({"step": step, "time": now, **values}) + "\n")
        if self.client is not None:
            from mlflow.entities import Metric

            self.pending += [Metric(k, float(v), int(now * 1000), step) for k, v in values.items()]
            if len(self.pending) >= self.flush_every:
                self.flush()

    def flush(self) -> None:
        if self.client is not None and self.pending:
            try:
                for i in range(0, len(self.pending), 1000):
                    self.client.log_batch(self.run_id, metrics=self.pending[i : i + 1000])
            except Exception as exc:
                log.warning("Could not log metrics to MLflow: %s", exc)
            self.pending = []

    def params(self, params: dict[str, str]) -> None:
        if self.client is not None:
            from mlflow.entities import Param

            existing = self.client.get_run(self.run_id).data.params
            new = [Param(k, v) for k, v in params.items() if k not in existing]
            for i in range(0, len(new), 100):
                self.client.log_batch(self.run_id, params=new[i : i + 100])

    def tags(self, tags: dict[str, str]) -> None:
        if self.client is not None:
            for key, value in tags.items():
                self.client.set_tag(self.run_id, key, value)

    def image(self, image: Image.Image, key: str, step: int) -> None:
        if self.client is not None:
            self.client.log_image(self.run_id, image, key=key, step=step)

    def artifact_text(self, text: str, name: str) -> None:
        if self.client is not None:
            self.client.log_text(self.run_id, text, name)

    def artifacts(self, folder: Path, path: str) -> None:
        if self.client is not None:
            self.client.log_artifacts(self.run_id, str(folder), path)
