"""A new user's whole journey as one test, in Debian's chromium at 1400×900 on a fresh STUDIO_HOME:
the demo on Home, an import with broken files, a caption edit saved as a version, a second run
from a recipe, the comparison, an ONNX export and a generation in the Playground. Each main step
saves the README's screenshot (`make screenshots` refreshes docs/screenshots from here)."""

from __future__ import annotations

import io
import re
import shutil
import time
import zipfile
from pathlib import Path

import pytest

from tests.browser import launch, screenshot, studio_server, upload_zip
from tests.conftest import use_home
from tests.servers import free_port
from tests.test_datasets_browser import circles

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.xdist_group("journey")]

# The demo, made tiny: the same launch as Home's "⚡ Quick demo" (its recipe, its job name), with
# few enough steps for a test, and enough that the live view is seen moving.
DEMO_OVERRIDES = [
    "vae.steps=6", "unet.steps=40", "vae.batch_size=8", "unet.batch_size=8", "vae.warmup_steps=2", "unet.warmup_steps=2",
    "log_every=2", "validate_every=20", "sample_every=20", "checkpoint_every=20", "sample_steps=3", "sample_images_per_prompt=1",
]
TIMEOUT = 600_000  # ms: the generous bound of a wait on work (training, export), never an assertion on speed


def journey_zip(path: Path) -> Path:
    """Ten captioned pictures and two broken files."""
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(10):
            zf.writestr(f"shapes/shape_{i:02d}.png", circles(i))
            zf.writestr(f"shapes/shape_{i:02d}.txt", f"coloured circles, sample {i}")
        zf.writestr("shapes/broken.png", b"not an image")
        zf.writestr("shapes/truncated.png", circles(3)[:60])
    return path


def wait_for_job(job_id: str) -> str:
    from jobs import control
    from jobs.records import FINAL

    deadline = time.monotonic() + TIMEOUT / 1000
    while (status := control.poll(job_id).status) not in FINAL:
        assert time.monotonic() < deadline, f"job {job_id} did not finish"
        time.sleep(1.0)
    return status


def highlighted_cells_have_dark_text(png: bytes) -> tuple[bool, bool]:
    """(a highlighted cell is drawn, dark text is drawn on it) in a screenshot of the table's canvas."""
    from PIL import Image

    im = Image.open(io.BytesIO(png)).convert("RGB")
    px = im.load()
    yellow = [(x, y) for x in range(im.width) for y in range(im.height) if px[x, y] == (255, 243, 176)]
    if not yellow:
        return False, False
    x0, x1 = min(x for x, _ in yellow), max(x for x, _ in yellow)
    y0, y1 = min(y for _, y in yellow), max(y for _, y in yellow)
    dark = sum(1 for x in range(x0, x1 + 1) for y in range(y0, y1 + 1) if sum(px[x, y]) < 240)
    return True, dark > 0


def open_tab(page, name: str) -> None:  # type: ignore[no-untyped-def]
    """Click a tab once a rerun's stale copy of the tab bar is gone (both answer to the name meanwhile)."""
    from playwright.sync_api import expect

    tab = page.get_by_role("tab", name=re.compile(name))
    expect(tab).to_have_count(1, timeout=60_000)
    tab.click()


def test_the_journey(demo_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from playwright.sync_api import expect, sync_playwright

    from core.datasets.demo import ensure_demo_dataset
    from core.datasets.versions import list_versions
    from core.export_records import list_exports
    from core.tracking import samples
    from core.training.config import build_config
    from core.training.recipes import QUICK_DEMO
    from jobs import control
    from jobs.records import list_jobs

    home = tmp_path / "home"
    shutil.copytree(demo_home, home)
    use_home(home, monkeypatch)  # this process reads the same catalog, jobs and MLflow store as the server
    archive = journey_zip(tmp_path / "shapes.zip")

    with studio_server(home, {"STUDIO_PLAYGROUND_PORT": str(free_port())}) as url, sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1400, "height": 900})

        # 1. The demo, launched as Home's button does; Home follows it live and is fresh when it ends.
        ref = ensure_demo_dataset()
        demo = control.launch(build_config({**QUICK_DEMO, "dataset": ref}, DEMO_OVERRIDES), name="demo-quick")
        page.goto(url, timeout=120_000)
        heading = page.locator('[data-testid="stMarkdownContainer"] p').filter(has_text=f"Demo job {demo.id}")
        expect(heading).to_be_visible(timeout=120_000)
        first = heading.inner_text()
        assert re.search(r"step \d+/\d+", first), first
        expect(heading).not_to_have_text(first, timeout=TIMEOUT)  # the step moves without a reload
        expect(page.get_by_text("The demo finished")).to_be_visible(timeout=TIMEOUT)
        assert control.poll(demo.id).status == "succeeded"
        jobs_metric = page.locator('[data-testid="stMetric"]').filter(has_text="Jobs running or queued")
        expect(jobs_metric.locator('[data-testid="stMetricValue"]')).to_have_text("0", timeout=60_000)
        for label in ("Open the run", "Try it in the Playground", "Compare with another run", "Import your own data"):
            expect(page.get_by_role("link", name=re.compile(label))).to_be_visible()
        page.wait_for_timeout(1500)  # the tables draw on a canvas after the rest
        screenshot(page, "home")

        # 2. Import a zip with two broken files: the report and the quarantine show them.
        upload_zip(page, url, "shapes", archive)
        expect(page.get_by_text("Imported 10 images")).to_be_visible(timeout=120_000)
        expect(page.get_by_text("2 quarantined")).to_be_visible()
        open_tab(page, "Validation \\(2\\)")
        expect(page.get_by_text("2 files could not be used")).to_be_visible(timeout=60_000)
        (v1,) = [v.version for v in list_versions("shapes")]
        page.wait_for_timeout(1000)
        screenshot(page, "datasets")

        # 3. Edit a caption in the Captions table, Save version: the export picker moves to it.
        open_tab(page, "Captions")
        editor = page.locator('[data-testid="stTabPanel"]:visible [data-testid="stDataFrame"]').first
        expect(editor).to_be_visible(timeout=60_000)
        editor.scroll_into_view_if_needed()
        unsaved = page.locator('[data-testid="stMetric"]').filter(has_text="Unsaved edits").locator('[data-testid="stMetricValue"]')
        for _ in range(5):  # the grid is a canvas: a key that lands before it takes focus is lost, so each step is checked
            page.wait_for_timeout(1000)
            box = editor.bounding_box()
            assert box
            page.mouse.click(box["x"] + 30, box["y"] + 35 + 17)  # the first row's file cell
            page.wait_for_timeout(300)
            page.keyboard.press("ArrowRight")  # its caption
            page.keyboard.press("Enter")  # opens the cell's editor, a textarea over the canvas
            cell = page.locator("textarea.gdg-input")
            try:
                expect(cell).to_be_visible(timeout=5_000)
            except AssertionError:
                page.keyboard.press("Escape")
                continue
            cell.fill("a circle edited in the journey")
            cell.press("Enter")
            try:
                expect(unsaved).to_have_text("1", timeout=20_000)
                break
            except AssertionError:
                page.keyboard.press("Escape")
        expect(unsaved).to_have_text("1")
        page.get_by_role("button", name="💾 Save version").click()
        expect(unsaved).to_have_text("0", timeout=120_000)
        v2 = next(v.version for v in list_versions("shapes") if v.version != v1)
        open_tab(page, "Versions")
        picker = page.get_by_role("combobox", name="Version to export or push")
        expect(picker).to_have_value(v2, timeout=60_000)
        expect(page.get_by_text(f"Train on it with shapes@{v2}")).to_be_visible()

        # 4. A second run from the quick-demo recipe on the Train page, with tiny steps.
        page.goto(f"{url}/train", timeout=120_000)
        page.get_by_text("Start from a recipe").click()
        page.get_by_role("combobox", name="Recipe").click()
        page.get_by_role("option", name=re.compile("^quick-demo")).click()
        page.get_by_role("button", name="Fill in the form").click()
        expect(page.get_by_text("Filled in the quick-demo recipe")).to_be_visible(timeout=60_000)
        for label, value in (("VAE steps", "6"), ("UNet steps", "6")):
            field = page.get_by_label(label, exact=True)
            field.fill(value)
            field.press("Enter")
            expect(field).to_have_value(value, timeout=30_000)
        before = {j.id for j in list_jobs()}
        page.get_by_role("button", name="🚀 Launch").click()
        expect(page.get_by_text(re.compile(r"Launched job \S+: follow it"))).to_be_visible(timeout=240_000)  # after the estimate
        (second,) = [j for j in list_jobs() if j.id not in before]
        watch = page.get_by_role("combobox", name="Watch")
        expect(watch).to_have_value(re.compile(re.escape(second.id)), timeout=60_000)  # the Watch box follows the new job
        recipe = build_config({**QUICK_DEMO, "dataset": second.config["dataset"]}).model_dump(mode="json")
        config = second.config
        assert (config["vae"]["steps"], config["unet"]["steps"]) == (6, 6)
        for key in ("sample_guidance", "sample_steps", "log_every", "sample_images_per_prompt"):  # not on the form
            assert config[key] == recipe[key], key
        for stage, key in (("vae", "warmup_steps"), ("unet", "warmup_steps"), ("unet", "caption_dropout"), ("vae", "kl_weight"), ("unet", "lr_schedule")):
            assert config[stage][key] == recipe[stage][key], f"{stage}.{key}"
        assert wait_for_job(second.id) == "succeeded"
        expect(page.get_by_text("This job has ended")).to_be_visible(timeout=60_000)
        page.get_by_role("heading", name="Jobs").scroll_into_view_if_needed()  # the page scrolls in its own container
        page.wait_for_timeout(1000)
        screenshot(page, "train")

        # 5. Compare the two runs: a readable "Parameters that differ" table, prompt-labelled samples.
        a, b = demo.mlflow_run_id, control.poll(second.id).mlflow_run_id
        page.goto(f"{url}/runs?compare={a},{b}", timeout=120_000)
        expect(page.get_by_text("Samples by prompt")).to_be_visible(timeout=120_000)
        expect(page.get_by_text("Parameters that differ")).to_be_visible()
        table = page.locator('[data-testid="stDataFrame"]').first
        table.scroll_into_view_if_needed()
        page.wait_for_timeout(1500)
        drawn, dark_text = highlighted_cells_have_dark_text(table.screenshot())
        assert drawn, "no highlighted cell in the table of parameters that differ"
        assert dark_text, "the highlighted cells' text is not dark on their light background"
        indexes = {r: samples.image_index(r) for r in (a, b)}
        step = max(s for index in indexes.values() for s in samples.image_steps(index))
        grid = samples.sample_grid([a, b], step, indexes)
        prompts = list(grid)
        assert prompts
        images = page.locator('[data-testid="stImage"] img')
        expect(images).to_have_count(sum(c.path is not None for cells in grid.values() for c in cells), timeout=60_000)
        for prompt in prompts:
            expect(page.get_by_text(prompt, exact=True).first).to_be_visible()
        page.get_by_role("heading", name=re.compile("^Comparing")).scroll_into_view_if_needed()
        page.wait_for_timeout(1000)
        screenshot(page, "runs")

        # 6. Export the demo's run to ONNX from its Actions; the Export page shows the parity.
        page.goto(f"{url}/runs?run={a}", timeout=120_000)
        open_tab(page, "Actions")
        page.get_by_role("button", name="📦 Export to ONNX").click()
        expect(page.get_by_text("Exported to ONNX and registered")).to_be_visible(timeout=TIMEOUT)
        (export,) = list_exports()
        page.goto(f"{url}/export", timeout=120_000)
        expect(page.get_by_text("Parity with PyTorch:")).to_be_visible(timeout=120_000)
        expect(page.get_by_text("within tolerance")).to_be_visible()
        page.wait_for_timeout(1000)
        screenshot(page, "export")

        # 7. Generate in the Playground from the export, with ONNX Runtime.
        page.goto(f"{url}/playground?model={export.id}", timeout=120_000)
        frame = page.frame_locator("iframe").first
        expect(frame.locator("#generate")).to_be_visible(timeout=120_000)
        expect(frame.locator("#model input")).to_have_value(re.compile(re.escape(export.id)), timeout=60_000)
        frame.locator("#backend").get_by_text("ONNX Runtime").click()
        frame.locator("#generate").click()
        expect(frame.locator("#gallery img").first).to_be_visible(timeout=TIMEOUT)
        expect(frame.locator("#timing")).to_contain_text("ONNX Runtime")
        page.get_by_role("heading", name="Playground").scroll_into_view_if_needed()
        screenshot(page, "playground")
        browser.close()
