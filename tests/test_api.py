"""The HTTP API with FastAPI's TestClient over a really exported tiny model."""

from __future__ import annotations

import base64
import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image

pytestmark = pytest.mark.slow


@pytest.fixture
def client(exported: dict) -> TestClient:
    from app.api import create_app

    return TestClient(create_app(playground=False), base_url="http://localhost")  # an allowed Host


def test_health_models_and_openapi(client: TestClient, exported: dict) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    models = {m["id"]: m for m in client.get("/v1/models").json()}
    assert models[exported["run_id"]]["backends"] == ["torch", "onnx"]
    assert models[exported["export_id"]]["kind"] == "export"
    spec = client.get("/openapi.json").json()
    assert "/v1/generate" in spec["paths"] and spec["components"]["schemas"]["ApiGenerateRequest"]["properties"]["steps"]["maximum"] == 150


def test_generate_base64_and_png(client: TestClient, exported: dict) -> None:
    body = {"model": exported["export_id"], "backend": "onnx", "prompt": "a handwritten digit five", "steps": 3, "seed": 9, "batch": 2}
    data = client.post("/v1/generate", json=body).json()
    assert data["seed"] == 9 and data["backend"] == "ONNX Runtime (CPU)" and len(data["images"]) == 2
    assert Image.open(io.BytesIO(base64.b64decode(data["images"][0]))).size == (32, 32)
    png = client.post("/v1/generate", json={**body, "format": "png", "backend": "torch", "height": 48})
    assert png.status_code == 200 and png.headers["content-type"] == "image/png" and png.headers["x-seed"] == "9"
    assert Image.open(io.BytesIO(png.content)).size == (64, 48)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"prompt": ""}, "at least 1 character"),
        ({"prompt": "x" * 501}, "at most 500 characters"),
        ({"steps": 0}, "greater than or equal to 1"),
        ({"steps": 151}, "less than or equal to 150"),
        ({"guidance": 30.5}, "less than or equal to 30"),
        ({"batch": 9}, "less than or equal to 8"),
        ({"height": 36}, "multiple of 8"),
        ({"width": 128}, "between 16 and 64"),
        ({"seed": -1}, "greater than or equal to 0"),
        ({"scheduler": "lms"}, "ddim"),
        ({"colour": "red"}, "Extra inputs are not permitted"),
    ],
)
def test_out_of_range_requests_get_422_with_the_reason(client: TestClient, exported: dict, change: dict, reason: str) -> None:
    response = client.post("/v1/generate", json={"model": exported["export_id"], "prompt": "a digit", "steps": 1, **change})
    assert response.status_code == 422
    assert reason in response.text


def test_unknown_model_is_404_and_missing_export_422(client: TestClient, exported: dict, trained_model) -> None:
    response = client.post("/v1/generate", json={"model": "no-such-model", "prompt": "a digit"})
    assert response.status_code == 404 and "GET /v1/models" in response.json()["detail"]
    response = client.post("/v1/generate", json={"model": str(trained_model), "prompt": "a digit"})
    assert response.status_code == 404  # a path on the server is never a model name
