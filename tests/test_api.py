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


def test_lora_upload_then_generate_at_a_strength_and_a_non_square_size(
    client: TestClient, exported: dict, trained_model, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib
    import pickle

    from core.modeling.io import load_components
    from core.settings import reset_settings
    from tests.test_inference_lora import write_lora

    data = write_lora(load_components(trained_model).unet, tmp_path).read_bytes()
    uploaded = client.post("/v1/loras", content=data, headers={"content-type": "application/octet-stream"})
    assert uploaded.status_code == 201 and uploaded.json() == {"id": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    body = {"model": exported["run_id"], "prompt": "a handwritten digit five", "steps": 2, "seed": 4, "format": "png", "width": 48, "height": 24}
    base = client.post("/v1/generate", json=body)
    assert base.status_code == 200 and Image.open(io.BytesIO(base.content)).size == (48, 24)
    for strength, same in ((0.0, True), (1.5, False)):
        with_lora = client.post("/v1/generate", json={**body, "lora": uploaded.json()["id"], "lora_strength": strength})
        assert with_lora.status_code == 200 and (with_lora.content == base.content) is same

    refused = {
        "onnx": client.post("/v1/generate", json={**body, "model": exported["export_id"], "backend": "onnx", "lora": uploaded.json()["id"]}),
        "run without LoRA": client.post("/v1/generate", json={**body, "lora": exported["run_id"]}),
        "path": client.post("/v1/generate", json={**body, "lora": str(tmp_path)}),
        "pickle": client.post("/v1/loras", content=pickle.dumps({"unet.x.lora_A.weight": 1})),
        "strength": client.post("/v1/generate", json={**body, "lora": uploaded.json()["id"], "lora_strength": 2.5}),
    }
    assert {name: r.status_code for name, r in refused.items()} == {"onnx": 422, "run without LoRA": 422, "path": 404, "pickle": 422, "strength": 422}
    assert "PyTorch backend" in refused["onnx"].json()["detail"] and "no LoRA weights" in refused["run without LoRA"].json()["detail"]
    assert "not a safetensors file" in refused["pickle"].json()["detail"]

    monkeypatch.setenv("STUDIO_LORA_MAX_BYTES", "1024")
    reset_settings()
    too_big = client.post("/v1/loras", content=data)
    assert too_big.status_code == 413 and "STUDIO_LORA_MAX_BYTES" in too_big.json()["detail"]
