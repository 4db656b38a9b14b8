"""Serving under hostile or heavy use: foreign Host headers, a full queue, a cache that must not grow."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

FOREIGN_HOSTS = ["evil.example", "evil.example:8000", "localhost.evil.example", "evil.example@localhost", "127.0.0.1:80/x"]


def settings_env(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    from core.settings import reset_settings

    for name, value in values.items():
        monkeypatch.setenv(f"STUDIO_{name.upper()}", value)
    reset_settings()


def test_foreign_host_gets_400_on_the_api_and_the_mounted_playground(home: Path) -> None:
    from app.api import PLAYGROUND_PATH, create_app

    client = TestClient(create_app(), base_url="http://localhost:8000")
    paths = ["/healthz", "/v1/models", "/openapi.json", f"{PLAYGROUND_PATH}/", f"{PLAYGROUND_PATH}/config"]
    for path in paths:
        assert client.get(path).status_code == 200, path
        for host in ["127.0.0.1:8000", "[::1]:8000", "LOCALHOST"]:
            assert client.get(path, headers={"Host": host}).status_code == 200, (path, host)
        for host in FOREIGN_HOSTS:
            response = client.get(path, headers={"Host": host})
            assert response.status_code == 400 and "Invalid host header" in response.text, (path, host)
    # Rejected before the body is even read: a rebinding page cannot start a generation.
    response = client.post("/v1/generate", json={"model": "x", "prompt": "a digit"}, headers={"Host": "evil.example"})
    assert response.status_code == 400


def test_allowed_hosts_setting_bind_host_and_arrival_address(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from app.api import create_app

    settings_env(monkeypatch, allowed_hosts="studio.example.com, *.corp.example")
    client = TestClient(create_app(playground=False, bind_host="studio.lan"), base_url="http://192.0.2.7:8000")

    def status(host: str) -> int:
        return client.get("/healthz", headers={"Host": host}).status_code

    assert status("studio.example.com") == 200 and status("gpu.corp.example:8000") == 200
    assert status("studio.lan:8000") == 200  # the address it listens on
    assert status("192.0.2.7:8000") == 200  # the IP address the request arrived on: this server's own origin
    assert status("localhost") == 400  # the setting replaces the default list
    assert status("corp.example.evil") == 400 and status("192.0.2.8") == 400
    # Listening on every address adds no name: only the setting and the arrival address count.
    wildcard = TestClient(create_app(playground=False, bind_host="0.0.0.0"), base_url="http://localhost")
    assert wildcard.get("/healthz", headers={"Host": "0.0.0.0"}).status_code == 400


def test_playground_cache_age_reaches_the_blocks(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from app.playground import build_playground

    assert build_playground().delete_cache == (3600, 3600)
    settings_env(monkeypatch, playground_cache_seconds="120")
    assert build_playground().delete_cache == (120, 120)


@contextmanager
def generation_lock_held() -> Iterator[None]:
    """The real generation lock taken by the test: requests that reach it wait until the block ends."""
    from core.inference import models

    models._lock.acquire()
    try:
        yield
    finally:
        models._lock.release()


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 120
    while not condition():
        assert time.monotonic() < deadline, "the condition never became true"
        time.sleep(0.01)


def post_in_thread(client: TestClient, body: dict, results: list) -> threading.Thread:
    thread = threading.Thread(target=lambda: results.append(client.post("/v1/generate", json=body)))
    thread.start()
    return thread


@pytest.mark.slow
def test_full_queue_answers_429_and_frees_its_slot(exported: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    from app.api import create_app

    settings_env(monkeypatch, api_queue_size="1")
    app = create_app(playground=False)
    client = TestClient(app, base_url="http://localhost")
    body = {"model": exported["export_id"], "backend": "onnx", "prompt": "a handwritten digit two", "steps": 1, "seed": 1}
    results: list = []
    with generation_lock_held():
        first = post_in_thread(client, body, results)
        wait_until(lambda: app.state.generation_queue.held == 1)
        refused = client.post("/v1/generate", json=body)
        assert refused.status_code == 429 and refused.headers["retry-after"] == "5"
        assert "1 generation requests" in refused.json()["detail"]
    first.join()
    assert results[0].status_code == 200
    assert app.state.generation_queue.held == 0
    assert client.post("/v1/generate", json=body).status_code == 200


@pytest.mark.slow
def test_concurrent_requests_load_a_model_once_under_the_generation_lock(exported: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    from app.api import create_app
    from core.inference import models

    settings_env(monkeypatch, api_queue_size="2")
    app = create_app(playground=False)
    client = TestClient(app, base_url="http://localhost")
    body = {"model": exported["export_id"], "backend": "onnx", "prompt": "a handwritten digit four", "steps": 1, "seed": 2}
    models._load.cache_clear()
    results: list = []
    with generation_lock_held():
        threads = [post_in_thread(client, body, results) for _ in range(2)]
        wait_until(lambda: app.state.generation_queue.held == 2)
        # Both wait for the lock, and neither has loaded the model while another held it.
        assert models._load.cache_info().currsize == 0
    for thread in threads:
        thread.join()
    assert [r.status_code for r in results] == [200, 200]
    assert models._load.cache_info().misses == 1
