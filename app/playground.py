"""The Gradio playground: try prompts on any run or export, with either backend, and compare models.

Mounted at /playground on the HTTP API's FastAPI app (app/api.py); the Streamlit Playground page
embeds it in an iframe.
"""

from __future__ import annotations

import secrets
from typing import Any

import gradio as gr
from PIL import Image

import core  # noqa: F401  (telemetry off)
from core.errors import StudioError
from core.inference.models import BACKEND_LABELS, Backend, ModelEntry, generate, list_models, model_limits
from core.inference.schedulers import SCHEDULERS
from core.inference.torch_backend import GenerateRequest
from core.settings import get_settings

THEME = gr.themes.Soft(primary_hue="violet", secondary_hue="violet")
CSS = ".gradio-container {max-width: 100% !important}"
BACKEND_BY_LABEL = {label: key for key, label in BACKEND_LABELS.items()}
HISTORY_COLUMNS = ["model", "backend", "prompt", "negative prompt", "steps", "guidance", "seed", "scheduler", "batch", "size", "seconds"]
HISTORY_LENGTH = 20


def model_choices() -> list[tuple[str, str]]:
    return [(m.label, m.id) for m in list_models()]


def entry_for(model_id: str | None) -> ModelEntry:
    entry = next((m for m in list_models() if m.id == model_id), None)
    if entry is None:
        raise gr.Error("Pick a model first (train a run or export one; refresh the list with 🔄).")
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


def refresh_models(request: gr.Request | None = None) -> tuple[Any, Any, Any]:
    choices = model_choices()
    ids = [c[1] for c in choices]
    # The page's `?model=` (set by the Studio's Playground page) preselects that model when it is listed.
    wanted = request.query_params.get("model") if request else None
    first = wanted if wanted in ids else (ids[0] if ids else None)
    model = gr.update(choices=choices, value=first, info=HAS_MODELS if choices else NO_MODEL)
    return model, gr.update(choices=choices, value=[c[1] for c in choices[:2]]), size_for_model(first)


def size_for_model(model_id: str | None) -> Any:
    """The size slider spans what the chosen model generates well, starting at its native size."""
    if not model_id:
        return gr.update()
    entry = entry_for(model_id)
    try:
        limits = model_limits(model_id, entry.backends[0])
    except StudioError as exc:
        raise gr.Error(str(exc)) from None
    return gr.update(minimum=limits["min_size"], maximum=limits["max_size"], step=limits["multiple"], value=limits["resolution"])


def on_generate(
    model_id: str, backend_label: str, prompt: str, negative: str, steps: float, guidance: float, seed: float,
    randomize: bool, scheduler: str, batch: float, size: float, history: list[dict[str, Any]],
) -> tuple[list[Image.Image], str, int, list[dict[str, Any]], list[list[Any]]]:
    entry = entry_for(model_id)
    backend = backend_for(entry, backend_label)
    seed = secrets.randbelow(2**32) if randomize else int(seed)
    if not prompt.strip():
        raise gr.Error("Write a prompt first, e.g. “a handwritten digit seven”.")
    request = GenerateRequest(
        prompt=prompt, negative_prompt=negative, steps=int(steps), guidance=guidance, seed=seed,
        scheduler=scheduler, batch=int(batch), height=int(size), width=int(size),
    )
    images, seconds, label = run(entry.id, backend, request)
    row = {
        "model": entry.id, "backend": backend_label, "prompt": prompt, "negative prompt": negative, "steps": int(steps),
        "guidance": guidance, "seed": seed, "scheduler": scheduler, "batch": int(batch), "size": int(size), "seconds": round(seconds, 2),
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
        row["seed"], False, row["scheduler"], row["batch"], row["size"],
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
                    size = gr.Slider(8, 2048, value=32, step=8, label="Image size (px)")
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

        form = [model, backend, prompt, negative, steps, guidance, seed, randomize, scheduler, batch, size]
        blocks.load(refresh_models, outputs=[model, compare_models, size])
        refresh.click(refresh_models, outputs=[model, compare_models, size])
        model.change(size_for_model, inputs=model, outputs=size)
        run_button.click(on_generate, inputs=[*form, history], outputs=[gallery, timing, seed, history, table])
        table.select(on_history_select, inputs=history, outputs=form)
        compare_button.click(
            on_compare,
            inputs=[compare_models, compare_backend, compare_prompt, compare_seed, compare_steps, compare_guidance, compare_scheduler],
            outputs=[compare_gallery, compare_timing],
        )
    return blocks
