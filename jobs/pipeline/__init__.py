"""The end-to-end pipeline: dataset -> training (a small sweep) -> best run -> model -> ONNX -> registry.

`config` holds the YAML schema and imports nothing heavy, so Airflow can read it while parsing a
DAG; `steps` holds what each step does and `runner` records them in the catalog and resumes.
"""
