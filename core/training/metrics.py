"""Where the loop's numbers go: the console, `metrics.jsonl`, and MLflow when it answers.

`metrics.jsonl` is always written (next to the checkpoints, which SageMaker syncs to S3), so a job
that cannot reach the tracking server still has its curve relayed into the same MLflow run.

A tracking server that is slow or down never ends a training: every MLflow call goes through the
run's outbox (core/tracking/outbox.py), is tried at once, and on failure stays on disk while the
sink backs off; it is sent with the next successful flush, or by the supervisor when the job ends.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from PIL import Image

from core.tracking.outbox import Outbox

log = logging.getLogger("core.training")

# MLflow's defaults retry a request for minutes; a training step must not wait that long. The outbox
# is the retry: one try per flush, then the sink backs off. The supervisor's replay after the job
# (a process of its own) keeps MLflow's patient defaults, for a large model upload over a slow link.
QUICK_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
BACKOFF_S, MAX_BACKOFF_S = 5.0, 300.0  # after a failed delivery, wait this long (doubling) before the next try


class MetricsSink:
    def __init__(self, jsonl: Path, run_id: str | None, flush_every: int = 10) -> None:
        self.jsonl = jsonl
        jsonl.parent.mkdir(parents=True, exist_ok=True)
        self.run_id = run_id
        self.flush_every = flush_every
        self.unsent = 0
        self.failures = 0
        self.retry_at = 0.0
        self.outbox = Outbox(jsonl) if run_id else None
        if run_id:
            for key, value in QUICK_HTTP.items():
                os.environ.setdefault(key, value)
            self.flush()  # also sends what an earlier attempt of this job left undelivered

    def log(self, step: int, values: dict[str, float]) -> None:
        with self.jsonl.open("a") as f:
            f.write(json.dumps({"step": step, "time": time.time(), **values}) + "\n")
        self.unsent += 1
        if self.unsent >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        """Send what is pending, unless MLflow failed a moment ago (then it waits for a later flush)."""
        if self.outbox is None or self.run_id is None or time.monotonic() < self.retry_at:
            return
        try:
            self.outbox.deliver(self.run_id)
        except Exception as exc:  # down, slow or refusing: whatever it is, the training goes on
            self.failures += 1
            self.retry_at = time.monotonic() + min(MAX_BACKOFF_S, BACKOFF_S * 2 ** (self.failures - 1))
            if self.failures == 1:
                log.warning("MLflow did not take the run's data (%s); it waits in %s and is sent once MLflow answers.", exc, self.outbox.folder)
            return
        if self.failures:
            log.info("MLflow answers again; everything it missed has been sent.")
        self.unsent, self.failures = 0, 0

    def _queue(self, call: str, **args: Any) -> None:
        if self.outbox is not None:
            self.outbox.add(call, **args)
            self.flush()

    def params(self, params: dict[str, str]) -> None:
        self._queue("params", params=params)

    def tags(self, tags: dict[str, str]) -> None:
        self._queue("tags", tags=tags)

    def image(self, image: Image.Image, key: str, step: int) -> None:
        if self.outbox is not None:
            self.outbox.add_image(image, key, step)
            self.flush()

    def artifact_text(self, text: str, name: str) -> None:
        self._queue("text", text=text, name=name)

    def artifacts(self, folder: Path, path: str) -> None:
        self._queue("artifacts", folder=str(folder.resolve()), path=path)
