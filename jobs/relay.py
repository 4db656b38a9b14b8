"""Into MLflow, what a training could not log itself: a cloud job's metrics, a local job's leftovers.

A SageMaker job that cannot reach the tracking server still appends `metrics.jsonl` to
`/opt/ml/checkpoints`, which SageMaker syncs to the checkpoint S3 URI. Each relay call copies the
file to the job's local output folder (where the Train page reads progress) and delivers the rows
MLflow has not taken yet into the same MLflow run, so the chart looks the same whichever way the
metrics came. A local job whose tracking server was slow or down kept what it could not send in
the same outbox, which the supervisor delivers when the job ends. One delivery path for both:
core/tracking/outbox.py, which records how far MLflow has taken the rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.db import Job
from core.errors import StudioError
from core.files import atomic_write_text
from core.tracking.outbox import Outbox
from jobs.progress import output_dir
from jobs.records import get_job

METRICS_FILE = "metrics.jsonl"


def split_uri(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key.rstrip("/")


def metrics_file(job: Job) -> Path:
    """Where the job's training appends (for a cloud job: where the relay keeps its copy of) metrics.jsonl."""
    return Path(job.config.get("checkpoint_dir") or output_dir(job) / "checkpoints") / METRICS_FILE


def deliver_pending(job: Job) -> int:
    """Send the job's MLflow run what its training could not (the server was slow or down); rows sent."""
    return Outbox(metrics_file(job)).deliver(job.mlflow_run_id) if job.mlflow_run_id else 0


def relay_metrics(job_id: str, s3: Any = None) -> int:
    """Copy the job's metrics.jsonl from S3 and deliver what MLflow has not taken; return how many lines are new."""
    from botocore.exceptions import BotoCoreError, ClientError

    from core.aws import client, error_code, explain

    job = get_job(job_id)
    options = job.config.get("sagemaker") or {}
    if "checkpoints" not in options:
        raise StudioError(f"The job {job_id} has no checkpoint S3 URI to relay metrics from.")
    bucket, prefix = split_uri(options["checkpoints"])
    try:
        body = (s3 or client("s3")).get_object(Bucket=bucket, Key=f"{prefix}/{METRICS_FILE}")["Body"].read().decode("utf-8", "replace")
    except ClientError as exc:
        if error_code(exc) in ("NoSuchKey", "404"):
            return 0  # the job has not written (or SageMaker not yet synced) any metrics
        raise explain(exc, "S3", bucket) from None
    except BotoCoreError as exc:
        raise explain(exc, "S3", bucket) from None
    complete = body[: body.rfind("\n") + 1]  # a line without its newline may still be growing
    local = metrics_file(job)
    seen = len(local.read_text().splitlines()) if local.is_file() else 0
    new = complete.splitlines()[seen:]
    if new:
        atomic_write_text(local, complete)
    if options.get("metrics") != "direct":
        deliver_pending(job)
    return len(new)
