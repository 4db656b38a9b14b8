"""A subject fine-tune (DreamBooth, LoRA) as one user's journey, in Debian's chromium at 1400×900 on
a fresh STUDIO_HOME: a zip of thirty photos of every shape uploaded and versioned, their
aspect-ratio buckets, a LoRA run with prior preservation estimated then launched on a tiny base,
its kohya-format LoRA downloaded from the Export page, and that file applied in the Playground at
two strengths. Each main step saves a `subject-*` screenshot (`make screenshots` keeps them)."""

from __future__ import annotations

import io
import re
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from tests.browser import launch, screenshot, studio_server, upload_zip
from tests.conftest import use_home
from tests.servers import free_port
from tests.test_journey import TIMEOUT, open_tab, wait_for_job

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.xdist_group("subject_journey")]

DATASET = "robot"
INSTANCE, CLASS = "a photo of sks robot", "a photo of a robot"
# (width, height) of the thirty photos: portraits, landscapes, squares, one tiny and one big.
SIZES = [(96, 144)] * 8 + [(120, 160)] * 3 + [(160, 96)] * 8 + [(200, 120)] * 3 + [(128, 128)] * 6 + [(24, 24), (1600, 1200)]


def photo(seed: int, size: tuple[int, int]) -> bytes:
    """A photo-like JPEG: a smooth two-colour gradient, a few soft shapes, and sensor noise."""
    rng = np.random.default_rng(seed)
    width, height = size
    yy, xx = np.meshgrid(np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij")
    angle = rng.uniform(0, np.pi)
    ramp = xx * np.cos(angle) + yy * np.sin(angle)
    ramp = ((ramp - ramp.min()) / (np.ptp(ramp) or 1.0))[..., None]
    low, high = rng.uniform(20, 235, 3), rng.uniform(20, 235, 3)
    image = Image.fromarray((low * (1 - ramp) + high * ramp).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(4):
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        rx, ry = rng.uniform(0.08, 0.3) * width, rng.uniform(0.08, 0.3) * height
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        box = (x - rx, y - ry, x + rx, y + ry)
        (draw.ellipse if rng.random() < 0.6 else draw.rectangle)(box, fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(max(1.0, min(size) / 60)))
    noisy = np.asarray(image, dtype=np.float32) + rng.normal(0, 6, (height, width, 3))
    buffer = io.BytesIO()
    Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def photos_zip(path: Path) -> Path:
    """Thirty captioned photos of the subject, of mixed shapes."""
    with zipfile.ZipFile(path, "w") as zf:
        for i, size in enumerate(SIZES):
            zf.writestr(f"robot/robot_{i:02d}.jpg", photo(i, size))
            zf.writestr(f"robot/robot_{i:02d}.txt", f"a toy robot on a table, photo {i}")
    return path


def metric(page, label: str):  # type: ignore[no-untyped-def]
    """The value of the Streamlit metric labelled `label`."""
    return page.locator('[data-testid="stMetric"]').filter(has_text=label).locator('[data-testid="stMetricValue"]')


def settled(page) -> None:  # type: ignore[no-untyped-def]
    """Wait until the page's script run is over (Streamlit marks its app element with the run's state)."""
    from playwright.sync_api import expect

    expect(page.get_by_test_id("stApp")).to_have_attribute("data-test-script-state", "notRunning", timeout=120_000)


def choose(page, box: str, option: str | re.Pattern) -> None:  # type: ignore[no-untyped-def]
    """Pick `option` in the selectbox named `box`; a list that a redraw closed before the click is opened again."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect

    for _ in range(3):
        page.get_by_role("combobox", name=box).click()
        try:
            page.get_by_role("option", name=option).click(timeout=15_000)
            break
        except PlaywrightTimeout:
            page.keyboard.press("Escape")
    expect(page.get_by_role("combobox", name=box)).to_have_value(option, timeout=30_000)


def enter(page, label: str, value: str, shown: str | re.Pattern | None = None) -> None:  # type: ignore[no-untyped-def]
    """Type into the field labelled `label` once a rerun's stale copy of it is gone, and send it."""
    from playwright.sync_api import expect

    field = page.get_by_label(label, exact=True)
    expect(field).to_have_count(1, timeout=60_000)
    field.fill(value)
    expect(field).to_have_count(1, timeout=60_000)
    field.press("Enter")
    expect(field).to_have_value(shown or value, timeout=30_000)


def to_top(locator) -> None:  # type: ignore[no-untyped-def]
    """Scroll the page (Streamlit scrolls in its own container) so `locator` is at the top."""
    locator.evaluate("e => e.scrollIntoView({block: 'start'})")


def gallery_image(page, frame) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The playground gallery's first image, fetched as the browser does."""
    src = frame.locator("#gallery img").first.get_attribute("src")
    assert src
    response = page.request.get(src)
    assert response.ok, src
    return np.asarray(Image.open(io.BytesIO(response.body())).convert("RGB"), dtype=np.int16)


def test_the_subject_journey(trained_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from playwright.sync_api import expect, sync_playwright
    from safetensors import safe_open

    from app.playground import HISTORY_COLUMNS
    from core.datasets import stats
    from core.datasets.buckets import DEFAULT_MAX_ASPECT
    from core.datasets.draft import load_draft
    from core.datasets.versions import list_versions
    from core.modeling.lora_files import FOLDER, KOHYA_FILE
    from core.tracking import create_run, get_tracking, model_folder
    from core.training.buckets import PRESET_GRIDS
    from jobs import control
    from jobs.records import list_jobs

    home = use_home(tmp_path / "home", monkeypatch)  # this process reads the same catalog, jobs and MLflow store as the server
    archive = photos_zip(tmp_path / "robot.zip")
    # The base: a tiny model trained earlier, a finished run of this studio (so the Playground lists it).
    base_run = create_run("tiny-base", {"preset": "tiny"})
    get_tracking().client.log_artifacts(base_run, str(trained_model), "model")
    get_tracking().client.set_terminated(base_run, "FINISHED")

    with studio_server(home, {"STUDIO_PLAYGROUND_PORT": str(free_port())}) as url, sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1400, "height": 900}, accept_downloads=True)

        # 1. Upload the zip in the browser and import it; a bulk caption edit saved as a second version.
        upload_zip(page, url, DATASET, archive)
        expect(page.get_by_text(f"Imported {len(SIZES)} images")).to_be_visible(timeout=240_000)
        expect(page.get_by_text("0 quarantined")).to_be_visible()
        # The server's process wrote the version; this process reads the catalog on its own connection.
        for _ in range(50):
            if versions := [v.version for v in list_versions(DATASET)]:
                break
            time.sleep(0.2)
        (v1,) = versions
        open_tab(page, "Captions")
        choose(page, "Operation", "Prepend a trigger word")
        enter(page, "Text", "sks")
        page.get_by_role("button", name=f"Apply to {len(SIZES)} captions").click()
        expect(metric(page, "Unsaved edits")).to_have_text("1", timeout=60_000)
        enter(page, "Version note", "trigger word sks")
        page.get_by_role("button", name="💾 Save version").click()
        expect(metric(page, "Unsaved edits")).to_have_text("0", timeout=120_000)
        v2 = next(v for v in list_versions(DATASET) if v.version != v1)
        assert v2.note == "trigger word sks" and v2.n_items == len(SIZES)
        open_tab(page, "Versions")
        expect(page.get_by_text(f"Train on it with {DATASET}@{v2.version}")).to_be_visible(timeout=60_000)
        to_top(page.get_by_role("tab", name=re.compile("Versions")))
        page.wait_for_timeout(1500)  # the versions table draws on a canvas after the rest
        screenshot(page, "subject-datasets")

        # 2. The Statistics tab draws the aspect-ratio buckets these photos fill: more than one.
        open_tab(page, "Statistics")
        panel = page.locator('[data-testid="stTabPanel"]:visible')
        resolution, step = PRESET_GRIDS["tiny"]  # the bucket section's first model
        expected, _ = stats.bucket_histogram(load_draft(DATASET).items, resolution, step, DEFAULT_MAX_ASPECT)
        assert len(expected) > 1
        expect(metric(panel, "Buckets used")).to_have_text(str(len(expected)), timeout=60_000)
        charts = panel.locator('[data-testid="stVegaLiteChart"]')
        expect(charts).to_have_count(7, timeout=60_000)  # six plots of the images, then the buckets
        histogram = charts.last
        histogram.scroll_into_view_if_needed()
        expect(histogram.locator("canvas, svg").first).to_be_visible(timeout=60_000)
        page.wait_for_timeout(1500)  # vega draws after the element appears
        box = histogram.bounding_box()
        assert box and box["height"] > 100
        screenshot(page, "subject-buckets")

        # 3. A LoRA subject run on the Train page: the subject recipe on the tiny base, prior
        #    preservation with two generated class images, four steps; Estimate, then Launch.
        page.goto(f"{url}/train", timeout=120_000)
        expect(page.get_by_role("button", name="🚀 Launch")).to_be_visible(timeout=120_000)  # the whole form is drawn
        page.get_by_text("Start from a recipe").click()
        choose(page, "Recipe", re.compile("^subject"))
        page.get_by_role("button", name="Fill in the form").click()
        expect(page.get_by_text("Filled in the subject recipe")).to_be_visible(timeout=60_000)
        # The run that filled the form must finish drawing it: a change sent before then would send
        # the widgets' old values back, undoing the recipe's (LoRA rank 8 back to 0, say).
        settled(page)
        expect(page.get_by_role("combobox", name="Dataset")).to_have_value(DATASET)
        expect(page.get_by_role("combobox", name="Version")).to_have_value(v2.version)
        lora_rank = page.get_by_label("LoRA rank (0 = off)", exact=True)
        expect(lora_rank).to_have_value("8")  # the recipe's
        enter(page, "Base model folder", str(trained_model))
        enter(page, "Instance prompt", INSTANCE)
        enter(page, "Class prompt", CLASS)
        expect(page.get_by_role("checkbox", name="Prior preservation")).to_be_checked()
        enter(page, "Class images to generate", "2")
        enter(page, "UNet steps", "4")
        enter(page, "Batch size", "1")
        enter(page, "Learning rate", "0.01", re.compile(r"^0\.01"))  # a visible change in four steps
        page.get_by_text("Advanced", exact=True).click()
        page.get_by_text("Aspect-ratio buckets", exact=True).click()
        expect(page.get_by_role("checkbox", name="Aspect-ratio buckets")).to_be_checked(timeout=30_000)
        expect(lora_rank).to_have_value("8")
        page.get_by_role("button", name="📏 Estimate").click()
        expect(metric(page, "Peak memory")).to_have_text(re.compile(r"^[\d,]+ MB$"), timeout=TIMEOUT)
        expect(metric(page, "unet s/step")).to_have_text(re.compile(r"^\d+\.\d{3}$"))
        expect(metric(page, "Total time")).to_have_text(re.compile(r"\d"))
        metric(page, "Peak memory").scroll_into_view_if_needed()
        page.mouse.move(0, 0)  # no tooltip over the metrics
        page.wait_for_timeout(500)
        screenshot(page, "subject-estimate")
        before = {j.id for j in list_jobs()}
        page.get_by_role("button", name="🚀 Launch").click()
        expect(page.get_by_text(re.compile(r"Launched job \S+: follow it"))).to_be_visible(timeout=120_000)  # the estimate is kept
        (job,) = [j for j in list_jobs() if j.id not in before]
        config = job.config
        assert config["dataset"] == f"{DATASET}@{v2.version}" and config["base_model"] == str(trained_model), config
        assert (config["unet"]["lora_rank"], config["unet"]["steps"], config["buckets"]["enabled"]) == (8, 4, True), config
        subject = config["subject"]
        assert (subject["instance_prompt"], subject["class_prompt"], subject["prior_preservation"], subject["num_class_images"],
                subject["class_dataset"]) == (INSTANCE, CLASS, True, 2, None), subject
        assert wait_for_job(job.id) == "succeeded", control.logs(job.id, 60)
        assert f"Class images: 2 of {CLASS!r} (generated" in control.logs(job.id, 1000)  # by the base, before training
        expect(page.get_by_text("This job has ended")).to_be_visible(timeout=60_000)
        to_top(page.get_by_role("heading", name="Jobs"))
        page.mouse.move(0, 0)  # no toolbar over the progress bar
        page.wait_for_timeout(1000)
        screenshot(page, "subject-train")

        # 4. The kohya-format LoRA, downloaded from the Export page's files for other tools.
        run_id = control.poll(job.id).mlflow_run_id
        assert run_id
        page.goto(f"{url}/export", timeout=120_000)
        choose(page, "Model to export", re.compile(re.escape(run_id[:8])))
        page.get_by_role("button", name="🧳 Prepare the files").click()
        kohya = page.get_by_role("button", name="⬇️ LoRA for kohya / ComfyUI")
        expect(kohya).to_be_visible(timeout=TIMEOUT)
        settled(page)  # the run that wrote the files is over: the button is the one the server keeps
        with page.expect_download(timeout=120_000) as caught:
            kohya.click()
        download = caught.value
        assert download.suggested_filename == f"{run_id}-lora.safetensors"
        lora = tmp_path / download.suggested_filename
        download.save_as(lora)
        assert lora.read_bytes() == (model_folder(run_id) / FOLDER / KOHYA_FILE).read_bytes()
        with safe_open(str(lora), framework="pt") as f:
            keys, metadata = list(f.keys()), f.metadata()
        assert keys and all(k.startswith("lora_unet_") for k in keys)
        assert {k.split(".", 1)[1] for k in keys} == {"lora_down.weight", "lora_up.weight", "alpha"}
        assert metadata["ss_network_module"] == "networks.lora" and metadata["ss_network_dim"] == str(config["unet"]["lora_rank"])
        assert metadata["ss_steps"] == "4" and metadata["ss_sd_model_name"] == trained_model.name
        page.wait_for_timeout(500)
        screenshot(page, "subject-export")

        # 5. The downloaded file on the base in the Playground, at strength 0.5 and 1.0: both draw, differently.
        page.goto(f"{url}/playground?model={base_run}", timeout=120_000)
        frame = page.frame_locator("iframe").first
        expect(frame.locator("#generate")).to_be_visible(timeout=120_000)
        expect(frame.locator("#model input")).to_have_value(re.compile(re.escape(base_run[:8])), timeout=60_000)
        frame.locator("#prompt textarea").fill(INSTANCE)
        frame.get_by_text("LoRA (PyTorch)").click()
        frame.locator("input[type=file]").first.set_input_files(str(lora))
        expect(frame.locator("#lora input")).to_have_value(re.compile(r"^uploaded .*-lora\.safetensors"), timeout=60_000)
        strength_column = HISTORY_COLUMNS.index("lora strength") + 1
        images = []
        for strength in ("0.5", "1"):
            field = frame.locator("#lora-strength input[type=number]")
            field.fill(strength)
            field.press("Enter")
            expect(frame.locator("#lora-strength input[type=range]")).to_have_value(strength, timeout=30_000)
            frame.locator("#generate").click()
            # The history's grid has a row more (header included) once the images are in; its newest
            # row records the strength used.
            expect(frame.locator("#history [role=grid]")).to_have_attribute("aria-rowcount", str(len(images) + 2), timeout=TIMEOUT)
            expect(frame.locator(f'#history [role=row][aria-rowindex="2"] [aria-colindex="{strength_column}"]')).to_have_text(strength)
            expect(frame.locator("#gallery img").first).to_be_visible()
            images.append(gallery_image(page, frame))
        assert images[0].shape == images[1].shape
        assert np.abs(images[0] - images[1]).max() > 0, "the LoRA at 0.5 and at 1.0 drew the same image"
        to_top(frame.locator("#prompt"))  # the prompt, the images and the LoRA picked
        page.mouse.move(0, 0)
        page.wait_for_timeout(500)
        screenshot(page, "subject-playground")
        browser.close()
