"""Airflow: the pipeline's steps as a DAG (optional; installed by `make test-airflow` or by hand)."""
