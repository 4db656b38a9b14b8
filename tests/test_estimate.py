"""The estimate before a launch: a few real steps in a child process (`studio train --dry-run`),
the refusals (memory over the device's, a batch larger than a bucket), the estimate recorded with
a run, and the Runs page comparing it with the real duration. No timing thresholds: the figures
depend on the machine."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.errors import StudioError
from core.training.estimate import RunEstimate, StageEstimate, memory_refusal
from tests.conftest import TINY_OVERRIDES


def canned(peak_mb: float = 500.0, device_mb: float = 16_000.0) -> RunEstimate:
    """An estimate as the child process reports one, for what only reads it."""
    stages = [StageEstimate(name=name, steps=10, batch_size=8, seconds_per_step=0.5, seconds=6.0) for name in ("vae", "unet")]
    return RunEstimate(device="cpu", threads=1, memory_measure="cpu_peak_rss", peak_memory_mb=peak_mb, baseline_memory_mb=300.0,
                       device_memory_mb=device_mb, stages=stages, allowances={"startup": 5.0, "final": 3.0}, total_seconds=18.0,
                       sample_images=40, dataset_images=1797, measured_at=datetime.now(UTC))


def test_dry_run_measures_the_tiny_config_and_launches_nothing(demo: str, capsys: pytest.CaptureFixture) -> None:
    from app.cli import main
    from jobs.records import list_jobs

    overrides = [a for o in TINY_OVERRIDES for a in ("--set", o)]
    code = main(["train", "--dataset", demo, *overrides, "--backend", "sagemaker", "--instance-type", "ml.g5.2xlarge",
                 "--instance-count", "2", "--dry-run", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["refusal"] is None and not list_jobs()
    run = RunEstimate.model_validate(out["run"])
    assert [s.name for s in run.stages] == ["vae", "unet"] and all(s.steps == 6 and s.seconds_per_step > 0 for s in run.stages)
    assert run.peak_memory_mb > run.baseline_memory_mb > 0 and run.device_memory_mb > 0 and run.memory_measure == "cpu_peak_rss"
    assert {"startup", "data", "setup", "validation", "sampling", "checkpoints", "final"} <= set(run.allowances)
    assert run.total_seconds >= sum(s.steps * s.seconds_per_step for s in run.stages) > 0
    assert 0 < run.sample_images <= run.dataset_images
    cloud = out["sagemaker"]
    assert cloud["instance_count"] == 2 and cloud["seconds"] > 0 and cloud["on_demand_usd"] > cloud["spot_usd"] > 0
    assert cloud["speed_note"].startswith("approximate, as of ")


def test_memory_over_the_device_is_refused_in_one_sentence() -> None:
    from jobs.cost import cloud_estimate

    fits = canned(peak_mb=500.0)
    assert memory_refusal(fits) is None
    sentence = memory_refusal(fits, limit_mb=400.0)
    assert sentence is not None and sentence.count(". ") == 0 and sentence.endswith(".")
    assert "500 MB" in sentence and "400 MB" in sentence and "lower the batch sizes" in sentence
    assert cloud_estimate(60.0, False, "ml.unknown", 1, True).seconds is None  # no speed: no figure rather than a guess


def test_a_batch_larger_than_the_smallest_bucket_is_refused() -> None:
    from core.datasets.buckets import aspect_buckets
    from core.datasets.demo import demo_items
    from core.training.config import build_config
    from core.training.estimate import bucket_refusal

    items = demo_items()
    train = sum(item.split == "train" for item in items)
    spec = aspect_buckets(32, 8, None, None, 3.0)
    config = build_config({"dataset": "digits", "buckets": {"enabled": True}, "unet": {"batch_size": train + 1}})
    sentence = bucket_refusal(config, items, spec)
    assert sentence is not None and f"holds only {train} training images" in sentence and f"unet batch of {train + 1}" in sentence
    assert bucket_refusal(config.model_copy(update={"unet": config.unet.model_copy(update={"batch_size": 8})}), items, spec) is None
    assert bucket_refusal(config.model_copy(update={"buckets": config.buckets.model_copy(update={"enabled": False})}), items, spec) is None


def test_a_refused_estimate_launches_nothing(demo: str) -> None:
    from core.training.config import build_config
    from jobs import control
    from jobs.estimate import LaunchEstimate
    from jobs.records import list_jobs

    refused = LaunchEstimate(run=canned(), refusal=memory_refusal(canned(peak_mb=900.0), limit_mb=100.0))
    with pytest.raises(StudioError, match="needs about 900 MB"):
        control.launch(build_config({"dataset": demo}), estimate=refused)
    assert not list_jobs()


def finished_run_with_estimate(estimated_s: float, actual_s: float) -> str:
    from core.tracking import create_run, get_tracking
    from core.tracking.writes import record_estimate
    from jobs.estimate import LaunchEstimate

    run_id = create_run("estimated", {"preset": "tiny", "stage": "all", "dataset": "digits@0123456789ab"})
    record_estimate(run_id, LaunchEstimate(run=canned().model_copy(update={"total_seconds": estimated_s})).tags())
    client = get_tracking().client
    client.set_terminated(run_id, "FINISHED", end_time=client.get_run(run_id).info.start_time + int(actual_s * 1000))
    return run_id


def runs_page() -> None:
    from pages.runs import render

    render()


def test_the_runs_page_shows_estimated_against_actual(home: Path) -> None:
    from core.tracking.runs import run_detail

    run_id = finished_run_with_estimate(estimated_s=120.0, actual_s=100.0)
    row = run_detail(run_id).row
    assert row.estimated_s == 120.0 and row.estimate_error_pct == pytest.approx(20.0)
    assert run_detail(run_id).tags["estimate.seconds_per_step.unet"] == "0.5"

    at = AppTest.from_function(runs_page, default_timeout=60).run()
    assert not at.exception
    table = next(m.value for m in at.markdown if "runs-table" in m.value)
    assert "<td>2.0 (+20%)</td>" in table

    at = AppTest.from_function(runs_page, default_timeout=60)
    at.query_params["run"] = run_id
    at.run()
    assert not at.exception
    estimated = next(m for m in at.metric if m.label == "Estimated")
    assert estimated.value == "2.0 min" and estimated.delta == "+20% vs actual"
