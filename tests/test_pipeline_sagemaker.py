"""The pipeline with the SageMaker backend against moto's server (S3, IAM, SageMaker over real
HTTP): the dataset pushed to S3, a two-value sweep submitted through the SDK v3 ModelTrainer, the
jobs' metrics relayed from their checkpoint URIs into MLflow, the best run's model fetched from the
job's `model.tar.gz` in S3 (a real tiny model, put where SageMaker would leave it), a real ONNX
export and the registry alias."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from tests.test_jobs_sagemaker import BUCKET, aws  # noqa: F401  (fixtures)


def model_archive(folder: Path) -> bytes:
    """What SageMaker uploads from /opt/ml/model: the folder's contents at the archive's root."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for child in sorted(folder.iterdir()):
            tar.add(child, arcname=child.name)
    return buf.getvalue()


@pytest.mark.slow
def test_sagemaker_pipeline_against_moto_down_to_the_registered_export(aws: str, trained_model: Path) -> None:  # noqa: F811
    import boto3

    from core.export_records import get_export
    from core.tracking import get_tracking
    from jobs.pipeline.config import PipelineConfig
    from jobs.pipeline.runner import pipeline_steps, prepare, run, run_step
    from jobs.records import get_job
    from jobs.relay import split_uri

    config = PipelineConfig(
        name="squares-cloud",
        dataset=aws,
        backend="sagemaker",
        sagemaker={"instance_type": "ml.g5.xlarge", "spot": False, "max_run_hours": 1},
        train={"preset": "tiny", "unet": {"steps": 40}, "vae": {"steps": 20}},
        sweep={"unet.lr": [0.001, 0.003]},
        poll_seconds=0.1,
    )
    pipeline = prepare(config)
    # Step by step, as an Airflow task each: the push and the submissions.
    assert run_step(pipeline.id, "dataset", log=lambda _: None)
    assert run_step(pipeline.id, "train", log=lambda _: None)
    steps = {s.name: s for s in pipeline_steps(pipeline.id)}
    assert steps["dataset"].outputs["s3_uri"] == f"s3://{BUCKET}/datasets/squares/{aws.split('@')[1]}/"
    jobs = [get_job(j["job_id"]) for j in steps["train"].outputs["jobs"]]
    assert [j.backend for j in jobs] == ["sagemaker", "sagemaker"] and all(j.sagemaker_job_name for j in jobs)
    assert [j.config["unet"]["lr"] for j in jobs] == [0.001, 0.003]

    # What the jobs leave in S3: metrics.jsonl under their checkpoint URIs (the relay's source;
    # the second trial is better), and the model archive where SageMaker puts it.
    s3, sm = boto3.client("s3"), boto3.client("sagemaker")
    for job, val_loss in zip(jobs, (0.31, 0.27), strict=True):
        bucket, prefix = split_uri(job.config["sagemaker"]["checkpoints"])
        rows = [{"step": 20, "time": 1_700_000_000, "loss": 0.4, "val_loss": val_loss + 0.1}, {"step": 40, "time": 1_700_000_040, "loss": 0.3, "val_loss": val_loss}]
        s3.put_object(Bucket=bucket, Key=f"{prefix}/metrics.jsonl", Body="".join(json.dumps(r) + "\n" for r in rows))
    artifacts = sm.describe_training_job(TrainingJobName=jobs[1].sagemaker_job_name)["ModelArtifacts"]["S3ModelArtifacts"]
    s3.put_object(Bucket=BUCKET, Key=split_uri(artifacts)[1], Body=model_archive(trained_model))

    done = run(pipeline.id, log=lambda _: None)  # resumes after the train step: moto completed the jobs
    assert done.status == "succeeded"
    steps = {s.name: s for s in pipeline_steps(pipeline.id)}
    assert [steps[n].attempts for n in ("dataset", "train")] == [1, 1]
    assert steps["wait"].outputs["jobs"] == {j.id: "succeeded" for j in jobs}
    assert steps["select"].outputs["run_id"] == jobs[1].mlflow_run_id and steps["select"].outputs["value"] == 0.27
    assert steps["fetch"].outputs["source"] == artifacts

    client = get_tracking().client
    assert any(a.path == "model" for a in client.list_artifacts(jobs[1].mlflow_run_id))  # the fetched model, on its run
    export = get_export(steps["export"].outputs["export_id"])
    assert export.mlflow_run_id == jobs[1].mlflow_run_id and export.parity["passed"]
    assert str(client.get_model_version_by_alias("squares-cloud-onnx", "champion").version) == export.registered_version
