"""Webhooks when a job ends, against real HTTP receivers on 127.0.0.1: one JSON post per job end,
Slack's shape for a Slack URL, and a receiver that is down at first gets the post on a retry while
the job's own update returns at once."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.servers import free_port


@contextmanager
def receiver(port: int) -> Iterator[list[dict]]:
    """An HTTP server on `port` that keeps every JSON body POSTed to it."""
    posts: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802  (http.server's name)
            posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield posts
    finally:
        server.shutdown()
        server.server_close()


def queued_job() -> str:
    from core.db import new_id
    from jobs.records import create_job

    return create_job(new_id(), "train", "local", {"run_name": "cats-v2"}, "train.log", dataset="cats@abc").id


def settle(job_id: str, status: str, **fields: object) -> None:
    """Move the job to `status` the way backends do, and wait for its webhooks, if any."""
    from jobs.notify import wait_for_deliveries
    from jobs.records import update_job

    update_job(job_id, status=status, **fields)
    wait_for_deliveries()


@pytest.fixture
def hooks(home: Path, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    from core.settings import reset_settings

    ports = [free_port(), free_port()]
    monkeypatch.setenv("STUDIO_WEBHOOKS", ",".join(f"http://127.0.0.1:{p}/hook" for p in ports))
    reset_settings()
    return ports


def test_one_post_per_job_end_to_every_webhook(hooks: list[int]) -> None:
    with receiver(hooks[0]) as first, receiver(hooks[1]) as second:
        job = queued_job()
        settle(job, "running")  # not an end
        assert first == []
        settle(job, "failed", failure_reason="The loss became NaN at step 12.")
        settle(job, "failed")  # already ended: no second post
    assert first == second
    (post,) = first
    assert post["event"] == "job.failed" and post["text"] == f"❌ Job {job} (cats-v2) failed: The loss became NaN at step 12."
    assert post["job"] | {"owner": None, "finished_at": None} == {
        "id": job, "status": "failed", "backend": "local", "dataset": "cats@abc", "mlflow_run_id": None,
        "owner": None, "failure_reason": "The loss became NaN at step 12.", "finished_at": None,
    }  # fmt: skip


def test_a_receiver_that_is_down_gets_it_on_a_retry_and_the_job_goes_on(hooks: list[int], caplog: pytest.LogCaptureFixture) -> None:
    import time

    from jobs.notify import wait_for_deliveries
    from jobs.records import get_job, update_job

    job = queued_job()
    update_job(job, status="succeeded")  # nothing listens yet on either port: returns at once all the same
    assert get_job(job).status == "succeeded"
    deadline = time.monotonic() + 60
    while "attempt 1 failed" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "attempt 1 failed" in caplog.text
    with receiver(hooks[0]) as late:
        wait_for_deliveries()
    assert [p["event"] for p in late] == ["job.succeeded"]


def test_slack_urls_get_slacks_shape() -> None:
    from jobs.notify import is_slack

    assert is_slack("https://hooks.slack.com/services/T0/B0/x") and not is_slack("https://example.com/hooks.slack.com")


def test_a_job_whose_launcher_died_is_announced_too(hooks: list[int]) -> None:
    from core.db import new_id
    from jobs import local
    from jobs.notify import wait_for_deliveries
    from jobs.records import create_job

    with receiver(hooks[0]) as posts:
        job = create_job(new_id(), "train", "local", {}, "train.log", status="starting").id  # its launcher never recorded a supervisor
        local.refresh()
        wait_for_deliveries()
    assert [(p["event"], p["job"]["id"]) for p in posts] == [("job.failed", job)]
