"""The pipeline's Airflow DAG in Airflow's own environment: it imports, its task graph is the
pipeline's steps, and `airflow dags test` runs the demo digits through a real tiny local training
(tasks run in the studio's .venv), to a registered ONNX export."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "jobs" / "airflow" / "dags"
STUDIO_PYTHON = str(REPO / ".venv" / "bin" / "python")
STEPS = ["dataset", "train", "wait", "select", "fetch", "export", "register"]
TINY = {
    "name": "airflow-digits",
    "dataset": "digits",
    "train": {
        "preset": "tiny",
        "vae": {"steps": 2, "batch_size": 8, "warmup_steps": 1},
        "unet": {"steps": 2, "batch_size": 8, "warmup_steps": 1},
        "log_every": 1, "validate_every": 2, "sample_every": 100, "checkpoint_every": 100,
        "sample_steps": 2, "sample_images_per_prompt": 1, "cache_latents": False,
        "validation_prompts": ["a handwritten digit one"],
    },
    "poll_seconds": 1,
}  # fmt: skip


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    values = {
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "STUDIO_PIPELINE_CONFIGS": str(config),
        "STUDIO_HOME": str(tmp_path / "studio"),
        "STUDIO_PYTHON": STUDIO_PYTHON,
        "STUDIO_TORCH_THREADS": "1",
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return {**os.environ, **values}


def test_dag_imports_and_maps_the_pipeline_steps(env: dict[str, str]) -> None:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.providers.standard.operators.python import ExternalPythonOperator

    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    dag = bag.dags["studio_airflow_digits"]
    assert [t.task_id for t in dag.topological_sort()] == ["prepare", *STEPS]
    for upstream, downstream in zip(["prepare", *STEPS], STEPS):  # every step also reads prepare's pipeline id
        assert dag.get_task(downstream).upstream_task_ids == {upstream, "prepare"}
    assert all(isinstance(t, ExternalPythonOperator) and t.python == STUDIO_PYTHON for t in dag.tasks)


def test_a_broken_config_is_a_dag_import_error_with_its_sentence(env: dict[str, str], tmp_path: Path) -> None:
    from airflow.dag_processing.dagbag import DagBag

    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\ndataset: digits\ntrian: {}\n")
    os.environ["STUDIO_PIPELINE_CONFIGS"] = str(broken)
    bag = DagBag(dag_folder=str(DAGS))
    assert "The pipeline key 'trian' is not known." in "".join(bag.import_errors.values())


def test_dags_test_runs_the_pipeline_to_a_registered_export(env: dict[str, str]) -> None:
    airflow = [sys.executable, "-m", "airflow"]
    subprocess.run([*airflow, "db", "migrate"], env=env, check=True, capture_output=True, timeout=600)
    run = subprocess.run([*airflow, "dags", "test", "studio_airflow_digits"], env=env, capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    # Read the result with the studio's own command, in its own environment.
    shown = subprocess.run([STUDIO_PYTHON, "-m", "app.cli", "pipeline", "show", "airflow-digits", "--json"], env=env, cwd=REPO, capture_output=True, text=True, check=True)
    summary = json.loads(shown.stdout)
    assert summary["status"] == "succeeded"
    assert [(s["name"], s["status"], s["attempts"]) for s in summary["steps"]] == [(name, "succeeded", 1) for name in STEPS]
    assert summary["steps"][-1]["outputs"]["uri"] == "models:/airflow-digits-onnx@champion"
