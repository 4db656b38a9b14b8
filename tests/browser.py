"""Browser-test plumbing: a real `streamlit run` of the studio and Debian's chromium via Playwright."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from jobs.team_stack import wait_http
from tests.servers import free_port

REPO = Path(__file__).resolve().parent.parent
SCREENSHOTS = REPO / "docs" / "screenshots"  # refreshed by `make screenshots`, never by a plain test run
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def studio_server(home: Path, env: dict[str, str] | None = None, port: int | None = None, args: tuple[str, ...] = ()) -> Iterator[str]:
    """`streamlit run app/main.py [args]` on `port` (default a free one) with STUDIO_HOME=home; yields its base URL."""
    port = port or free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.port", str(port), *args],
        cwd=REPO,
        env={**os.environ, "STUDIO_HOME": str(home), **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(server, "the studio", f"http://127.0.0.1:{port}/_stcore/health", timeout=120)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


def launch(playwright):  # type: ignore[no-untyped-def]
    """Debian's chromium (never a downloaded browser), headless, with no network of its own."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def upload_zip(page, url: str, name: str, archive: Path) -> None:  # type: ignore[no-untyped-def]
    """On the Datasets page's import form, name the dataset `name`, choose `archive` and press Import."""
    from playwright.sync_api import expect

    page.goto(f"{url}/datasets?new=1", timeout=120_000)
    expect(page.get_by_text("Import images and captions")).to_be_visible(timeout=120_000)
    page.get_by_placeholder("my-cats").fill(name)
    page.get_by_placeholder("my-cats").press("Enter")
    page.locator("input[type=file]").first.set_input_files(str(archive))
    page.get_by_role("button", name="📥 Import").click()


def screenshot(page, name: str) -> Path:  # type: ignore[no-untyped-def]
    """Save the page as `name`.png: into docs/screenshots under STUDIO_SCREENSHOTS=1 (`make
    screenshots`), else into a temp folder, so a test run leaves the checkout as it was."""
    folder = SCREENSHOTS if os.environ.get("STUDIO_SCREENSHOTS") == "1" else Path(tempfile.gettempdir()) / "studio-screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path))
    return path
