"""The Gradio playground: gradio_client against the launched server, and the embedded page in chromium."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture
def playground(exported: dict) -> str:
    """The API + playground server, started once in this process as the Playground page does."""
    from app.api import PLAYGROUND_PATH, serve_in_background
    from tests.servers import free_port

    return serve_in_background(free_port()) + PLAYGROUND_PATH + "/"


def test_iframe_url_follows_the_page_host_or_the_setting() -> None:
    """Behind Docker or a proxy the browser does not reach the playground at 127.0.0.1."""
    from app.api import browser_base_url

    assert browser_base_url("http://studio.lan:8501/playground", 7860) == "http://studio.lan:7860"
    assert browser_base_url("https://Studio.Example.com/playground", 7861) == "http://studio.example.com:7861"
    assert browser_base_url("http://[::1]:8501/", 7860) == "http://[::1]:7860"
    assert browser_base_url(None, 7860) == "http://127.0.0.1:7860"
    assert browser_base_url("http://studio.lan:8501/", 7860, "https://studio.example.com/gradio/") == "https://studio.example.com/gradio"


def test_generate_history_and_compare_through_gradio_client(playground: str, exported: dict) -> None:
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    from app.playground import HISTORY_COLUMNS

    client = Client(playground, verbose=False)
    gallery, timing, seed, history = client.predict(
        exported["export_id"], "ONNX Runtime", "a handwritten digit six", "", 4, 3.0, 21, False, "euler", 2, "40×24", "", 1.0,
        api_name="/on_generate",
    )
    assert len(gallery) == 2 and Path(gallery[0]["image"]).suffix == ".png"
    assert "ONNX Runtime (CPU)" in timing and seed == 21
    assert history["data"][0][:3] == [exported["export_id"], "ONNX Runtime", "a handwritten digit six"]
    assert history["data"][0][HISTORY_COLUMNS.index("size")] == "40×24"

    compared, lines = client.predict(
        [exported["run_id"], exported["export_id"]], "PyTorch", "a handwritten digit one", 3, 3, 3.0, "ddim", api_name="/on_compare"
    )
    assert len(compared) == 2 and lines.count("PyTorch (CPU)") == 2
    with pytest.raises(AppError, match="two to four models"):
        client.predict([exported["run_id"]], "PyTorch", "x", 0, 1, 1.0, "ddim", api_name="/on_compare")


def test_lora_upload_is_checked_then_applied_with_pytorch_only(playground: str, exported: dict, trained_model: Path, tmp_path: Path) -> None:
    import pickle

    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    from app.playground import HISTORY_COLUMNS
    from core.modeling.lora_files import DIFFUSERS_FILE
    from core.modeling.io import load_components
    from tests.test_inference_lora import write_lora

    client = Client(playground, verbose=False)
    evil = tmp_path / "evil.safetensors"
    evil.write_bytes(pickle.dumps({"unet.x.lora_A.weight": 1}))
    with pytest.raises(AppError, match="not a safetensors file"):
        client.predict(handle_file(str(evil)), api_name="/on_lora_upload")
    picked = client.predict(handle_file(str(write_lora(load_components(trained_model).unet, tmp_path))), api_name="/on_lora_upload")
    lora = picked["value"]  # the LoRA list, updated to the uploaded file's id
    assert (f"uploaded {DIFFUSERS_FILE} ({lora[:8]})", lora) in [tuple(c) for c in picked["choices"]]
    form = [exported["run_id"], "PyTorch", "a handwritten digit six", "", 2, 3.0, 5, False, "ddim", 1, "32×32", lora]
    gallery, timing, _, history = client.predict(*form, 1.0, api_name="/on_generate")
    assert len(gallery) == 1 and history["data"][0][HISTORY_COLUMNS.index("lora")] == lora
    with pytest.raises(AppError, match="PyTorch backend"):
        client.predict(exported["export_id"], "ONNX Runtime", *form[2:], 1.0, api_name="/on_generate")


@pytest.mark.browser
def test_playground_page_embeds_gradio_and_generates(exported: dict) -> None:
    from playwright.sync_api import expect, sync_playwright

    from tests.browser import launch, screenshot, studio_server
    from tests.servers import free_port

    with studio_server(Path(exported["home"]), {"STUDIO_PLAYGROUND_PORT": str(free_port())}) as url, sync_playwright() as pw:
        browser = launch(pw)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{url}/playground", timeout=90_000)
        frame = page.frame_locator("iframe").first
        expect(frame.locator("#generate")).to_be_visible(timeout=90_000)
        frame.locator("#backend").get_by_text("ONNX Runtime").click()
        frame.locator("#generate").click()
        expect(frame.locator("#gallery img").first).to_be_visible(timeout=90_000)
        expect(frame.locator("#timing")).to_contain_text("ONNX Runtime (CPU)")
        expect(frame.locator("#history")).to_contain_text("a handwritten digit seven")
        page.get_by_role("heading", name="Playground").scroll_into_view_if_needed()
        screenshot(page, "playground")
        browser.close()


def test_layout_keeps_every_control_in_view_and_names_the_empty_state(home: Path) -> None:
    """With no model yet the picker says what to do; sliders get a row each (side by side their
    number boxes and end labels were clipped); Generate sits above the settings; the gallery wraps."""
    import gradio as gr

    from app.playground import NO_MODEL, build_playground

    blocks = build_playground()
    (model,) = [b for b in blocks.blocks.values() if getattr(b, "elem_id", None) == "model"]
    assert model.choices == [] and model.info == NO_MODEL
    for row in (b for b in blocks.blocks.values() if isinstance(b, gr.Row)):
        assert sum(isinstance(c, gr.Slider) for c in row.children) <= 1, "two sliders share a row"
    order = [b for b in blocks.blocks.values() if isinstance(b, gr.Button | gr.Slider)]
    generate = next(i for i, b in enumerate(order) if getattr(b, "elem_id", None) == "generate")
    assert generate < next(i for i, b in enumerate(order) if isinstance(b, gr.Slider))
    (gallery,) = [b for b in blocks.blocks.values() if getattr(b, "elem_id", None) == "gallery"]
    assert gallery.columns == 2 and gallery.height == "auto"
