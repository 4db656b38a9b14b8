"""The Train page through AppTest: the empty state, an inline validation error, and one Launch
click starting a real tiny job through the job system (stopped again at once)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).with_name("train_page_app.py"))


def page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def number(at: AppTest, label: str):  # type: ignore[no-untyped-def]
    return next(n for n in at.number_input if n.label == label)


def test_empty_studio_explains_what_to_do(home: Path) -> None:
    at = page()
    assert "No dataset yet" in at.info[0].value
    assert next(b for b in at.button if b.label == "🚀 Launch").disabled



def test_a_recipe_fills_in_the_form_and_names_a_missing_dataset(demo: str) -> None:
    from core.training.recipes import FASHION

    at = page()
    at.selectbox(key="train.recipe").set_value("fashion")
    at.button(key="train.fill_recipe").click().run()
    assert not at.exception
    assert "no `fashion-mnist` dataset yet" in at.warning[0].value
    assert number(at, "UNet steps").value == FASHION["unet"]["steps"]
    assert at.checkbox(key="train.evaluate").value and number(at, "Images per guidance").value == FASHION["evaluate"]["n"]
    assert number(at, "VAE batch size").value == FASHION["vae"]["batch_size"] and at.checkbox(key="train.train_text").value
    assert at.selectbox(key="train.dataset").value == "digits"  # the only dataset stays chosen


def test_the_form_keeps_what_it_does_not_show_of_the_config_it_was_filled_from() -> None:
    from core.training.config import build_config
    from core.training.recipes import FASHION
    from pages.train import DEFAULTS, config_from_form

    values = {**DEFAULTS, "vae_batch_size": 8, "train_text": True}
    config = build_config(config_from_form("fashion-mnist", values, FASHION), [])
    assert config.unet.warmup_steps == FASHION["unet"]["warmup_steps"] and config.unet.train_text_encoder
    assert (config.vae.batch_size, config.unet.batch_size, config.evaluate) == (8, DEFAULTS["batch_size"], None)  # the form wins


@pytest.mark.slow
def test_form_validates_then_launches_a_real_job(demo: str) -> None:
    from jobs import control
    from jobs.records import FINAL, get_job, list_jobs

    at = page()
    assert at.selectbox(key="train.dataset").value == "digits"
    assert at.selectbox(key="train.version").value == demo.split("@")[1]

    number(at, "LoRA rank (0 = off)").set_value(4)
    at.button(key="train.launch").click().run()
    assert "LoRA" in at.error[0].value and not list_jobs()  # one sentence, nothing launched

    number(at, "LoRA rank (0 = off)").set_value(0)
    at.radio(key="train.stage").set_value("unet")
    number(at, "UNet steps").set_value(30)
    number(at, "Batch size").set_value(8)
    number(at, "EMA decay (0 = off)").set_value(0.99)
    at.checkbox(key="train.v_prediction").check()
    at.button(key="train.launch").click().run()
    assert not at.exception and not at.error
    (job,) = list_jobs()
    assert "is starting" in at.success[0].value or "is running" in at.success[0].value
    assert job.backend == "local" and job.dataset == demo and job.mlflow_run_id
    unet = job.config["unet"]
    assert (job.config["stage"], unet["steps"], unet["batch_size"], unet["ema_decay"], unet["prediction_type"]) == ("unet", 30, 8, 0.99, "v_prediction")
    # The live view shows the launched job; the queue lists it.
    assert any(job.id in md.value for md in at.markdown)
    assert job.id in at.dataframe[0].value["job"].tolist()

    control.stop(job.id)
    deadline = time.monotonic() + 240
    while control.refresh() or get_job(job.id).status not in FINAL:
        assert time.monotonic() < deadline, "the job did not stop"
        time.sleep(0.5)
    assert get_job(job.id).status == "stopped"

    # Clone pre-fills the form from the job's config.
    fresh = page()
    fresh.button(key="train.clone").click().run()
    assert number(fresh, "UNet steps").value == 30 and fresh.checkbox(key="train.v_prediction").value
