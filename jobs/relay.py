"""The metrics relay: new `metrics.jsonl` lines of a cloud job, from S3 into its MLflow run.

A SageMaker job that cannot reach the tracking server still appends `metrics.jsonl` to
`/opt/ml/checkpoints`, which SageMaker syncs to the checkpoint S3 URI. Each call copies the file to
the job's local output folder (where the Train page reads progress) and logs the lines it has not
seen before into the same MLflow run, so the chart looks the same whichever way the metrics came.
The local copy's line count is the relay's position: it is rewritten only after MLflow took the
new points.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from core.errors import StudioError
from core.tracking import get_tracking
from jobs.progress import output_dir
from jobs.records import get_job

METRICS_FILE = "metrics.jsonl"


def split_uri(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key.rstrip("/")


def points(lines: list[str]) -> list[Any]:
    from mlflow.entities import Metric

    metrics = []
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        stamp, step = int(float(row.get("time", 0)) * 1000), int(row.get("step", 0))
        metrics += [Metric(k, float(v), stamp, step) for k, v in row.items() if k not in ("step", "time") and isinstance(v, int | float)]
    return metrics


def relay_metrics(job_id: str, s3: Any = None) -> int:
    """Copy the job's metrics.jsonl from S3 and log its new lines to MLflow; return how many."""
    from botocore.exceptions import BotoCoreError, ClientError

    from core.datasets.push import explain

    job = get_job(job_id)
    options = job.config.get("sagemaker") or {}
    if "checkpoints" not in options:
        raise StudioError(f"The job {job_id} has no checkpoint S3 URI to relay metrics from.")
    bucket, prefix = split_uri(options["checkpoints"])
    if s3 is None:
        from jobs.sagemaker import boto_session

        s3 = boto_session().client("s3")
    try:
        body = s3.get_object(Bucket=bucket, Key=f"{prefix}/{METRICS_FILE}")["Body"].read().decode("utf-8", "replace")
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return 0  # the job has not written (or SageMaker not yet synced) any metrics
        raise explain(exc, bucket) from None
    except BotoCoreError as exc:
        raise explain(exc, bucket) from None
    complete = body[: body.rfind("\n") + 1]  # a line without its newline may still be growing
    local = Path(job.config.get("checkpoint_dir") or output_dir(job) / "checkpoints") / METRICS_FILE
    seen = len(local.read_text().splitlines()) if local.is_file() else 0
    new = complete.splitlines()[seen:]
    if not new:
        return 0
    if options.get("metrics") != "direct" and job.mlflow_run_id:
        batch = points(new)
        client = get_tracking().client
        for i in range(0, len(batch), 1000):
            client.log_batch(job.mlflow_run_id, metrics=batch[i : i + 1000])
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = local.with_name(f".{METRICS_FILE}.tmp")
    tmp.write_text(complete)
    os.replace(tmp, local)
    return len(new)
