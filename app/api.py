"""The HTTP API: validated generation over the studio's models, with the Gradio playground mounted.

`studio serve --port 8000` runs it; the Playground page starts the same app on 127.0.0.1. The
OpenAPI spec is at /openapi.json, interactive docs at /docs.
"""

from __future__ import annotations

import base64
import io
import secrets
import socket
import threading
import time
from typing import Literal

from fastapi import FastAPI, HTTPException
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

import core  # noqa: F401  (telemetry off before gradio and mlflow are imported)
from core.errors import StudioError
from core.inference.models import Backend, ModelEntry, generate, list_models
from core.inference.schedulers import SchedulerName
from core.inference.torch_backend import GenerateRequest, image_grid

PLAYGROUND_PATH = "/playground"


class ApiGenerateRequest(BaseModel):
    """One generation request; height and width are also checked against the model's own limits (422)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="a run id or export id from GET /v1/models")
    backend: Backend = "torch"
    prompt: str = Field(min_length=1, max_length=500)
    negative_prompt: str = Field("", max_length=500)
    steps: int = Field(20, ge=1, le=150)
    guidance: float = Field(3.0, ge=0, le=30)
    seed: int | None = Field(None, ge=0, le=2**32 - 1, description="omit for a random seed")
    scheduler: SchedulerName = "ddim"
    batch: int = Field(1, ge=1, le=8)
    height: int | None = Field(None, ge=8, le=2048, multiple_of=8)
    width: int | None = Field(None, ge=8, le=2048, multiple_of=8)
    format: Literal["base64", "png"] = Field("base64", description="JSON with base64 PNGs, or one PNG (a grid for batch > 1)")


class ApiGenerateResponse(BaseModel):
    model: str
    backend: str
    seed: int
    seconds: float
    images: list[str] = Field(description="base64-encoded PNG images")


def png_bytes(image) -> bytes:  # type: ignore[no-untyped-def]
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def known_model(model_id: str) -> ModelEntry:
    """Only the studio's own models: a request can never name a path on the server."""
    entry = next((m for m in list_models() if m.id == model_id), None)
    if entry is None:
        raise HTTPException(404, f"There is no model {model_id!r}; GET /v1/models lists them.")
    return entry


def create_app(playground: bool = True) -> FastAPI:
    app = FastAPI(title="Diffusion Studio API", version="1", description="Text-to-image generation with your trained models.")

    @app.get("/healthz")
    def healthz() -> dict[str, object]:
        from core.inference.onnx_backend import providers

        return {"status": "ok", "onnx_providers": providers()}

    @app.get("/v1/models", response_model=list[ModelEntry])
    def models() -> list[ModelEntry]:
        return list_models()

    @app.post(
        "/v1/generate",
        response_model=ApiGenerateResponse,
        responses={200: {"content": {"image/png": {}}}, 404: {"description": "unknown model"}, 422: {"description": "invalid request"}},
    )
    def generate_images(body: ApiGenerateRequest) -> ApiGenerateResponse | Response:
        entry = known_model(body.model)
        if body.backend not in entry.backends:
            raise HTTPException(422, f"The model {body.model} has no {body.backend} backend yet; export it to ONNX first.")
        seed = secrets.randbelow(2**32) if body.seed is None else body.seed
        fields = body.model_dump(exclude={"model", "backend", "format", "seed"})
        try:
            result = generate(entry.id, GenerateRequest(**fields, seed=seed), body.backend)
        except StudioError as exc:
            raise HTTPException(422, str(exc)) from None
        headers = {"X-Seed": str(seed), "X-Generation-Seconds": f"{result.seconds:.3f}", "X-Backend": result.backend_label}
        if body.format == "png":
            return Response(png_bytes(image_grid(result.images, rows=1)), media_type="image/png", headers=headers)
        return ApiGenerateResponse(
            model=entry.id,
            backend=result.backend_label,
            seed=seed,
            seconds=round(result.seconds, 3),
            images=[base64.b64encode(png_bytes(img)).decode() for img in result.images],
        )

    if playground:
        import gradio as gr

        from app.playground import CSS, THEME, build_playground

        app = gr.mount_gradio_app(app, build_playground(), path=PLAYGROUND_PATH, theme=THEME, css=CSS, ssr_mode=False)
    return app


_server_lock = threading.Lock()
_server_url: str | None = None


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def serve_in_background(port: int) -> str:
    """Start the API with the playground on 127.0.0.1:`port` in a daemon thread, once per process."""
    global _server_url
    import uvicorn

    with _server_lock:
        if _server_url:
            return _server_url
        if port_open(port):
            raise StudioError(f"Port {port} is already taken; set STUDIO_PLAYGROUND_PORT to a free port.")
        server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, name="playground-server", daemon=True)
        thread.start()
        deadline = time.monotonic() + 60
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise StudioError(f"The playground server did not start on port {port} within a minute.")
            time.sleep(0.1)
        _server_url = f"http://127.0.0.1:{port}"
        return _server_url
