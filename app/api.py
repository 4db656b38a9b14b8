"""The HTTP API: validated generation over the studio's models, with the Gradio playground mounted.

`studio serve --port 8000` runs it; the Playground page starts the same app on
STUDIO_PLAYGROUND_HOST (127.0.0.1). The OpenAPI spec is at /openapi.json, interactive docs at /docs.
Every request must name an allowed host (`STUDIO_ALLOWED_HOSTS`) in its `Host` header, else 400;
in team mode every route but /healthz also needs a bearer token, else 401.
"""

from __future__ import annotations

import base64
import io
import ipaddress
import re
import secrets
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Literal
from http.cookies import SimpleCookie
from urllib.parse import parse_qs, urlsplit

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocketClose

import core  # noqa: F401  (telemetry off before gradio and mlflow are imported)
from app import uploads
from core.access import NotAllowed, User, acting_as, require
from core.errors import StudioError
from core.inference.lora import LoraTooLarge, LoraUpload, is_upload_id
from core.inference.models import Backend, ModelEntry, generate, list_models
from core.inference.schedulers import SchedulerName
from core.inference.torch_backend import GenerateRequest, image_grid
from core.settings import Settings, get_settings
from core.tokens import authenticate, from_ticket

PLAYGROUND_PATH = "/playground"
WILDCARD_ADDRESSES = {"", "0.0.0.0", "::"}
_HOST_HEADER = re.compile(r"(?:\[(?P<ip6>[0-9a-fA-F:.]+)\]|(?P<name>[A-Za-z0-9._-]+))(?::\d{1,5})?")


def host_name(header: str | None) -> str | None:
    """The host of a `Host` header, lower case, IPv6 without brackets; None when it is missing or malformed."""
    match = _HOST_HEADER.fullmatch(header or "")
    if match is None:
        return None
    return (match["ip6"] or match["name"]).lower().rstrip(".") or None


def allowed_hosts(settings: Settings, bind_host: str | None = None) -> list[str]:
    """STUDIO_ALLOWED_HOSTS plus the address the server listens on (unless it listens on every address)."""
    hosts = [h.lower() for h in settings.allowed_hosts]
    if bind_host and bind_host.strip("[]") not in WILDCARD_ADDRESSES:
        hosts.append(bind_host.strip("[]").lower())
    return hosts


def host_allowed(host: str | None, patterns: Iterable[str]) -> bool:
    if not host:
        return False
    for pattern in patterns:
        if pattern == "*" or host == pattern or (pattern.startswith("*.") and host.endswith(pattern[1:])):
            return True
    return False


def is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class AllowedHostsMiddleware:
    """400 to a request whose `Host` this server does not serve, so no web page can drive the API
    (or the playground) through DNS rebinding. Besides the allowed names, the IP address the
    connection arrived on is accepted: a page addressed by that literal IP is this server's own origin."""

    def __init__(self, app: ASGIApp, hosts: Iterable[str]) -> None:
        self.app = app
        self.hosts = list(hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = host_name(Headers(scope=scope).get("host"))
        arrived_on = str((scope.get("server") or ("",))[0]).lower()
        if host_allowed(host, self.hosts) or (host is not None and host == arrived_on and is_ip_address(host)):
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await WebSocketClose(code=1008)(scope, receive, send)
        else:
            await PlainTextResponse("Invalid host header", status_code=400)(scope, receive, send)


class BearerTokenMiddleware:
    """Team mode: every route but /healthz needs `Authorization: Bearer <token>` (a live token from
    the Account page or `studio token create`), else 401; the request then acts as the token's owner.
    The playground and the upload box, drawn in iframes on the studio's pages, take the ticket that
    page puts in the URL instead, and keep it as a cookie scoped to their path for the requests that
    follow."""

    OPEN_PATHS = ("/healthz",)
    TICKET = "studio_ticket"
    TICKET_PATHS = (PLAYGROUND_PATH, uploads.UPLOADS_PATH)  # the pages drawn in the studio's iframes

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in self.OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        scheme, _, token = (headers.get("authorization") or "").partition(" ")
        user = authenticate(token.strip()) if scheme.lower() == "bearer" else None
        prefix = next((p for p in self.TICKET_PATHS if scope["path"].startswith(p)), None)
        if user is None and prefix:
            user, send = self.ticket_user(scope, headers, send, prefix)
        if user is None:
            if scope["type"] == "websocket":
                await WebSocketClose(code=1008)(scope, receive, send)
                return
            message = {"detail": "Send a live API token as 'Authorization: Bearer <token>' (create one on the Account page)."}
            await JSONResponse(message, status_code=401, headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)
            return
        with acting_as(user):
            await self.app(scope, receive, send)

    def ticket_user(self, scope: Scope, headers: Headers, send: Send, prefix: str) -> tuple[User | None, Send]:
        """The user of a ticket in the URL (then set as a cookie scoped to `prefix`) or in the cookie."""
        from_url = parse_qs(scope.get("query_string", b"").decode()).get(self.TICKET, [""])[0]
        cookie = SimpleCookie(headers.get("cookie") or "").get(self.TICKET)
        value = from_url or (cookie.value if cookie else "")
        user = from_ticket(value) if value else None
        if user is None or not from_url:
            return user, send
        set_cookie = f"{self.TICKET}={value}; Path={prefix}; HttpOnly; SameSite=Lax"

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", set_cookie.encode())]}
            await send(message)

        return user, send_with_cookie


class GenerationQueue:
    """At most `size` generation requests held at once, running or waiting for the model; the next gets 429."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.held = 0
        self._lock = threading.Lock()

    @contextmanager
    def slot(self) -> Iterator[None]:
        with self._lock:
            if self.held >= self.size:
                raise HTTPException(
                    429, f"The server already holds {self.size} generation requests; try again shortly.", headers={"Retry-After": "5"}
                )
            self.held += 1
        try:
            yield
        finally:
            with self._lock:
                self.held -= 1


def browser_base_url(page_url: str | None, port: int, configured: str | None = None) -> str:
    """Where the browser reaches the playground server: STUDIO_PLAYGROUND_URL, else the host name the
    browser used for the studio's own page (behind Docker that is not 127.0.0.1) with the playground port."""
    if configured:
        return configured.rstrip("/")
    try:
        host = urlsplit(page_url or "").hostname
    except ValueError:
        host = None
    host = host or "127.0.0.1"
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


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
    height: int | None = Field(None, ge=8, le=2048, multiple_of=8, description="default: the model's training size")
    width: int | None = Field(None, ge=8, le=2048, multiple_of=8, description="default: the model's training size")
    lora: str | None = Field(None, max_length=200, description="a LoRA for the torch backend: a run id (of a run trained with LoRA) or an id from POST /v1/loras")
    lora_strength: float = Field(1.0, ge=0, le=2, description="0 is the base model, 1 the LoRA as trained")
    format: Literal["base64", "png"] = Field("base64", description="JSON with base64 PNGs, or one PNG (a grid for batch > 1)")


class ApiGenerateResponse(BaseModel):
    model: str
    backend: str
    seed: int
    seconds: float
    images: list[str] = Field(description="base64-encoded PNG images")


class ApiLoraResponse(BaseModel):
    id: str = Field(description="the LoRA's sha256: pass it as `lora` to POST /v1/generate")
    bytes: int


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


def known_lora(ref: str) -> str:
    """An uploaded LoRA's id, or the run of a listed model: a request can never name a path on the server."""
    if is_upload_id(ref):
        return ref
    entry = next((m for m in list_models() if m.id == ref), None)
    if entry is None or entry.run_id is None:
        raise HTTPException(404, f"There is no LoRA {ref!r}; use a run id from GET /v1/models or an id from POST /v1/loras.")
    return entry.run_id


def create_app(playground: bool = True, bind_host: str | None = None) -> FastAPI:
    """The API (and the playground under /playground/); `bind_host` is the address it listens on, also an allowed host."""
    settings = get_settings()
    app = FastAPI(title="Diffusion Studio API", version="1", description="Text-to-image generation with your trained models.")
    queue = app.state.generation_queue = GenerationQueue(settings.api_queue_size)

    @app.exception_handler(NotAllowed)
    def not_allowed(_request: Request, exc: NotAllowed) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=403)

    @app.exception_handler(StudioError)
    def refused(_request: Request, exc: StudioError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    app.include_router(uploads.router)

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
        responses={
            200: {"content": {"image/png": {}}},
            404: {"description": "unknown model"},
            422: {"description": "invalid request"},
            429: {"description": "STUDIO_API_QUEUE_SIZE requests are already running or waiting"},
        },
    )
    def generate_images(body: ApiGenerateRequest) -> ApiGenerateResponse | Response:
        require("generate")
        with queue.slot():
            return generate_one(body)

    def generate_one(body: ApiGenerateRequest) -> ApiGenerateResponse | Response:
        entry = known_model(body.model)
        if body.backend not in entry.backends:
            raise HTTPException(422, f"The model {body.model} has no {body.backend} backend yet; export it to ONNX first.")
        seed = secrets.randbelow(2**32) if body.seed is None else body.seed
        fields = body.model_dump(exclude={"model", "backend", "format", "seed", "lora"})
        lora = known_lora(body.lora) if body.lora else None
        try:
            result = generate(entry.id, GenerateRequest(**fields, seed=seed, lora=lora), body.backend)
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

    @app.post(
        "/v1/loras",
        status_code=201,
        response_model=ApiLoraResponse,
        openapi_extra={"requestBody": {"required": True, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}},
        responses={413: {"description": "larger than STUDIO_LORA_MAX_BYTES"}, 422: {"description": "not a safetensors file"}},
    )
    async def upload_lora(request: Request) -> ApiLoraResponse:
        """A LoRA .safetensors file as the raw request body, streamed to disk and kept by its sha256."""
        require("generate")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > get_settings().lora_max_bytes:
            raise HTTPException(413, f"The LoRA file is larger than STUDIO_LORA_MAX_BYTES ({get_settings().lora_max_bytes:,} bytes), so it was refused.")
        try:
            with LoraUpload() as upload:
                async for chunk in request.stream():
                    upload.write(chunk)
                return ApiLoraResponse(id=upload.finish(), bytes=upload.size)
        except LoraTooLarge as exc:
            raise HTTPException(413, str(exc)) from None
        except StudioError as exc:
            raise HTTPException(422, str(exc)) from None

    if playground:
        import gradio as gr

        from app.playground import CSS, THEME, build_playground

        # Gradio refuses a larger upload before it is stored (the only uploads are LoRA files).
        app = gr.mount_gradio_app(
            app, build_playground(), path=PLAYGROUND_PATH, theme=THEME, css=CSS, ssr_mode=False, max_file_size=settings.lora_max_bytes
        )
    if settings.team_mode:
        app.add_middleware(BearerTokenMiddleware)
    # Outermost, so it guards the mounted playground too and a foreign host gets 400 before anything else.
    app.add_middleware(AllowedHostsMiddleware, hosts=allowed_hosts(settings, bind_host))
    return app


_server_lock = threading.Lock()
_server_url: str | None = None


def local_address(bind_host: str) -> str:
    """An address this machine reaches a server listening on `bind_host` at."""
    return "127.0.0.1" if bind_host.strip("[]") in WILDCARD_ADDRESSES else bind_host.strip("[]")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def serve_in_background(port: int) -> str:
    """Start the API with the playground on STUDIO_PLAYGROUND_HOST:`port` in a daemon thread, once per
    process; returns its URL on this machine."""
    global _server_url
    import uvicorn

    with _server_lock:
        if _server_url:
            return _server_url
        bind_host = get_settings().playground_host
        local = local_address(bind_host)
        if port_open(port, local):
            raise StudioError(f"Port {port} is already taken; set STUDIO_PLAYGROUND_PORT to a free port.")
        app = create_app(bind_host=bind_host)
        server = uvicorn.Server(uvicorn.Config(app, host=bind_host, port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, name="playground-server", daemon=True)
        thread.start()
        deadline = time.monotonic() + 60
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise StudioError(f"The playground server did not start on port {port} within a minute.")
            time.sleep(0.1)
        _server_url = f"http://{f'[{local}]' if ':' in local else local}:{port}"
        return _server_url
