"""Webhooks when a job ends: one POST per job that succeeds, fails or is stopped, to every URL in
STUDIO_WEBHOOKS. Slack incoming-webhook URLs get Slack's shape (`{"text": …}`); any other URL gets
the generic JSON below (which also carries `text`). Delivery runs on its own thread, is retried
with backoff, and never fails or delays the job: a receiver that stays down is logged and skipped.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from core.db import Job
from core.settings import get_settings

log = logging.getLogger(__name__)
BACKOFF = (1.0, 2.0, 4.0)  # seconds before each retry: four attempts in about 7 s
TIMEOUT = 5.0
ICONS = {"succeeded": "✅", "failed": "❌", "stopped": "⏹️"}
_deliveries: list[threading.Thread] = []


def payload(job: Job) -> dict[str, Any]:
    run = job.config.get("run_name") or job.mlflow_run_id or job.id
    text = f"{ICONS.get(job.status, '')} Job {job.id} ({run}) {job.status}" + (f": {job.failure_reason}" if job.failure_reason and job.status != "succeeded" else ".")
    return {
        "event": f"job.{job.status}",
        "text": text.strip(),
        "job": {
            "id": job.id,
            "status": job.status,
            "backend": job.backend,
            "dataset": job.dataset,
            "mlflow_run_id": job.mlflow_run_id,
            "owner": job.owner,
            "failure_reason": job.failure_reason,
            "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        },
    }


def is_slack(url: str) -> bool:
    return (urlsplit(url).hostname or "").lower() == "hooks.slack.com"


def post(url: str, body: dict[str, Any]) -> None:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
        response.read()


def deliver(url: str, body: dict[str, Any]) -> bool:
    """POST `body` to `url`, retrying on any failure; whether it arrived."""
    for attempt, pause in enumerate((0.0, *BACKOFF)):
        time.sleep(pause)
        try:
            post(url, {"text": body["text"]} if is_slack(url) else body)
            return True
        except Exception as exc:  # a webhook never breaks a job
            log.warning("Webhook %s attempt %d failed: %s", urlsplit(url).hostname, attempt + 1, exc)
    return False


def job_ended(job: Job) -> None:
    """Tell every webhook that `job` (its row in a final state) ended, on a thread of its own.

    Not a daemon thread: a supervisor or CLI process that ends the job waits for delivery."""
    urls = get_settings().webhooks
    if not urls:
        return
    body = payload(job)
    thread = threading.Thread(target=lambda: [deliver(url, body) for url in urls], name=f"webhooks-{job.id}")
    _deliveries.append(thread)
    thread.start()


def wait_for_deliveries(timeout: float = 60.0) -> None:
    """Block until the webhooks started so far were delivered or given up on."""
    while _deliveries:
        _deliveries.pop().join(timeout)
