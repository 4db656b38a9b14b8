"""A training's MLflow writes when the tracking server is slow or goes away: the sink never stops the
training, keeps what MLflow missed on disk, and the replay (what the supervisor runs when a job
ends) lands every missed point, param, tag, image and artifact in the same run. Against a real
`mlflow server` that is killed mid-run and started again on the same store."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest
from PIL import Image

from tests.servers import free_port, mlflow_server
from tests.servers import stop_server as stop

pytestmark = pytest.mark.slow


@pytest.fixture
def quick_http(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sink's short MLflow retries, set here so they are undone after the test."""
    from core.training.metrics import QUICK_HTTP

    for key, value in QUICK_HTTP.items():
        monkeypatch.setenv(key, value)


def use_server(port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.settings import reset_settings

    monkeypatch.setenv("STUDIO_MLFLOW_URI", f"http://127.0.0.1:{port}")
    reset_settings()


def test_a_server_that_goes_away_mid_run_misses_nothing(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quick_http: None) -> None:
    from core.tracking import create_run, get_tracking
    from core.tracking.outbox import Outbox
    from core.training.metrics import MetricsSink

    port, store = free_port(), tmp_path / "server"
    metrics = tmp_path / "job" / "checkpoints" / "metrics.jsonl"
    model = tmp_path / "job" / "model"
    model.mkdir(parents=True)
    (model / "model_index.json").write_text("{}")

    with mlflow_server(store, port) as server:
        use_server(port, monkeypatch)
        run_id = create_run("flaky")
        sink = MetricsSink(metrics, run_id, flush_every=2)
        sink.params({"unet.lr": "0.001"})
        sink.tags({"stage": "unet"})
        for step in range(1, 5):
            sink.log(step, {"loss": 1 / step})
        client = get_tracking().client
        assert [m.step for m in client.get_metric_history(run_id, "loss")] == [1, 2, 3, 4]

        stop(server)  # the server dies in the middle of the training
        started = time.monotonic()
        for step in range(5, 11):
            sink.log(step, {"loss": 1 / step})
        sink.image(Image.new("RGB", (8, 8), "red"), key="samples", step=10)
        sink.artifact_text(json.dumps(["a digit"]), "validation_prompts.json")
        sink.flush()
        sink.artifacts(model, "model")
        assert time.monotonic() - started < 60  # the loop went on; MLflow's minutes of retries did not happen
    assert sink.failures >= 1
    assert len(metrics.read_text().splitlines()) == 10  # the Train page's file has every point regardless
    calls = [json.loads(line)["call"] for line in (metrics.parent / "mlflow-outbox" / "calls.jsonl").read_text().splitlines()]
    assert calls == ["image", "text", "artifacts"]

    with mlflow_server(store, port):  # back, on the same store
        outbox = Outbox(metrics)
        assert outbox.deliver(run_id) == 6  # what the supervisor runs when the job ends
        assert outbox.deliver(run_id) == 0
        run = client.get_run(run_id)
        assert [m.step for m in client.get_metric_history(run_id, "loss")] == list(range(1, 11))
        assert run.data.params["unet.lr"] == "0.001" and run.data.tags["stage"] == "unet"
        top = {a.path for a in client.list_artifacts(run_id)}
        assert {"images", "model", "validation_prompts.json"} <= top
        assert [a.path for a in client.list_artifacts(run_id, "model")] == ["model/model_index.json"]
        assert any(a.path.startswith("images/samples+step+10+") for a in client.list_artifacts(run_id, "images"))
    assert not (metrics.parent / "mlflow-outbox" / "calls.jsonl").exists()


def test_a_server_that_never_answers_does_not_hold_up_the_loop(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quick_http: None) -> None:
    from core.training.metrics import MetricsSink

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with socket.socket() as silent:  # accepts connections (the kernel does), never answers a request
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        use_server(silent.getsockname()[1], monkeypatch)
        metrics = tmp_path / "checkpoints" / "metrics.jsonl"
        started = time.monotonic()
        sink = MetricsSink(metrics, "0" * 32, flush_every=2)
        for step in range(1, 41):
            sink.log(step, {"loss": 1 / step})
        sink.params({"seed": "0"})
        elapsed = time.monotonic() - started
    assert elapsed < 30  # one timed-out try, then the sink backs off instead of waiting at every flush
    assert sink.failures == 1
    assert len(metrics.read_text().splitlines()) == 40
    assert not (metrics.parent / "mlflow-outbox" / "metrics.sent").exists()  # nothing counted as sent
