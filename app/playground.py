"""The Gradio playground: try prompts on any run or export, with either backend, and compare models.

Mounted at /playground on the HTTP API's FastAPI app (app/api.py); the Streamlit Playground page
embeds it in an iframe.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image
from pydantic import ValidationError

import core  # noqa: F401  (telemetry off)
from core.config_base import describe_validation_error
from core.errors import StudioError
from core.inference.lora import is_upload_id, store_lora
from core.inference.models import BACKEND_LABELS, Backend, ModelEntry, generate, list_models, model_sizes
from core.inference.schedulers import SCHEDULERS
from core.inference.torch_backend import GenerateRequest
from core.settings import get_settings

THEME = gr.themes.Soft(primary_hue="violet", secondary_hue="violet")
CSS = ".gradio-container {max-width: 100% !important}"
BACKEND_BY_LABEL = {label: key for key, label in BACKEND_LABELS.items()}
HISTORY_COLUMNS = [
    "model", "backend", "prompt", "negative prompt", "steps", "guidance", "seed", "scheduler", "batch", "size", "lora", "lora strength", "seconds",
]
NO_LORA = ("No LoRA", "")
SIZE = re.compile(r"\s*(\d+)\s*(?:[x×X]\s*(\d+))?\s*")
HISTORY_LENGTH = 20


def model_choices() -> list[tuple[str, str]]:
    return [(m.label, m.id) for m in list_models()]


def lora_choices() -> list[tuple[str, str]]:
    """No LoRA, then every run with a model (whether it trained a LoRA shows when it is used)."""
    return [NO_LORA, *((f"LoRA of {m.label}", m.id) for m in list_models() if m.kind == "run")]


def size_label(size: tuple[int, int]) -> str:
    return f"{size[0]}×{size[1]}"


def parse_size(text: str) -> tuple[int, int]:
    """(width, height) from "48×32", "48x32" or "48" (square)."""
    match = SIZE.fullmatch(str(text or ""))
    if match is None:
        raise gr.Error("Pick an image size, or type one as width×height (e.g. 48×32).")
    width = int(match[1])
    return width, int(match[2] or width)


def lora_ref(choice: str | None) -> str | None:
    """A listed run or an uploaded LoRA's id: typed text is never taken as a path on the server."""
    if not choice:
        return None
    if is_upload_id(choice) or any(m.id == choice and m.kind == "run" for m in list_models()):
        return choice
    raise gr.Error("Pick a LoRA from the list or upload a .safetensors file.")


def entry_for(model_id: str | None) -> ModelEntry:
    entry = next((m for m in list_models() if m.id == model_id), None)
    if entry is None:
        raise gr.Error("Pick a model first (train a run, export one or import a checkpoint; refresh the list with 🔄).")
    return entry


def backend_for(entry: ModelEntry, label: str) -> Backend:
    backend = BACKEND_BY_LABEL[label]
    if backend not in entry.backends:
        raise gr.Error(f"{entry.label} has no ONNX export yet: export it on the Export page, or use PyTorch.")
    return backend


def run(model_id: str, backend: Backend, request: GenerateRequest) -> tuple[list[Image.Image], float, str]:
    try:
        result = generate(model_id, request, backend)
    except StudioError as exc:
        raise gr.Error(str(exc)) from None
    return result.images, result.seconds, result.backend_label


NO_MODEL = "No trained model yet: run the demo on Home or train one on the Train page, then press 🔄."
HAS_MODELS = "Runs with a trained model, and ONNX exports."


def refresh_models(uploaded: list[tuple[str, str]], request: gr.Request | None = None) -> tuple[Any, Any, Any, Any]:
    choices = model_choices()
    ids = [c[1] for c in choices]
    # The page's `?model=` (set by the Studio's Playground page) preselects that model when it is listed.
    wanted = request.query_params.get("model") if request else None
    first = wanted if wanted in ids else (ids[0] if ids else None)
    model = gr.update(choices=choices, value=first, info=HAS_MODELS if choices else NO_MODEL)
    compare = gr.update(choices=choices, value=[c[1] for c in choices[:2]])
    return model, compare, size_for_model(first), gr.update(choices=[*lora_choices(), *uploaded])


def size_for_model(model_id: str | None) -> Any:
    """The sizes the chosen model was trained at (its square size first, the default); others can be typed."""
    if not model_id:
        return gr.update()
    entry = entry_for(model_id)
    try:
        sizes = [size_label(s) for s in model_sizes(model_id, entry.backends[0])]
    except StudioError as exc:
        raise gr.Error(str(exc)) from None
    return gr.update(choices=sizes, value=sizes[0])


def on_lora_upload(path: str | None, choices: list[tuple[str, str]]) -> tuple[Any, list[tuple[str, str]]]:
    """An uploaded file is checked (safetensors, size) and kept by its sha256, then picked in the LoRA list."""
    if not path:
        return gr.update(), choices
    try:
        lora_id = store_lora(Path(path))
    except StudioError as exc:
        raise gr.Error(str(exc)) from None
    choices = [*(c for c in choices if c[1] != lora_id), (f"uploaded {Path(path).name} ({lora_id[:8]})", lora_id)]
    return gr.update(choices=[*lora_choices(), *choices], value=lora_id), choices


def on_generate(
    model_id: str, backend_label: str, prompt: str, negative: str, steps: float, guidance: float, seed: float,
    randomize: bool, scheduler: str, batch: float, size: str, lora: str | None, lora_strength: float, history: list[dict[str, Any]],
) -> tuple[list[Image.Image], str, int, list[dict[str, Any]], list[list[Any]]]:
    entry = entry_for(model_id)
    backend = backend_for(entry, backend_label)
    seed = secrets.randbelow(2**32) if randomize else int(seed)
    if not prompt.strip():
        raise gr.Error("Write a prompt first, e.g. “a handwritten digit seven”.")
    width, height = parse_size(size)
    try:
        request = GenerateRequest(
            prompt=prompt, negative_prompt=negative, steps=int(steps), guidance=guidance, seed=seed, scheduler=scheduler,
            batch=int(batch), height=height, width=width, lora=lora_ref(lora), lora_strength=lora_strength,
        )
    except ValidationError as exc:  # a typed size the dropdown did not offer
        raise gr.Error(describe_validation_error(exc, "request")) from None
    images, seconds, label = run(entry.id, backend, request)
    row = {
        "model": entry.id, "backend": backend_label, "prompt": prompt, "negative prompt": negative, "steps": int(steps),
        "guidance": guidance, "seed": seed, "scheduler": scheduler, "batch": int(batch), "size": size_label((width, height)),
        "lora": request.lora or "", "lora strength": lora_strength, "seconds": round(seconds, 2),
    }
    history = [row, *history][:HISTORY_LENGTH]
    per_image = seconds / len(images)
    timing = f"**{seconds:.2f} s** for {len(images)} image(s) ({per_image * 1000:.0f} ms each) on {label}, seed {seed}"
    return images, timing, seed, history, [[r[c] for c in HISTORY_COLUMNS] for r in history]


def on_history_select(history: list[dict[str, Any]], evt: gr.SelectData) -> tuple[Any, ...]:
    """Clicking a row of the history puts its settings back into the form."""
    row = history[evt.index[0]]
    return (
        row["model"], row["backend"], row["prompt"], row["negative prompt"], row["steps"], row["guidance"],
        row["seed"], False, row["scheduler"], row["batch"], row["size"], row["lora"], row["lora strength"],
    )


def on_compare(
    model_ids: list[str], backend_label: str, prompt: str, seed: float, steps: float, guidance: float, scheduler: str
) -> tuple[list[tuple[Image.Image, str]], str]:
    if not 2 <= len(model_ids or []) <= 4:
        raise gr.Error("Pick two to four models to compare.")
    if not prompt.strip():
        raise gr.Error("Write a prompt first.")
    request = GenerateRequest(prompt=prompt, steps=int(steps), guidance=guidance, seed=int(seed), scheduler=scheduler)
    shown, lines = [], []
    for model_id in model_ids:
        entry = entry_for(model_id)
        images, seconds, label = run(entry.id, backend_for(entry, backend_label), request)
        shown.append((images[0], f"{entry.label} · {seconds:.2f} s"))
        lines.append(f"- {entry.label}: {seconds:.2f} s on {label}")
    return shown, "\n".join(lines)


def build_playground() -> gr.Blocks:
    schedulers = list(SCHEDULERS)
    backends = list(BACKEND_LABELS.values())
    # Every page load refreshes the choices; these initial ones serve API clients, which load no page.
    choices = model_choices()
    # Generated images pile up in Gradio's cache: every `age` seconds, files older than `age` go.
    age = get_settings().playground_cache_seconds
    # fill_width: the frame is the page's width; Gradio's centred column left the gallery cramped.
    with gr.Blocks(title="Diffusion Studio playground", analytics_enabled=False, delete_cache=(age, age), fill_width=True) as blocks:
        history = gr.State([])
        uploaded = gr.State([])  # this session's uploaded LoRAs, (label, id)
        with gr.Tab("Generate"):
            with gr.Row():
                with gr.Column(scale=2, min_width=320):
                    with gr.Row():
                        model = gr.Dropdown(
                            label="Model (runs and exports)", choices=choices, value=choices[0][1] if choices else None,
                            allow_custom_value=True, scale=5, elem_id="model", info=HAS_MODELS if choices else NO_MODEL,
                        )
                        refresh = gr.Button("🔄", scale=0, min_width=48)
                    backend = gr.Radio(backends, value=backends[0], label="Backend", elem_id="backend")
                    prompt = gr.Textbox(label="Prompt", value="a handwritten digit seven", lines=2, elem_id="prompt")
                    negative = gr.Textbox(label="Negative prompt", value="", elem_id="negative")
                    # Up here, in view without scrolling the frame; the settings below have good defaults.
                    run_button = gr.Button("Generate", variant="primary", elem_id="generate")
                    # One slider per row: side by side, their number boxes and end labels were clipped.
                    steps = gr.Slider(1, 150, value=20, step=1, label="Steps")
                    guidance = gr.Slider(0, 30, value=3.0, step=0.5, label="Guidance")
                    batch = gr.Slider(1, 8, value=4, step=1, label="Batch size")
                    size = gr.Dropdown(
                        ["32×32"], value="32×32", allow_custom_value=True, label="Image size (width×height)", elem_id="size",
                        info="The sizes the model was trained at; type another as width×height.",
                    )
                    with gr.Accordion("LoRA (PyTorch)", open=False):
                        # Typed values pass `lora_ref`'s check; API clients load no page, so no refresh fills the list.
                        lora = gr.Dropdown(choices=lora_choices(), value="", allow_custom_value=True, label="LoRA", elem_id="lora")
                        lora_upload = gr.File(label="…or upload a LoRA (.safetensors)", file_types=[".safetensors"], type="filepath")
                        lora_strength = gr.Slider(0, 2, value=1.0, step=0.05, label="LoRA strength", elem_id="lora-strength")
                    with gr.Row():
                        seed = gr.Number(value=0, precision=0, minimum=0, maximum=2**32 - 1, label="Seed", elem_id="seed")
                        randomize = gr.Checkbox(value=False, label="Randomize seed")
                    scheduler = gr.Dropdown(schedulers, value="ddim", label="Scheduler")
                with gr.Column(scale=3):
                    # Two per row at their own aspect ratio: a batch wraps instead of running off the edge.
                    gallery = gr.Gallery(label="Images", format="png", columns=2, height="auto", object_fit="contain", elem_id="gallery")
                    timing = gr.Markdown("Pick a model and press Generate.", elem_id="timing")
            gr.Markdown("### History: click a row to restore its settings")
            table = gr.Dataframe(headers=HISTORY_COLUMNS, value=[], interactive=False, wrap=True, elem_id="history")
        with gr.Tab("Compare"):
            gr.Markdown("One prompt and seed across two to four models, side by side.")
            with gr.Row():
                compare_models = gr.CheckboxGroup(choices=choices, label="Models", elem_id="compare-models")
                compare_backend = gr.Radio(backends, value=backends[0], label="Backend")
            with gr.Row():
                compare_prompt = gr.Textbox(label="Prompt", value="a handwritten digit three", scale=3)
                compare_seed = gr.Number(value=0, precision=0, minimum=0, label="Seed")
            compare_steps = gr.Slider(1, 150, value=20, step=1, label="Steps")
            compare_guidance = gr.Slider(0, 30, value=3.0, step=0.5, label="Guidance")
            compare_scheduler = gr.Dropdown(schedulers, value="ddim", label="Scheduler")
            compare_button = gr.Button("Compare", variant="primary")
            compare_gallery = gr.Gallery(label="Side by side", format="png", columns=4, height=320, object_fit="contain")
            compare_timing = gr.Markdown()

        form = [model, backend, prompt, negative, steps, guidance, seed, randomize, scheduler, batch, size, lora, lora_strength]
        blocks.load(refresh_models, inputs=uploaded, outputs=[model, compare_models, size, lora])
        refresh.click(refresh_models, inputs=uploaded, outputs=[model, compare_models, size, lora])
        model.change(size_for_model, inputs=model, outputs=size)
        lora_upload.upload(on_lora_upload, inputs=[lora_upload, uploaded], outputs=[lora, uploaded])
        run_button.click(on_generate, inputs=[*form, history], outputs=[gallery, timing, seed, history, table])
        table.select(on_history_select, inputs=history, outputs=form)
        compare_button.click(
            on_compare,
            inputs=[compare_models, compare_backend, compare_prompt, compare_seed, compare_steps, compare_guidance, compare_scheduler],
            outputs=[compare_gallery, compare_timing],
        )
    return blocks
