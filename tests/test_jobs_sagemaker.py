"""The SageMaker backend through the real SDK v3 against moto's server on 127.0.0.1 (S3, IAM,
SageMaker), the job state machine with botocore's Stubber (moto completes jobs at once and has no
StopTrainingJob), the relay from moto S3 into a real MLflow run, and the metric regexes against the
engine's real log lines."""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from core.errors import StudioError
from tests.servers import use_moto

ROLE = "arn:aws:iam::123456789012:role/studio-training"
BUCKET = "studio-test"


@pytest.fixture
def aws(home: Path, moto_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A studio home whose bucket, role and SageMaker live in moto; returns a small dataset ref."""
    import boto3
    from PIL import Image

    from core.datasets.versions import NewItem, write_version
    from core.settings import reset_settings

    use_moto(monkeypatch, moto_url)
    for key, value in {
        "SAGEMAKER_VALIDATE_ROLE": "false",
        "STUDIO_S3_BUCKET": BUCKET,
        "STUDIO_SAGEMAKER_ROLE": ROLE,
    }.items():
        monkeypatch.setenv(key, value)
    reset_settings()
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    iam = boto3.client("iam")
    if not any(r["Arn"] == ROLE for r in iam.list_roles()["Roles"]):
        iam.create_role(RoleName="studio-training", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}))
    items = []
    for i in range(6):
        buf = io.BytesIO()
        Image.new("RGB", (16, 16), (40 * i, 0, 0)).save(buf, "PNG")
        items.append(NewItem(buf.getvalue(), "png", f"a red square {i}", 16, 16, "val" if i == 5 else "train"))
    version = write_version("squares", items)
    return f"squares@{version}"


def recorded(moto_url: str, target: str) -> list[dict]:
    """The JSON bodies of the requests moto received for one API call (e.g. SageMaker.CreateTrainingJob)."""
    import base64
    import urllib.request

    lines = urllib.request.urlopen(f"{moto_url}/moto-api/recorder/download-recording").read().decode().splitlines()
    bodies = []
    for entry in map(json.loads, filter(None, lines)):
        if entry["headers"].get("X-Amz-Target") == target:
            body = entry["body"]
            bodies.append(json.loads(base64.b64decode(body) if entry["body_encoded"] else body))
    return bodies


def launch_options(**extra: object) -> dict:
    return {"instance_type": "ml.g5.12xlarge", "instance_count": 2, "spot": True, "max_run_hours": 3, "max_wait_hours": 6, "tags": {"team": "vision"}, **extra}


def test_submission_against_moto(aws: str, moto_url: str) -> None:
    import urllib.request

    import boto3

    from core.tracking import get_tracking
    from core.training.config import build_config
    from jobs import control
    from jobs.records import get_job
    from jobs.sagemaker import METRIC_REGEXES

    config = build_config({"preset": "tiny", "dataset": aws, "deepspeed": {"zero_stage": 2}, "unet": {"steps": 40}, "vae": {"steps": 20}})
    for action in ("reset-recording", "start-recording"):
        urllib.request.urlopen(urllib.request.Request(f"{moto_url}/moto-api/recorder/{action}", method="POST"))
    job = control.launch(config, backend="sagemaker", name="cloud", sagemaker=launch_options())
    urllib.request.urlopen(urllib.request.Request(f"{moto_url}/moto-api/recorder/stop-recording", method="POST"))
    (sent,) = recorded(moto_url, "SageMaker.CreateTrainingJob")

    assert job.backend == "sagemaker" and job.sagemaker_job_name.startswith(f"studio-{job.id}")
    assert job.region == "us-east-1"
    assert get_tracking().client.get_run(job.mlflow_run_id).data.tags["backend"] == "sagemaker"
    request = boto3.client("sagemaker").describe_training_job(TrainingJobName=job.sagemaker_job_name)
    spec = request["AlgorithmSpecification"]
    assert spec["TrainingImage"] == "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.8.0-gpu-py312"
    assert request["ResourceConfig"]["InstanceType"] == "ml.g5.12xlarge"
    assert request["ResourceConfig"]["InstanceCount"] == 2
    assert request["RoleArn"] == ROLE
    assert request["EnableManagedSpotTraining"] is True
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 3 * 3600, "MaxWaitTimeInSeconds": 6 * 3600}
    assert request["CheckpointConfig"] == {"S3Uri": f"s3://{BUCKET}/checkpoints/{job.id}", "LocalPath": "/opt/ml/checkpoints"}
    assert request["OutputDataConfig"]["S3OutputPath"] == f"s3://{BUCKET}/jobs/{job.id}/output"
    hps = request["HyperParameters"]
    assert hps["config"] == "job_config.yaml" and hps["unet.steps"] == "40"
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in request["InputDataConfig"]}
    assert channels["training"] == f"s3://{BUCKET}/datasets/squares/{aws.split('@')[1]}/"
    assert {"code", "sm_drivers"} <= set(channels)
    # moto keeps no metric definitions, tags or VPC: those are read from the request it received.
    assert sent["TrainingJobName"] == job.sagemaker_job_name
    assert {m["Name"]: m["Regex"] for m in sent["AlgorithmSpecification"]["MetricDefinitions"]} == METRIC_REGEXES
    assert {"Key": "studio-job", "Value": job.id} in sent["Tags"] and {"Key": "team", "Value": "vision"} in sent["Tags"]
    assert sent["Environment"]["STUDIO_HOME"] == "/tmp/studio"
    assert "STUDIO_MLFLOW_URI" not in sent["Environment"]

    # What the SDK uploaded: the torchrun driver's config, the source dir with core/, the entry
    # script, the job's config (DeepSpeed section included) and the container's requirements.
    s3 = boto3.client("s3")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=f"studio-{job.id}/")["Contents"]]  # this job's upload only
    distributed = next(k for k in keys if k.endswith("distributed.json"))
    assert json.loads(s3.get_object(Bucket=BUCKET, Key=distributed)["Body"].read())["smp"] is None
    assert any(k.endswith("/code/core/training/loop.py") for k in keys)
    assert any(k.endswith("/code/train_entry.py") for k in keys)
    staged = next(k for k in keys if k.endswith("/code/job_config.yaml"))
    import yaml

    staged_config = yaml.safe_load(s3.get_object(Bucket=BUCKET, Key=staged)["Body"].read())
    assert staged_config["deepspeed"] == {"zero_stage": 2, "offload_optimizer": False}
    assert staged_config["mlflow_run_id"] is None  # a file-based MLflow store is out of the job's reach: relay
    requirements = s3.get_object(Bucket=BUCKET, Key=next(k for k in keys if k.endswith("/code/requirements.txt")))["Body"].read().decode()
    pinned = {line.split("==")[0] for line in requirements.splitlines()}
    assert {"diffusers", "deepspeed", "mlflow", "open-clip-torch"} <= pinned and "torch" not in pinned  # torch: the image's

    # moto completes jobs at once: the poll takes the row and the MLflow run to the end.
    control.refresh()
    assert get_job(job.id).status == "succeeded"
    assert get_tracking().client.get_run(job.mlflow_run_id).info.status == "FINISHED"


def test_missing_role_bucket_or_credentials_say_one_sentence_before_uploading(aws: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3

    from core.settings import reset_settings
    from core.training.config import build_config
    from jobs import control

    config = build_config({"dataset": aws})
    before = boto3.client("s3").list_objects_v2(Bucket=BUCKET)["KeyCount"]
    with pytest.raises(StudioError, match="does not exist in this account"):
        control.launch(config, backend="sagemaker", sagemaker=launch_options(role="arn:aws:iam::123456789012:role/nobody"))
    with pytest.raises(StudioError, match="not a role ARN"):
        control.launch(config, backend="sagemaker", sagemaker=launch_options(role="studio-training"))
    monkeypatch.setenv("STUDIO_S3_BUCKET", "no-such-bucket")
    reset_settings()
    with pytest.raises(StudioError, match="bucket 'no-such-bucket' does not exist"):
        control.launch(config, backend="sagemaker", sagemaker=launch_options())
    monkeypatch.delenv("STUDIO_S3_BUCKET")
    reset_settings()
    with pytest.raises(StudioError, match="need an S3 bucket"):
        control.launch(config, backend="sagemaker", sagemaker=launch_options())
    monkeypatch.setenv("STUDIO_S3_BUCKET", BUCKET)
    monkeypatch.delenv("STUDIO_SAGEMAKER_ROLE")
    reset_settings()
    with pytest.raises(StudioError, match="need an IAM role"):
        control.launch(config, backend="sagemaker", sagemaker={"instance_type": "ml.g5.xlarge"})
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(StudioError, match="No AWS credentials"):
        control.launch(config, backend="sagemaker", sagemaker=launch_options(role=ROLE))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    assert boto3.client("s3").list_objects_v2(Bucket=BUCKET)["KeyCount"] == before


def test_state_machine_with_stubber(aws: str) -> None:
    import boto3
    from botocore.stub import Stubber

    from core.tracking import get_tracking
    from core.training.config import build_config
    from jobs import control, sagemaker
    from jobs.records import get_job

    config = build_config({"dataset": aws})
    job = control.launch(config, backend="sagemaker", sagemaker=launch_options(spot=False))
    name = job.sagemaker_job_name
    client = boto3.client("sagemaker")
    now = datetime.now(timezone.utc)

    def described(primary: str, secondary: str, job_name: str = name, **extra: object) -> dict:
        transitions = [{"Status": "Starting", "StartTime": now, "StatusMessage": "Preparing the instances for training"}]
        if secondary != "Starting":
            transitions.append({"Status": secondary, "StartTime": now, "StatusMessage": f"{secondary} ..."})
        return {
            "TrainingJobName": job_name,
            "TrainingJobArn": f"arn:aws:sagemaker:us-east-1:123456789012:training-job/{job_name}",
            "ModelArtifacts": {"S3ModelArtifacts": ""},
            "TrainingJobStatus": primary,
            "SecondaryStatus": secondary,
            "AlgorithmSpecification": {"TrainingInputMode": "File"},
            "ResourceConfig": {"InstanceCount": 1, "VolumeSizeInGB": 100},
            "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
            "CreationTime": now,
            "SecondaryStatusTransitions": transitions,
            **extra,
        }

    with Stubber(client) as stub:
        params = {"TrainingJobName": name}
        stub.add_response("describe_training_job", described("InProgress", "Starting"), params)
        stub.add_response("describe_training_job", described("InProgress", "Training"), params)
        stub.add_response("stop_training_job", {}, params)
        stub.add_response("describe_training_job", described("Stopping", "Stopping"), params)
        stub.add_response("describe_training_job", described("Stopped", "Stopped"), params)

        assert sagemaker.sync(job.id, client).status == "starting"
        state = sagemaker.sync(job.id, client)
        assert (state.status, get_job(job.id).status) == ("running", "running")
        assert [t["Status"] for t in state.transitions] == ["Starting", "Training"]
        assert sagemaker.stop(get_job(job.id), client).status == "stopping"
        assert sagemaker.sync(job.id, client).status == "stopping"
        assert sagemaker.sync(job.id, client).status == "stopped"
        stub.assert_no_pending_responses()
    assert get_tracking().client.get_run(job.mlflow_run_id).info.status == "KILLED"

    # Resume: a new training job (moto's, this time) on the same checkpoint URI and MLflow run.
    resumed = control.resume(job.id)
    assert resumed.attempts == 2 and resumed.sagemaker_job_name != name and resumed.mlflow_run_id == job.mlflow_run_id
    request = client.describe_training_job(TrainingJobName=resumed.sagemaker_job_name)
    assert request["CheckpointConfig"]["S3Uri"].endswith(f"/checkpoints/{job.id}")

    with Stubber(client) as stub:
        stub.add_response(
            "describe_training_job",
            described("Failed", "Failed", resumed.sagemaker_job_name, FailureReason="AlgorithmError: CUDA out of memory"),
            {"TrainingJobName": resumed.sagemaker_job_name},
        )
        assert sagemaker.sync(job.id, client).status == "failed"
    row = get_job(job.id)
    assert row.status == "failed" and "CUDA out of memory" in row.failure_reason
    assert get_tracking().client.get_run(job.mlflow_run_id).info.status == "FAILED"


def test_relay_copies_new_metrics_lines_into_the_run(aws: str) -> None:
    import boto3

    from core.tracking import get_tracking
    from core.training.config import build_config
    from jobs import control
    from jobs.progress import job_progress
    from jobs.records import get_job
    from jobs.relay import relay_metrics

    job = control.launch(build_config({"dataset": aws, "stage": "unet"}), backend="sagemaker", sagemaker=launch_options())
    key = f"checkpoints/{job.id}/metrics.jsonl"
    s3 = boto3.client("s3")
    rows = [{"step": s, "time": 1_700_000_000 + s, "loss": 1.0 / s, "lr": 0.001} for s in (10, 20)]
    s3.put_object(Bucket=BUCKET, Key=key, Body="".join(json.dumps(r) + "\n" for r in rows) + '{"step": 30, "ti')
    assert relay_metrics(job.id) == 2
    assert relay_metrics(job.id) == 0  # nothing new; the half-written line waits
    rows.append({"step": 30, "time": 1_700_000_030, "loss": 1 / 30, "lr": 0.001, "val_loss": 0.05})
    s3.put_object(Bucket=BUCKET, Key=key, Body="".join(json.dumps(r) + "\n" for r in rows))
    assert relay_metrics(job.id) == 1

    client = get_tracking().client
    history = client.get_metric_history(job.mlflow_run_id, "loss")
    assert [(m.step, round(m.value, 4)) for m in history] == [(10, 0.1), (20, 0.05), (30, 0.0333)]
    assert [m.step for m in client.get_metric_history(job.mlflow_run_id, "val_loss")] == [30]
    assert job_progress(get_job(job.id)).step == 30  # the page's progress reads the relayed copy


def test_a_fine_tune_is_refused_in_one_sentence_before_anything_is_uploaded(aws: str, tmp_path: Path) -> None:
    """A fine-tune's base model (and a subject run's class images) are local folders the container
    cannot read: refused before any upload, instead of a job that fails in the cloud."""
    import boto3

    from core.training.config import build_config
    from jobs import control
    from jobs.records import list_jobs

    config = build_config({"dataset": aws, "preset": "finetune", "base_model": str(tmp_path), "stage": "unet"})
    before = boto3.client("s3").list_objects_v2(Bucket=BUCKET)["KeyCount"]
    with pytest.raises(StudioError, match="cannot fine-tune yet.*run this fine-tune as a local job"):
        control.launch(config, backend="sagemaker", sagemaker=launch_options(role=ROLE))
    assert boto3.client("s3").list_objects_v2(Bucket=BUCKET)["KeyCount"] == before and not list_jobs()
