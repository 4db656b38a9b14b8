"""The Runs page in Debian's chromium: a shared comparison link of two real runs renders its curves
and the prompt × run sample grid (docs/screenshots/runs.png comes from this test); a run's
"Open in Playground" lands on the embedded playground with that run's model chosen."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.browser import launch, screenshot, studio_server
from tests.servers import free_port

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_shared_comparison_link_shows_curves_and_sample_grid(runs_store: dict) -> None:
    from playwright.sync_api import expect, sync_playwright

    from core.inference.models import list_models

    a, b = runs_store["runs"]["tiny-a"], runs_store["runs"]["tiny-b"]
    playground = {"STUDIO_PLAYGROUND_PORT": str(free_port())}
    with studio_server(Path(runs_store["home"]), playground) as url, sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{url}/runs?compare={a},{b}", timeout=120_000)
        expect(page.get_by_text("Samples by prompt")).to_be_visible(timeout=120_000)
        expect(page.get_by_text("Parameters that differ")).to_be_visible()
        expect(page.locator('[data-testid="stVegaLiteChart"]').first).to_be_visible(timeout=60_000)

        images = page.locator('[data-testid="stImage"] img')
        expect(images).to_have_count(6, timeout=60_000)  # 3 prompts × 2 runs
        images.last.scroll_into_view_if_needed()
        page.wait_for_function(
            "() => [...document.querySelectorAll('[data-testid=\"stImage\"] img')].every(i => i.complete && i.naturalWidth > 0)",
            timeout=60_000,
        )
        assert "step 6" in page.locator('[data-testid="stImage"]').first.inner_text() or page.get_by_text("step 6").count() >= 2

        page.get_by_text("Curves").first.scroll_into_view_if_needed()
        page.evaluate("window.scrollTo(0, 0)")
        page.wait_for_timeout(1000)
        screenshot(page, "runs")

        # The runs table fits the page at 1400 px: no column hides behind a horizontal scroll.
        page.goto(f"{url}/runs", timeout=120_000)
        table = page.locator("table.runs-table")
        expect(table).to_be_visible(timeout=120_000)
        overflow = table.evaluate("t => t.parentElement.scrollWidth - t.parentElement.clientWidth")
        assert overflow <= 0, f"the runs table is {overflow} px wider than the page"

        # tiny-b is the playground's default (the newest model), so seeing tiny-a is the preselection.
        assert list_models()[0].id == b
        page.goto(f"{url}/runs?run={a}", timeout=120_000)
        page.get_by_role("tab", name="Actions").click()
        page.get_by_role("button", name="Open in Playground").click()
        page.wait_for_url(f"**/playground?model={a}", timeout=60_000)
        chosen = page.frame_locator("iframe").first.locator("#model input")
        expect(chosen).to_have_value(re.compile(r"run tiny-a "), timeout=120_000)
        browser.close()
