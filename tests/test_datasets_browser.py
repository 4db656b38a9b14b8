"""The Datasets page in Debian's chromium: upload a zip, see the report and the gallery; the
screenshot in docs/screenshots/datasets.png comes from this test."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

from PIL import Image, ImageDraw


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

REPO = Path(__file__).resolve().parent.parent
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.mark.browser
def test_upload_zip_and_see_the_gallery(tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    archive = tmp_path / "shapes.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(14):
            zf.writestr(f"shapes/shape_{i:02d}.png", circles(i))
            zf.writestr(f"shapes/shape_{i:02d}.txt", f"coloured circles, sample {i}, {'warm' if i % 2 else 'cool'} tones")
        zf.writestr("shapes/broken.png", b"not an image")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "STUDIO_HOME": str(tmp_path / "home")}
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.port", str(port), "--server.headless", "true"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"http://127.0.0.1:{port}/datasets", timeout=60_000)
            expect(page.get_by_text("Import images and captions")).to_be_visible(timeout=60_000)
            page.get_by_placeholder("my-cats").fill("shapes")
            page.get_by_placeholder("my-cats").press("Enter")
            page.locator("input[type=file]").first.set_input_files(str(archive))
            page.get_by_role("button", name="📥 Import").click()
            expect(page.get_by_text("Imported 14 images")).to_be_visible(timeout=90_000)
            expect(page.get_by_text("coloured circles, sample 0,")).to_be_visible(timeout=30_000)
            expect(page.locator("[data-testid=stImage] img").first).to_be_visible(timeout=30_000)
            page.get_by_text("Show").first.scroll_into_view_if_needed()
            page.mouse.wheel(0, 420)
            page.wait_for_timeout(1500)
            shots = REPO / "docs" / "screenshots"
            shots.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shots / "datasets.png"))
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=20)
