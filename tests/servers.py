"""Real servers the tests start on 127.0.0.1: a free port, moto's S3/IAM/SageMaker server and
`mlflow server`."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def moto_server() -> Iterator[str]:
    """moto's ThreadedMotoServer (real HTTP); yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def use_moto(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    """Point boto3 (and the SageMaker SDK) at moto with dummy credentials and no retries."""
    for key, value in {
        "AWS_ENDPOINT_URL": url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_MAX_ATTEMPTS": "1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


def moto_bucket(monkeypatch: pytest.MonkeyPatch, url: str, bucket: str):  # type: ignore[no-untyped-def]
    """`use_moto`, and the bucket created if this server lacks it; returns a boto3 S3 client."""
    import boto3

    use_moto(monkeypatch, url)
    client = boto3.client("s3")
    if bucket not in [b["Name"] for b in client.list_buckets()["Buckets"]]:
        client.create_bucket(Bucket=bucket)
    return client


@contextmanager
def mlflow_server(
    store: Path,
    port: int,
    backend_store_uri: str | None = None,
    artifacts_destination: str | None = None,
    env: dict[str, str] | None = None,
    app_name: str | None = None,
) -> Iterator[subprocess.Popen]:
    """`mlflow server` on 127.0.0.1:port, proxying artifacts, started as `studio team up` starts it
    (jobs/team_stack.py); by default over a SQLite store and an artifact folder in `store` (which
    also holds its log). Waits on /health (20–45 s here)."""
    from core.errors import StudioError
    from jobs.team_stack import mlflow_command, mlflow_env, wait_http

    store.mkdir(parents=True, exist_ok=True)
    cmd = mlflow_command(
        backend_store_uri or f"sqlite:///{store / 'mlflow.db'}",
        artifacts_destination or (store / "artifacts").as_uri(),
        "127.0.0.1",
        port,
    ) + (["--app-name", app_name] if app_name else [])
    log = open(store / f"server-{time.time_ns()}.log", "wb")  # noqa: SIM115  (closed below)
    proc = subprocess.Popen(cmd, env=mlflow_env(env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        try:
            wait_http(proc, "mlflow server", f"http://127.0.0.1:{port}/health", timeout=180)
        except StudioError as exc:
            raise AssertionError(f"mlflow server did not start ({exc}): {Path(log.name).read_text()[-2000:]}") from None
        yield proc
    finally:
        stop_server(proc)
        log.close()


def stop_server(proc: subprocess.Popen) -> None:
    """Kill a server started in its own process group (and its workers) at once, as a crash would."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
