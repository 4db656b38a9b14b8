"""The SageMaker backend: the same engine in a SageMaker training job, via the SDK v3 `ModelTrainer`.

A launch checks credentials, role and bucket first (one sentence if something is missing, before
anything is uploaded), pushes the dataset version to S3, creates the MLflow run and the job row,
then stages the source dir (`core/`, a small entry script, the job's config and the container's
requirements) and starts a training job: the PyTorch training image, `Torchrun` across
`instance_count` nodes (DeepSpeed runs inside the engine when the config has a `deepspeed:`
section), managed spot with a checkpoint S3 URI so an interruption resumes, metric definitions
matching the engine's log lines. `sync` polls DescribeTrainingJob into the job row; `refresh`,
`stop`, `resume` and `logs` (CloudWatch) complete the backend (see `jobs.backend`).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.aws import ACCESS_DENIED, aws_errors, client, credentialed_session, error_code, explain
from core.db import Job, new_id
from core.errors import StudioError
from core.settings import get_settings
from core.tracking import create_run, credentials
from core.training.config import TrainConfig
from core.training.logline import METRIC_REGEXES  # generated from the loop's log-line formatter
from jobs.backend import TrainRequest
from jobs.processes import ProcessId, alive, current
from jobs.records import FINAL, LAUNCH_KEYS, RUNNING, create_job, get_job, job_dir, list_jobs, set_run_status, transition, update_job

BACKEND = "sagemaker"
REPO = Path(__file__).resolve().parent.parent
ENTRY_SCRIPT = "train_entry.py"
CONFIG_FILE = "job_config.yaml"
CHECKPOINTS = "/opt/ml/checkpoints"
LOG_GROUP = "/aws/sagemaker/TrainingJobs"
# What the engine imports, with the pins of requirements*.txt; torch comes with the training image.
CONTAINER_PACKAGES = (
    "numpy", "diffusers", "transformers", "accelerate", "safetensors", "peft", "deepspeed", "mlflow",
    "pillow", "sqlalchemy", "pydantic", "pydantic-settings", "pyyaml", "open-clip-torch",
)  # fmt: skip
# The SDK's defaults-config switch, given to its Session directly so no file on disk is needed.
TELEMETRY_OFF = {"SchemaVersion": "1.0", "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}}}
STARTING = {"Starting", "Pending", "Downloading", "DownloadingTrainingImage", "LaunchingMLInstances", "PreparingTrainingStack"}
FINAL_STATES = {"Completed": "succeeded", "Failed": "failed", "Stopped": "stopped"}


class SageMakerLaunch(BaseModel):
    """The cloud options of one launch (the form's SageMaker section)."""

    model_config = ConfigDict(extra="forbid")

    instance_type: str = Field(default_factory=lambda: get_settings().sagemaker_instance_type)
    instance_count: int = Field(1, ge=1, le=64)
    processes_per_node: int | None = Field(None, ge=1, le=64, description="Default: one per GPU.")
    spot: bool = True
    max_run_hours: float = Field(24.0, gt=0, le=672)
    max_wait_hours: float | None = Field(None, gt=0, le=672, description="Spot only; default 2 × max_run_hours.")
    volume_gb: int = Field(100, ge=1, le=16384)
    role: str | None = Field(default_factory=lambda: get_settings().sagemaker_role)
    subnets: list[str] = Field(default_factory=list)
    security_group_ids: list[str] = Field(default_factory=list)
    tags: dict[str, str] = Field(default_factory=dict)
    image_uri: str | None = Field(default_factory=lambda: get_settings().sagemaker_image_uri)

    @model_validator(mode="after")
    def _check(self) -> SageMakerLaunch:
        if self.spot and self.max_wait_hours is not None and self.max_wait_hours < self.max_run_hours:
            raise ValueError("max_wait_hours must be at least max_run_hours")
        if bool(self.subnets) != bool(self.security_group_ids):
            raise ValueError("a VPC needs both subnets and security group ids")
        return self

    @property
    def max_wait_seconds(self) -> int | None:
        return int((self.max_wait_hours or 2 * self.max_run_hours) * 3600) if self.spot else None


@dataclass
class CloudStatus:
    """What DescribeTrainingJob said, in the studio's words."""

    status: str
    sagemaker_status: str
    secondary_status: str
    transitions: list[dict[str, Any]] = field(default_factory=list)
    failure_reason: str | None = None


# A job's environment is readable by anyone who may describe it: the credentials go by secret name only.
NO_SECRET = (
    "The MLflow server needs credentials and a SageMaker job never gets them in its environment; store them in "
    f"AWS Secrets Manager as JSON {credentials.SECRET_FORMAT} and set STUDIO_MLFLOW_CREDENTIALS_SECRET to its name or ARN."
)


def preflight(launch: SageMakerLaunch) -> tuple[Any, str]:
    """Check credentials, bucket and role; return the boto3 session and the bucket. Uploads nothing."""
    from botocore.exceptions import BotoCoreError, ClientError

    settings = get_settings()
    if not settings.s3_bucket:
        raise StudioError("SageMaker jobs need an S3 bucket; set STUDIO_S3_BUCKET.")
    if not launch.role:
        raise StudioError("SageMaker jobs need an IAM role; set STUDIO_SAGEMAKER_ROLE or give the role ARN in the form.")
    if not launch.role.startswith("arn:") or ":role/" not in launch.role:
        raise StudioError(f"The IAM role {launch.role!r} is not a role ARN (arn:aws:iam::<account>:role/<name>).")
    needs_secret = tracking_reachable() and credentials.present(settings.mlflow_uri or "") and not (settings.mlflow_uri or "").startswith("arn:")
    if needs_secret and not settings.mlflow_credentials_secret:
        raise StudioError(NO_SECRET)
    session = credentialed_session()
    with aws_errors("S3", settings.s3_bucket):
        client("s3", from_session=session).head_bucket(Bucket=settings.s3_bucket)
    if needs_secret:
        _check_secret(session, settings.mlflow_credentials_secret or "")
    try:
        client("iam", from_session=session).get_role(RoleName=launch.role.rsplit("/", 1)[1])
    except ClientError as exc:
        if error_code(exc) == "NoSuchEntity":
            raise StudioError(f"The IAM role {launch.role} does not exist in this account.") from None
        # Many users may pass a role without being allowed to read IAM; SageMaker checks it anyway.
    except BotoCoreError as exc:
        raise explain(exc, "IAM") from None
    return session, settings.s3_bucket


def _check_secret(session: Any, name: str) -> None:
    """The credentials' secret exists; a studio not allowed to look goes on (the job's role is what reads it)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        client("secretsmanager", from_session=session).describe_secret(SecretId=name)
    except ClientError as exc:
        if error_code(exc) == "ResourceNotFoundException":
            raise StudioError(f"The secret {name!r} (STUDIO_MLFLOW_CREDENTIALS_SECRET) does not exist in Secrets Manager in {session.region_name}.") from None
        if error_code(exc) not in ACCESS_DENIED:
            raise explain(exc, "Secrets Manager") from None
    except BotoCoreError as exc:
        raise explain(exc, "Secrets Manager") from None


def s3_uri(bucket: str, *parts: str) -> str:
    prefix = get_settings().s3_prefix.strip("/")
    return "s3://" + "/".join(p.strip("/") for p in (bucket, prefix, *parts) if p)


def container_requirements() -> str:
    """The pins of requirements*.txt for the packages the engine needs inside the container."""
    pins = {}
    for name in ("requirements.txt", "requirements-nodeps.txt"):
        for line in (REPO / name).read_text().splitlines():
            package = line.split("==")[0].strip().lower()
            if package in CONTAINER_PACKAGES:
                pins[package] = line.strip()
    if get_settings().mlflow_uri and get_settings().mlflow_uri.startswith("arn:"):
        pins["sagemaker-mlflow"] = "sagemaker-mlflow"  # the plugin that resolves a SageMaker MLflow ARN
    return "\n".join(pins[p] for p in CONTAINER_PACKAGES + ("sagemaker-mlflow",) if p in pins) + "\n"


def stage_source(config: TrainConfig, dest: Path) -> Path:
    """The source dir the job runs from: `core/`, the entry script, the config, the requirements."""
    shutil.copytree(REPO / "core", dest / "core", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copyfile(Path(__file__).with_name("sagemaker_entry.py"), dest / ENTRY_SCRIPT)
    (dest / CONFIG_FILE).write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    (dest / "requirements.txt").write_text(container_requirements())
    return dest


def tracking_reachable() -> bool:
    """A job in the cloud can log to MLflow itself only when the tracking server is not a local file."""
    uri = get_settings().mlflow_uri or ""
    return uri.startswith(("http://", "https://", "arn:", "databricks"))


def image_uri(launch: SageMakerLaunch, region: str) -> str:
    if launch.image_uri:
        return launch.image_uri
    from sagemaker.core import image_uris

    settings = get_settings()
    return image_uris.retrieve(
        framework="pytorch",
        region=region,
        version=settings.sagemaker_framework_version,
        py_version=settings.sagemaker_py_version,
        instance_type=launch.instance_type,
        image_scope="training",
    )


def build_trainer(config: TrainConfig, launch: SageMakerLaunch, job_id: str, uris: dict[str, str], source_dir: Path, session: Any):  # type: ignore[no-untyped-def]
    """The ModelTrainer of one attempt; `train(wait=False)` on it creates the training job."""
    from sagemaker.core.helper.session_helper import Session
    from sagemaker.core.shapes import Tag
    from sagemaker.core.training.configs import (
        CheckpointConfig,
        Compute,
        MetricDefinition,
        Networking,
        OutputDataConfig,
        SourceCode,
        StoppingCondition,
    )
    from sagemaker.train import ModelTrainer
    from sagemaker.train.distributed import Torchrun

    settings = get_settings()
    environment = {"STUDIO_HOME": "/tmp/studio", "STUDIO_TORCH_THREADS": str(settings.torch_threads), "STUDIO_AWS_REGION": session.region_name}
    if tracking_reachable():
        environment["STUDIO_MLFLOW_URI"] = credentials.split_uri(settings.mlflow_uri or "")[0]  # never a user:password@
        environment["STUDIO_EXPERIMENT"] = settings.experiment
        if settings.mlflow_credentials_secret:  # its name; the job reads it with its role (core/training/__main__.py)
            environment["STUDIO_MLFLOW_CREDENTIALS_SECRET"] = settings.mlflow_credentials_secret
    tags = {"studio-job": job_id, **launch.tags}
    trainer = ModelTrainer(
        sagemaker_session=Session(boto_session=session, default_bucket=settings.s3_bucket, default_bucket_prefix=settings.s3_prefix.strip("/") or None, sagemaker_config=TELEMETRY_OFF),
        role=launch.role,
        base_job_name=f"studio-{job_id}",
        training_image=image_uri(launch, session.region_name),
        source_code=SourceCode(source_dir=str(source_dir), requirements="requirements.txt", entry_script=ENTRY_SCRIPT),
        distributed=Torchrun(process_count_per_node=launch.processes_per_node),
        compute=Compute(
            instance_type=launch.instance_type,
            instance_count=launch.instance_count,
            volume_size_in_gb=launch.volume_gb,
            enable_managed_spot_training=launch.spot,
        ),
        stopping_condition=StoppingCondition(
            max_runtime_in_seconds=int(launch.max_run_hours * 3600), max_wait_time_in_seconds=launch.max_wait_seconds
        ),
        networking=Networking(subnets=launch.subnets, security_group_ids=launch.security_group_ids) if launch.subnets else None,
        output_data_config=OutputDataConfig(s3_output_path=uris["output"]),
        checkpoint_config=CheckpointConfig(s3_uri=uris["checkpoints"], local_path=CHECKPOINTS),
        hyperparameters={"config": CONFIG_FILE, "stage": config.stage, "vae.steps": config.vae.steps, "unet.steps": config.unet.steps},
        environment=environment,
        tags=[Tag(key=k, value=v) for k, v in tags.items()],
    )
    return trainer.with_metric_definitions([MetricDefinition(name=k, regex=v) for k, v in METRIC_REGEXES.items()])


def submit(request: TrainRequest) -> Job:
    """Launch a training job on SageMaker; the job row and MLflow run exist before it starts."""
    from core.datasets.push import push_version

    config, name = request.config, request.name
    if config.preset == "finetune":  # the container would look for them on its own disk
        raise StudioError("A SageMaker job cannot fine-tune yet: the base model folder (and any class images) are on this machine, not in S3; run this fine-tune as a local job.")
    launch = SageMakerLaunch.model_validate(request.sagemaker)
    session, bucket = preflight(launch)
    if not config.dataset:
        raise StudioError("A SageMaker job trains on a catalog dataset (name@version), not a local folder.")
    pushed = push_version(config.dataset)
    job_id = new_id()
    folder = job_dir(job_id)
    run_id = create_run(name or f"{config.preset}-{job_id}", {"job_id": job_id, "backend": BACKEND, "preset": config.preset, "stage": config.stage, "dataset": config.dataset})
    uris = {
        "dataset": pushed.uri,
        "checkpoints": s3_uri(bucket, "checkpoints", job_id),
        "output": s3_uri(bucket, "jobs", job_id, "output"),
        "metrics": "direct" if tracking_reachable() else "relay",
    }
    # The catalog keeps the local view (output_dir here, where the relay copies metrics.jsonl).
    submitter = current()  # recorded on the row until the cloud job exists (see `_settle_uncreated`)
    local_config = config.model_copy(update={"output_dir": folder / "output", "mlflow_run_id": run_id, "run_name": name})
    create_job(
        job_id, "train", BACKEND, {**local_config.model_dump(mode="json"), "sagemaker": {**launch.model_dump(), **uris}}, "cloudwatch.log",
        status="starting", dataset=config.dataset, mlflow_run_id=run_id, region=session.region_name,
        pid=submitter.pid, pid_started=submitter.started,
    )  # fmt: skip
    return _start(job_id, session)


NEVER_CREATED = "The SageMaker job was never created: "


def _container_config(job: Job) -> TrainConfig:
    data = {k: v for k, v in job.config.items() if k not in LAUNCH_KEYS}
    # The job can log to MLflow itself only if the server is reachable; else the relay does it.
    data.update(mlflow_run_id=job.mlflow_run_id if job.config["sagemaker"]["metrics"] == "direct" else None, output_dir="/opt/ml/output/data")
    return TrainConfig.model_validate(data)


def _start(job_id: str, session: Any) -> Job:
    from botocore.exceptions import BotoCoreError, ClientError

    from sagemaker.core.training.configs import InputData

    # The row holds the submitting process (written with the row, or with the resume's transition):
    # a row left without a cloud job by a submission that died (the studio killed mid-call) is told
    # apart from one still being submitted (see `_settle_uncreated`).
    job = get_job(job_id)
    try:
        options = job.config["sagemaker"]
        launch = SageMakerLaunch.model_validate({k: v for k, v in options.items() if k in SageMakerLaunch.model_fields})
        with tempfile.TemporaryDirectory(prefix="studio-source-") as tmp:
            config = _container_config(job)
            source = stage_source(config, Path(tmp))
            trainer = build_trainer(config, launch, job_id, options, source, session)
            trainer.train(input_data_config=[InputData(channel_name="training", data_source=options["dataset"])], wait=False, logs=False)
        # The SDK keeps the created job on a private attribute; its name is all the studio needs.
        name = trainer._latest_training_job.training_job_name
    except BaseException as exc:
        if isinstance(exc, (ClientError, BotoCoreError)):
            error = explain(exc, "SageMaker")
        elif isinstance(exc, StudioError):
            error = exc
        else:
            error = StudioError(f"{type(exc).__name__}: {exc}".strip().rstrip(":"))
        reason = NEVER_CREATED + str(error)
        update_job(job_id, status="failed", failure_reason=reason, pid=None, pid_started=None)
        set_run_status(job.mlflow_run_id, "FAILED")
        if not isinstance(exc, Exception):
            raise  # an interrupt stays an interrupt; the row is settled first
        raise StudioError(reason) from None
    job = update_job(job_id, sagemaker_job_name=name, pid=None, pid_started=None)
    if job.status == "stopping":  # stopped while it was being created: stop the cloud job too
        with aws_errors("SageMaker"):
            client("sagemaker").stop_training_job(TrainingJobName=name)
        return job
    set_run_status(job.mlflow_run_id, "RUNNING")
    return job


def _settle_uncreated(job: Job) -> bool:
    """End a row that has no cloud job and no live process submitting it; True when it did."""
    if job.sagemaker_job_name or alive(ProcessId(job.pid, job.pid_started) if job.pid else None):
        return False
    reason = NEVER_CREATED + "the process submitting it ended first."
    if transition(job.id, ("stopping",), status="stopped", failure_reason=NEVER_CREATED + "it was stopped first.", pid=None):
        set_run_status(job.mlflow_run_id, "KILLED")
        return True
    if transition(job.id, RUNNING, status="failed", failure_reason=reason, pid=None):
        set_run_status(job.mlflow_run_id, "FAILED")
    return True


def describe(job: Job, sagemaker: Any = None) -> dict[str, Any]:
    with aws_errors("SageMaker"):
        return (sagemaker or client("sagemaker")).describe_training_job(TrainingJobName=job.sagemaker_job_name)


def cloud_status(response: dict[str, Any]) -> CloudStatus:
    """DescribeTrainingJob -> the studio's status (queued … failed), with SageMaker's own words kept."""
    primary = response["TrainingJobStatus"]
    secondary = response.get("SecondaryStatus", "")
    if primary in FINAL_STATES:
        status = FINAL_STATES[primary]
    elif primary == "Stopping":
        status = "stopping"
    else:
        status = "starting" if secondary in STARTING else "running"
    reason = response.get("FailureReason") if primary == "Failed" else None
    return CloudStatus(status, primary, secondary, response.get("SecondaryStatusTransitions", []), reason)


def sync(job_id: str, sagemaker: Any = None) -> CloudStatus:
    """Poll the training job once and record its state (and the MLflow run's) in the catalog."""
    job = get_job(job_id)
    if not job.sagemaker_job_name:
        raise StudioError(f"The job {job_id} has no SageMaker training job yet.")
    state = cloud_status(describe(job, sagemaker))
    if state.status != job.status and job.status not in FINAL:
        fields: dict[str, Any] = {"status": state.status}
        if state.status == "failed":
            fields["failure_reason"] = state.failure_reason or "SageMaker reported the job as failed."
        if transition(job_id, RUNNING, **fields) and state.status in FINAL:
            set_run_status(job.mlflow_run_id, {"succeeded": "FINISHED", "failed": "FAILED", "stopped": "KILLED"}[state.status])
            from jobs.evaluate import after_training

            after_training(get_job(job_id))  # the model is in the MLflow run; the evaluation runs here
    return state


SYNC_FAILED = "The last refresh from SageMaker failed: "


def refresh() -> None:
    """Poll each active training job once and relay the metrics it wrote since the last poll.

    Each job on its own: one that cannot be refreshed keeps its state, with the reason on its row,
    and the others are refreshed all the same. A row without a cloud job whose submission died ends."""
    from jobs.relay import relay_metrics

    for job in list_jobs(limit=None, statuses=RUNNING, backend=BACKEND):
        if _settle_uncreated(job) or not job.sagemaker_job_name:  # none yet: its submission is still uploading
            continue
        try:
            sync(job.id)
            relay_metrics(job.id)
        except Exception as exc:
            reason = str(exc) if isinstance(exc, StudioError) else f"{type(exc).__name__}: {exc}"
            transition(job.id, RUNNING, failure_reason=SYNC_FAILED + reason)
        else:
            if (job.failure_reason or "").startswith(SYNC_FAILED):
                transition(job.id, RUNNING, failure_reason=None)


def stop(job: Job, sagemaker: Any = None) -> Job:
    """StopTrainingJob: SageMaker sends SIGTERM, the engine checkpoints to S3 and exits."""
    if job.status not in RUNNING:
        raise StudioError(f"The job {job.id} is {job.status}; only running jobs can be stopped.")
    if not job.sagemaker_job_name:  # not created (yet): the row stops; a submission still in flight stops its job
        transition(job.id, ("starting",), status="stopping")
        _settle_uncreated(get_job(job.id))
        return get_job(job.id)
    with aws_errors("SageMaker"):
        (sagemaker or client("sagemaker")).stop_training_job(TrainingJobName=job.sagemaker_job_name)
    transition(job.id, RUNNING, status="stopping")
    return get_job(job.id)


def resume(job: Job) -> Job:
    """A new training job on the same checkpoint S3 URI and MLflow run: it continues where it stopped."""
    launch = SageMakerLaunch.model_validate({k: v for k, v in job.config["sagemaker"].items() if k in SageMakerLaunch.model_fields})
    session, _ = preflight(launch)
    me = current()
    if not transition(job.id, ("stopped", "failed"), status="starting", attempts=job.attempts + 1, failure_reason=None, finished_at=None, pid=me.pid, pid_started=me.started):
        raise StudioError(f"The job {job.id} is {job.status}; only stopped or failed jobs can be resumed.")
    return _start(job.id, session)


def model_archive(job: Job, sagemaker: Any = None) -> str | None:
    """The model.tar.gz SageMaker uploaded from /opt/ml/model (the run gets the model only if the job could reach MLflow)."""
    return describe(job, sagemaker)["ModelArtifacts"]["S3ModelArtifacts"] if job.sagemaker_job_name else None


def logs(job: Job, lines: int = 50, cloudwatch: Any = None) -> str:
    """The newest lines of the job's CloudWatch log (the first host's stream), if there is one yet."""
    from botocore.exceptions import BotoCoreError, ClientError

    if not job.sagemaker_job_name:
        return ""
    cloudwatch = cloudwatch or client("logs")
    try:
        streams = cloudwatch.describe_log_streams(logGroupName=LOG_GROUP, logStreamNamePrefix=f"{job.sagemaker_job_name}/")["logStreams"]
        if not streams:
            return "No CloudWatch log yet; the instances are still starting."
        events = cloudwatch.get_log_events(logGroupName=LOG_GROUP, logStreamName=streams[0]["logStreamName"], limit=lines, startFromHead=False)
    except ClientError as exc:
        if error_code(exc) == "ResourceNotFoundException":
            return "No CloudWatch log yet; the instances are still starting."
        return f"The CloudWatch log is not available ({error_code(exc)})."
    except BotoCoreError as exc:
        return f"The CloudWatch log is not available ({exc})."
    return "\n".join(e["message"].rstrip() for e in events["events"])
