"""A DAG factory: one pipeline config -> an Airflow DAG whose tasks are the pipeline's steps.

Each task runs `jobs.pipeline.runner.run_step` — the function `studio pipeline run` calls — in
the studio's own virtual environment through Airflow's `ExternalPythonOperator`. Airflow and the
studio do not share one environment (Airflow 3 pins FastAPI, Starlette and friends the studio
pins differently), so the scheduler only needs this module, the config schema and PyYAML.

SageMaker training goes through our launcher, not the Amazon provider's `SageMakerTrainingOperator`:
that operator takes a finished CreateTrainingJob request, while ours is built by the SDK v3
`ModelTrainer` (it stages `core/` and the torchrun driver as input channels), and the launcher also
creates the MLflow run and the catalog's job row before the job starts, runs the preflight checks,
and its `wait` step relays the job's metrics into MLflow. Reusing it keeps the DAG and the CLI one
code path, and the step records make Airflow's retries resume instead of starting over.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from jobs.pipeline.config import STEPS, load_pipeline_config

REPO = Path(__file__).resolve().parents[2]


def studio_python() -> str:
    """The interpreter of the studio's environment (`STUDIO_PYTHON`, default the repository's .venv)."""
    return os.environ.get("STUDIO_PYTHON") or str(REPO / ".venv" / "bin" / "python")


# The two callables below run in the studio's interpreter: Airflow ships their source there, so
# they import what they need themselves and use no module globals.
def prepare_pipeline(config_path: str) -> str:
    from pathlib import Path

    import core  # noqa: F401  (telemetry off first)
    from jobs.pipeline.config import load_pipeline_config
    from jobs.pipeline.runner import prepare

    return prepare(load_pipeline_config(Path(config_path)), Path(config_path)).id


def run_pipeline_step(pipeline_id: str, step: str) -> str:
    import core  # noqa: F401
    from jobs.pipeline.runner import run_step

    run_step(pipeline_id, step, log=lambda text: print(text, flush=True))
    return pipeline_id


def build_dag(
    config_path: str | Path,
    dag_id: str | None = None,
    schedule: Any = None,
    python: str | None = None,
    retries: int = 0,
    start_date: datetime = datetime(2026, 1, 1),
) -> Any:
    """The DAG `prepare >> dataset >> train >> wait >> select >> fetch >> export >> register`.

    `prepare` finds or creates the pipeline record (a re-run resumes it) and passes its id on;
    every other task runs one step, which is skipped when it already succeeded with the same inputs.
    """
    from airflow.providers.standard.operators.python import ExternalPythonOperator
    from airflow.sdk import DAG

    path = Path(config_path).resolve()
    config = load_pipeline_config(path)  # a broken config is a DAG import error, with its sentence
    python = python or studio_python()
    # Jobs run in their own processes; the wait step only polls, so it may take long.
    timeouts = {"wait": timedelta(hours=72), "export": timedelta(hours=2)}
    with DAG(
        dag_id=dag_id or "studio_" + config.name.replace("-", "_").replace(".", "_"),
        schedule=schedule,
        start_date=start_date,
        catchup=False,
        max_active_runs=1,
        tags=["diffusion-studio"],
        doc_md=f"Diffusion Studio pipeline **{config.name}** from `{path}` (dataset {config.dataset}, backend {config.backend}).",
    ) as dag:
        prepare = ExternalPythonOperator(task_id="prepare", python=python, python_callable=prepare_pipeline, op_args=[str(path)], expect_airflow=False)
        previous = prepare
        for step in STEPS:
            task = ExternalPythonOperator(
                task_id=step,
                python=python,
                python_callable=run_pipeline_step,
                op_args=[prepare.output, step],
                expect_airflow=False,
                retries=retries,
                retry_delay=timedelta(minutes=1),
                execution_timeout=timeouts.get(step, timedelta(hours=1)),
            )
            previous >> task
            previous = task
    return dag
