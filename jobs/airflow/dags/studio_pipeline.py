"""The DAG file to put in (or link into) Airflow's dags folder: one DAG per pipeline config.

`STUDIO_PIPELINE_CONFIGS` lists config files (separated by ':'); the default is the demo.
"""

import os
from pathlib import Path

from jobs.airflow.dag_factory import REPO, build_dag

for _path in os.environ.get("STUDIO_PIPELINE_CONFIGS", str(REPO / "examples" / "pipeline-demo.yaml")).split(":"):
    _dag = build_dag(Path(_path))
    globals()[_dag.dag_id] = _dag
