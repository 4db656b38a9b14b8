"""The Datasets page in Debian's chromium: upload a zip, see the report and the gallery; the
screenshot in docs/screenshots/datasets.png comes from this test."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from tests.browser import launch, screenshot, studio_server, upload_zip


def circles(i: int) -> bytes:
    """A small picture: coloured circles on a gradient, different for every i."""
    import io

    im = Image.new("RGB", (96, 64 + 8 * (i % 4)), (30 + 15 * i, 60, 160 - 8 * i))
    draw = ImageDraw.Draw(im)
    for k in range(3):
        x, y = (17 * i + 29 * k) % 70, (11 * i + 23 * k) % 40
        draw.ellipse((x, y, x + 26, y + 26), fill=((90 * k + 40 * i) % 255, (200 - 30 * k) % 255, (60 * i) % 255))
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()



@pytest.mark.browser
def test_upload_zip_and_see_the_gallery(tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    archive = tmp_path / "shapes.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(14):
            zf.writestr(f"shapes/shape_{i:02d}.png", circles(i))
            zf.writestr(f"shapes/shape_{i:02d}.txt", f"coloured circles, sample {i}, {'warm' if i % 2 else 'cool'} tones")
        zf.writestr("shapes/broken.png", b"not an image")
    with studio_server(tmp_path / "home") as url, sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        upload_zip(page, url, "shapes", archive)
        expect(page.get_by_text("Imported 14 images")).to_be_visible(timeout=90_000)
        expect(page.get_by_text("coloured circles, sample 0,")).to_be_visible(timeout=30_000)
        expect(page.locator("[data-testid=stImage] img").first).to_be_visible(timeout=30_000)
        page.get_by_text("Show").first.scroll_into_view_if_needed()
        page.mouse.wheel(0, 420)
        page.wait_for_timeout(1500)
        screenshot(page, "datasets")
        browser.close()


@pytest.mark.browser
def test_a_folder_streamed_to_disk_through_the_upload_box_imports(tmp_path: Path) -> None:
    """The upload box in its iframe sends a picked folder file by file to the API's upload route;
    the finished upload appears on the page and imports under the name typed above."""
    from playwright.sync_api import expect, sync_playwright

    from tests.servers import free_port

    folder = tmp_path / "pets"
    folder.mkdir()
    for i in range(6):
        (folder / f"pet_{i}.png").write_bytes(circles(i))
        (folder / f"pet_{i}.txt").write_text(f"a pet drawn as circles, number {i}")
    env = {"STUDIO_PLAYGROUND_PORT": str(free_port())}
    with studio_server(tmp_path / "home", env=env) as url, sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{url}/datasets", timeout=60_000)
        expect(page.get_by_text("Import images and captions")).to_be_visible(timeout=60_000)
        page.get_by_placeholder("my-cats").fill("pets")
        page.get_by_placeholder("my-cats").press("Enter")
        page.get_by_text("Larger than 200 MB? Upload straight to disk").click()
        box = page.frame_locator("iframe[src*='/uploads/']")  # once the API server has started
        expect(box.get_by_text("Choose a folder")).to_be_visible(timeout=180_000)
        box.locator("#folder").set_input_files(str(folder))
        expect(box.get_by_text("Uploaded 12 file(s)")).to_be_visible(timeout=60_000)
        row = page.get_by_text("pets/pet_0.png", exact=False)
        expect(row).to_be_visible(timeout=30_000)
        # The row's own button (keyed by its upload), not the uploader's: the row redraws every 3 s.
        page.locator("[class*='st-key-import-']").get_by_role("button", name="📥 Import").click()
        expect(page.get_by_text("Imported 6 images")).to_be_visible(timeout=90_000)
        browser.close()
