"""The Train page through AppTest: the empty state, a recipe filled in, an inline validation error,
and one Launch click starting a real tiny job through the job system (stopped again at once). The
form's mapping to a config is tested without a page in test_train_form.py."""

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


def test_sagemaker_options_show_a_cost_estimate(home: Path) -> None:
    at = page()
    at.radio(key="train.backend").set_value("sagemaker").run()
    assert not at.exception and not at.warning
    assert at.selectbox(key="train.instance_type").value == "ml.g5.2xlarge" and at.checkbox(key="train.spot").value
    assert any("Estimated cost" in c.value for c in at.caption)


def test_estimate_shows_memory_time_cost_and_refuses_what_does_not_fit(demo: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from jobs import estimate
    from jobs.records import list_jobs
    from tests.test_estimate import canned

    monkeypatch.setattr(estimate, "measure", lambda config: canned())  # the child process is tested in test_estimate.py
    at = page()
    at.radio(key="train.backend").set_value("sagemaker").run()
    at.button(key="train.estimate_button").click().run()
    assert not at.exception and not at.error
    shown = {m.label: m.value for m in at.metric}
    assert shown["Peak memory"] == "500 MB" and shown["vae s/step"] == "0.500" and shown["unet s/step"] == "0.500"
    assert shown["Total time"].endswith(("s", "min")) and shown["Cost"].startswith("$")

    monkeypatch.setattr(estimate, "measure", lambda config: canned(peak_mb=900_000.0))
    number(at, "Seed").set_value(7)  # a changed form is measured again
    at.radio(key="train.backend").set_value("local").run()
    assert any("changed since the last estimate" in c.value for c in at.caption)
    at.button(key="train.launch").click().run()
    assert not at.exception and "needs about 900,000 MB" in at.error[0].value and not list_jobs()


@pytest.mark.slow
def test_form_validates_then_launches_a_real_job(demo: str) -> None:
    from core.training.config import build_config
    from core.training.recipes import QUICK_DEMO
    from jobs import control
    from jobs.records import FINAL, get_job, list_jobs

    at = page()
    assert at.selectbox(key="train.dataset").value == "digits"
    assert at.selectbox(key="train.version").value == demo.split("@")[1]
    at.selectbox(key="train.recipe").set_value("quick-demo")
    at.button(key="train.fill_recipe").click().run()

    number(at, "LoRA rank (0 = off)").set_value(4)
    at.button(key="train.launch").click().run()
    assert "LoRA" in at.error[0].value and not list_jobs()  # one sentence, nothing launched

    number(at, "LoRA rank (0 = off)").set_value(0)
    at.radio(key="train.stage").set_value("unet")
    number(at, "UNet steps").set_value(30)
    number(at, "Batch size").set_value(8)
    number(at, "EMA decay (0 = off)").set_value(0.99)
    assert at.checkbox(key="train.zero_snr").disabled  # it needs v-prediction
    at.checkbox(key="train.v_prediction").check().run()
    assert not at.checkbox(key="train.zero_snr").disabled
    at.button(key="train.launch").click().run()
    assert not at.exception and not at.error
    (job,) = list_jobs()
    assert f"Launched job {job.id}" in at.success[0].value
    assert job.backend == "local" and job.dataset == demo and job.mlflow_run_id
    # The recipe as filled in, with the edits: what the form does not show (min-SNR γ 5, warmup,
    # caption dropout, sampling) comes through unchanged.
    edited = {**QUICK_DEMO, "dataset": demo, "stage": "unet", "unet": {**QUICK_DEMO["unet"], "steps": 30, "batch_size": 8, "ema_decay": 0.99, "prediction_type": "v_prediction"}}
    run_keys = {"output_dir", "mlflow_run_id", "run_name"}
    assert {k: v for k, v in job.config.items() if k not in run_keys | {"processes"}} == build_config(edited).model_dump(mode="json", exclude=run_keys)
    assert job.config["unet"]["min_snr_gamma"] == 5.0
    from core.tracking.runs import get_run

    assert float(get_run(job.mlflow_run_id).data.tags["estimate.total_seconds"]) > 0  # measured at Launch, kept with the run
    # The live view shows the launched job; the queue lists it.
    assert any(job.id in md.value for md in at.markdown)
    assert job.id in at.dataframe[0].value["job"].tolist()
    assert at.selectbox(key="train.watch").value == job.id

    # A second launch: the Watch box moves to it (it used to stay on the job watched before).
    at.button(key="train.launch").click().run()
    (second,) = [j for j in list_jobs() if j.id != job.id]
    assert not at.exception and at.selectbox(key="train.watch").value == second.id
    assert second.id in at.dataframe[0].value["job"].tolist()

    control.stop(second.id)
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


def test_the_watch_box_says_what_the_view_below_it_says(home: Path) -> None:
    """A job whose supervisor vanished since the page last looked (kill -9, a reboot): the live
    redraw settles it before drawing, so the Watch box and the view below it both say failed (the
    box used to say running until the next redraw)."""
    import subprocess

    from jobs.records import create_job, get_job

    gone = subprocess.Popen(["true"])
    gone.wait()
    create_job("vanished01", "train", "local", {}, "train.log", status="running", pid=gone.pid, pid_started=0)

    def live_jobs() -> None:
        import core  # noqa: F401
        from pages import train

        train.jobs_section()

    at = AppTest.from_function(live_jobs, default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert get_job("vanished01").status == "failed"
    assert at.selectbox(key="train.watch").options == ["vanished01 · failed"]
    assert any("failed" in md.value.lower() and "vanished01" in md.value for md in at.markdown)
