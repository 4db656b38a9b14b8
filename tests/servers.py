"""Real servers the tests start on 127.0.0.1: a free port, moto's S3/IAM/SageMaker server and
`mlflow server`."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
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
) -> Iterator[subprocess.Popen]:
    """`mlflow server` on 127.0.0.1:port, proxying artifacts; by default over a SQLite store and an
    artifact folder in `store` (which also holds its log). Waits on /health (20–45 s here)."""
    store.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "mlflow", "server",
           "--backend-store-uri", backend_store_uri or f"sqlite:///{store / 'mlflow.db'}",
           "--artifacts-destination", artifacts_destination or (store / "artifacts").as_uri(),
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]  # fmt: skip
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env or {})}
    log = open(store / f"server-{time.time_ns()}.log", "wb")  # noqa: SIM115  (closed below)
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"mlflow server did not start: {Path(log.name).read_text()[-2000:]}")
            time.sleep(0.5)
        yield proc
    finally:
        stop_server(proc)
        log.close()


def stop_server(proc: subprocess.Popen) -> None:
    """Kill a server started in its own process group (and its workers) at once, as a crash would."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
