"""Home: the studio's state at a glance and the demo button, in AppTest and in a real browser."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.browser import REPO, launch, screenshot, studio_server


def home_app() -> AppTest:
    return AppTest.from_file(str(REPO / "app" / "main.py"), default_timeout=120)


def test_empty_studio_shows_the_way_in(home: Path) -> None:
    at = home_app().run()
    assert not at.exception
    assert at.title[0].value.endswith("Diffusion Studio")
    assert any("No runs yet" in i.value for i in at.info)
    assert [b.label for b in at.button][:2] == ["▶️ Run the demo", "⚡ Quick demo"]


def test_demo_button_starts_a_real_job(home: Path) -> None:
    from jobs import control
    from jobs.records import list_jobs

    at = home_app().run()
    at.button[1].click().run()
    assert not at.exception
    jobs = list_jobs()
    assert len(jobs) == 1 and jobs[0].dataset.startswith("digits@")
    assert jobs[0].mlflow_run_id  # the run exists before the job starts
    assert any("Demo job" in m.value for m in at.markdown)
    control.stop(jobs[0].id)


def test_recent_runs_show_a_running_jobs_loss_from_its_own_metrics() -> None:
    """MLflow gets metrics in batches; while a run trains, Home reads its newest loss from metrics.jsonl."""
    from pages.home import newest_loss

    rows = [{"step": 2, "vae_loss": 0.8}, {"step": 3, "vae_val_mse": 0.4}, {"step": 2, "loss": 1.1}, {"step": 3, "val_loss": 0.9}]
    assert newest_loss(rows) == 1.1
    assert newest_loss(rows[:2]) == 0.8  # the VAE stage trains first
    assert newest_loss([]) is None


def test_an_active_job_launched_without_a_run_name(demo: str) -> None:
    """The Train page launches without a name: the job's config holds `run_name: None`."""
    from core.training.config import build_config
    from jobs import control
    from tests.conftest import TINY_OVERRIDES

    job = control.launch(build_config({"preset": "tiny", "dataset": demo}, TINY_OVERRIDES))
    try:
        assert job.config["run_name"] is None
        at = home_app().run()
        assert not at.exception, at.exception
        assert at.metric[2].label == "Jobs running or queued" and at.metric[2].value == "1"
        assert [b.label for b in at.button][:2] == ["▶️ Run the demo", "⚡ Quick demo"]  # not taken for the demo
    finally:
        control.stop(job.id)


@pytest.mark.slow
def test_home_is_fresh_when_the_demo_ends(demo: str) -> None:
    """When the demo succeeds, the counters and the runs table follow at once, and Home offers next steps."""
    import time

    from core.training.config import build_config
    from jobs import control
    from jobs.records import FINAL
    from tests.conftest import TINY_OVERRIDES

    job = control.launch(build_config({"preset": "tiny", "dataset": demo}, TINY_OVERRIDES), name="demo-quick")
    at = home_app().run()
    assert any("Demo job" in m.value for m in at.markdown) and at.metric[2].value == "1"
    deadline = time.monotonic() + 600
    while control.poll(job.id).status not in FINAL:
        assert time.monotonic() < deadline, "the demo job did not finish"
        time.sleep(1.0)
    assert control.poll(job.id).status == "succeeded"
    at.run()  # what the live fragment's next tick does
    assert not at.exception
    assert at.metric[2].label == "Jobs running or queued" and at.metric[2].value == "0"
    assert "The demo finished" in at.success[0].value
    assert [link.label for link in at.get("page_link")] == ["Open the run", "Try it in the Playground", "Compare with another run", "Import your own data"]
    assert "running" not in at.dataframe[0].value["status"].iloc[0]


@pytest.mark.browser
def test_home_in_chromium(demo_home: Path, tmp_path: Path) -> None:
    import shutil

    from playwright.sync_api import expect, sync_playwright

    home = tmp_path / "home"
    shutil.copytree(demo_home, home)
    with studio_server(home) as url, sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(url, timeout=60_000)
        expect(page.get_by_text("Diffusion Studio").first).to_be_visible(timeout=60_000)
        # The page's first render waits on the catalog and MLflow: give it time on a loaded machine.
        expect(page.get_by_role("button", name="▶️ Run the demo")).to_be_visible(timeout=60_000)
        expect(page.get_by_text("No runs yet")).to_be_visible(timeout=60_000)
        page.wait_for_timeout(1500)  # the datasets table draws on a canvas after the rest
        screenshot(page, "home")
        # The default page answers at its own name too (it used to say "Page not found").
        page.goto(f"{url}/home", timeout=60_000)
        expect(page.get_by_role("button", name="▶️ Run the demo")).to_be_visible(timeout=60_000)
        expect(page.get_by_text("Page not found")).to_have_count(0)
        browser.close()
