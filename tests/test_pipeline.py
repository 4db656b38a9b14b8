"""The end-to-end pipeline on real components: the demo digits through a real tiny local
training, the best run by val_loss, a real ONNX export with its parity check and the
registry alias; a training step that fails on a bad override, re-run after the fix and resumed
there; and the config's one-sentence errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from core.errors import StudioError
from tests.conftest import REPO

# The pipeline's trainings: a few steps of each stage, no sample grids, one validation.
TINY_TRAIN = {
    "preset": "tiny",
    "vae": {"steps": 2, "batch_size": 8, "warmup_steps": 1},
    "unet": {"steps": 2, "batch_size": 8, "warmup_steps": 1},
    "log_every": 1,
    "validate_every": 2,
    "sample_every": 100,
    "checkpoint_every": 100,
    "sample_steps": 2,
    "sample_images_per_prompt": 1,
    "validation_prompts": ["a handwritten digit one"],
    "cache_latents": False,
}


def pipeline_yaml(tmp_path: Path, **fields: object) -> Path:
    data = {"name": "digits-weekly", "dataset": "digits", "train": TINY_TRAIN, "sweep": {"unet.lr": [0.003]}, "poll_seconds": 0.5, **fields}
    path = tmp_path / f"pipeline-{len(list(tmp_path.glob('pipeline-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def studio(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=REPO, env={**os.environ}, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_demo_pipeline_fails_on_a_bad_override_then_resumes_there_and_ships_the_best_run(demo: str, tmp_path: Path) -> None:
    from core.export_records import get_export
    from core.tracking import get_tracking
    from jobs.pipeline.config import STEPS, load_pipeline_config
    from jobs.pipeline.runner import get_pipeline, prepare, run, summary
    from jobs.records import list_jobs

    # A typo in an override: the train step fails with the engine's sentence; the dataset step is done.
    bad = pipeline_yaml(tmp_path, overrides=["unet.stepz=3"])
    failed = studio("pipeline", "run", "--config", str(bad))
    assert failed.returncode == 2
    assert failed.stderr.strip().splitlines()[-1] == "error: The pipeline stopped at the train step: The config key 'unet.stepz' is not known."
    shown = json.loads(studio("pipeline", "show", "digits-weekly", "--json").stdout)
    steps = {s["name"]: s for s in shown["steps"]}
    assert shown["status"] == "failed" and shown["failure_reason"].startswith("The train step failed: The config key")
    assert (steps["dataset"]["status"], steps["dataset"]["outputs"]["dataset"]) == ("succeeded", demo)
    assert steps["train"]["status"] == "failed" and steps["train"]["attempts"] == 0
    assert [steps[s]["status"] for s in STEPS[2:]] == ["pending"] * 5
    assert list_jobs() == []

    # The fix, re-run: the same pipeline resumes at the train step (the dataset step is skipped).
    lines: list[str] = []
    pipeline = run(prepare(load_pipeline_config(pipeline_yaml(tmp_path))).id, log=lines.append)
    assert pipeline.id == shown["id"] and pipeline.status == "succeeded"
    assert "[dataset] done earlier with the same inputs; skipped." in lines
    result = {s["name"]: s for s in summary(pipeline)["steps"]}
    assert {name: (s["status"], s["attempts"]) for name, s in result.items()} == {
        "dataset": ("succeeded", 1), "train": ("succeeded", 1), "wait": ("succeeded", 1), "select": ("succeeded", 1),
        "fetch": ("succeeded", 1), "export": ("succeeded", 1), "register": ("succeeded", 1),
    }  # fmt: skip

    # One real training here (the sweep's ranking of several runs is in test_pipeline_sagemaker).
    (job,) = result["train"]["outputs"]["jobs"]
    assert job["params"] == {"unet.lr": 0.003} and job["config"]["unet"]["lr"] == 0.003 and job["config"]["dataset"] == demo
    client = get_tracking().client
    best = result["select"]["outputs"]
    assert best["run_id"] == job["run_id"] and best["value"] == client.get_run(job["run_id"]).data.metrics["val_loss"]

    export = get_export(result["export"]["outputs"]["export_id"])
    assert export.mlflow_run_id == best["run_id"] and export.parity["passed"]
    assert (Path(export.path) / "unet" / "model.onnx").is_file()
    version = client.get_model_version_by_alias("digits-weekly-onnx", "champion")
    assert str(version.version) == export.registered_version and version.run_id == best["run_id"]
    assert result["register"]["outputs"]["uri"] == "models:/digits-weekly-onnx@champion"

    # Idempotent: the same config again skips every step; no new job, no new model version.
    again: list[str] = []
    assert run(prepare(load_pipeline_config(pipeline_yaml(tmp_path))).id, log=again.append).id == pipeline.id
    assert len([line for line in again if line.endswith("skipped.")]) == len(STEPS)
    assert len(list_jobs()) == 1 and len(client.search_model_versions("name = 'digits-weekly-onnx'")) == 1
    assert get_pipeline("digits-weekly").status == "succeeded"

    # A changed config after success is a new pipeline (last week's stays as it was).
    from jobs.pipeline.runner import prepare

    newer = prepare(load_pipeline_config(pipeline_yaml(tmp_path, sweep={"unet.lr": [0.001]})))
    assert newer.id != pipeline.id and get_pipeline(pipeline.id).status == "succeeded"


def test_config_errors_are_one_sentence(tmp_path: Path) -> None:
    from jobs.pipeline.config import load_pipeline_config, parse_pipeline_config

    with pytest.raises(StudioError, match="does not exist"):
        load_pipeline_config(tmp_path / "missing.yaml")
    with pytest.raises(StudioError, match="not valid YAML"):
        parse_pipeline_config("name: [x")
    with pytest.raises(StudioError, match="The pipeline key 'trian' is not known."):
        parse_pipeline_config("name: x\ndataset: digits\ntrian: {}")
    with pytest.raises(StudioError, match="give the dataset at the top level"):
        parse_pipeline_config("name: x\ndataset: digits\ntrain: {dataset: digits}")
    with pytest.raises(StudioError, match="makes 25 trainings; at most 16"):
        parse_pipeline_config("name: x\ndataset: digits\nsweep: {unet.lr: [1, 2, 3, 4, 5], seed: [1, 2, 3, 4, 5]}")
    with pytest.raises(StudioError, match="'export.alias' is not valid"):
        parse_pipeline_config("name: x\ndataset: digits\nexport: {alias: 'not ok'}")
    config = parse_pipeline_config((REPO / "examples" / "pipeline-demo.yaml").read_text())
    assert config.trials() == [{"unet.lr": 0.001}, {"unet.lr": 0.003}]
    assert config.trial_overrides({"validation_prompts": ["a b"]}) == ['validation_prompts=["a b"]']
    assert config.registered_model == "demo-digits-onnx" and not config.pushes


def test_pipelines_page_shows_steps_and_the_failure(demo: str, tmp_path: Path) -> None:
    from streamlit.testing.v1 import AppTest

    from jobs.pipeline.config import load_pipeline_config
    from jobs.pipeline.runner import prepare, run

    at = AppTest.from_file(str(Path(__file__).with_name("pipelines_page_app.py")), default_timeout=60)
    at.run()
    assert not at.exception
    assert "No pipelines yet" in at.info[-1].value
    assert at.selectbox[0].value == "pipeline-demo.yaml (example)"

    with pytest.raises(StudioError, match="The config key 'seedz' is not known"):
        run(prepare(load_pipeline_config(pipeline_yaml(tmp_path, overrides=["seedz=1"]))).id, log=lambda _: None)
    at.run()
    assert not at.exception
    assert "The train step failed: The config key 'seedz' is not known." in at.error[0].value
    table = at.dataframe[0].value
    assert list(table["step"]) == ["dataset", "train", "wait", "select", "fetch", "export", "register"]
    assert list(table["status"])[:3] == ["✅ succeeded", "❌ failed", "⏳ pending"]

    # Save a config from the page's editor: it becomes a saved config.
    at.text_area[0].set_value((REPO / "examples" / "pipeline-demo.yaml").read_text().replace("name: demo-digits", "name: my-weekly"))
    next(b for b in at.button if b.label == "💾 Save config").click()
    at.run()
    assert "Saved as my-weekly.yaml." in at.success[0].value
    at.run()
    assert "my-weekly (saved)" in at.selectbox[0].options
