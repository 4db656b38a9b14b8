"""The one Settings object: every `STUDIO_` environment variable (or `.env` entry) lives here."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class LaunchLimit(BaseModel):
    """What one user of a role may launch: instances per job, hours per job, jobs at once."""

    instances: int = Field(ge=1)
    hours: float = Field(gt=0)
    jobs: int = Field(ge=1)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STUDIO_", env_file=".env", extra="ignore")

    home: Path = Field(Path("studio-data"), description="Where the catalog, MLflow store and local objects live.")
    database_url: str | None = Field(None, description="SQLAlchemy URL of the catalog; default SQLite in home.")
    mlflow_uri: str | None = Field(None, description="MLflow tracking URI; default SQLite store in home.")
    s3_bucket: str | None = Field(None, description="Keep objects in this S3 bucket instead of home/objects.")
    s3_prefix: str = Field("", description="Key prefix inside the S3 bucket.")
    aws_region: str = Field("us-east-1", description="AWS region for S3 and SageMaker.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Device for training and generation.")
    torch_threads: int = Field(1, ge=1, description="Intra-op threads for torch and ONNX Runtime.")
    max_local_jobs: int = Field(1, ge=1, description="Local jobs that run at once; the rest queue.")
    experiment: str = Field("diffusion-studio", description="MLflow experiment that holds the runs.")
    playground_port: int = Field(7860, ge=1, le=65535, description="Port of the playground and HTTP API the studio starts on STUDIO_PLAYGROUND_HOST.")
    playground_host: str = Field("127.0.0.1", description="Address the studio's playground and HTTP API listen on (0.0.0.0 in a container).")
    playground_url: str | None = Field(None, description="Base URL browsers reach the playground at; default the page's host with STUDIO_PLAYGROUND_PORT.")
    playground_cache_seconds: int = Field(3600, ge=1, description="Age after which the playground's generated files are deleted.")
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        ["localhost", "127.0.0.1", "::1"],
        description="Host names the playground and HTTP API answer (comma-separated, `*.domain` allowed); others get 400.",
    )
    api_queue_size: int = Field(8, ge=1, description="Generation requests the HTTP API holds at once, running or waiting; more get 429.")
    lora_max_bytes: int = Field(512 << 20, ge=1, description="Largest LoRA file (.safetensors) the playground and HTTP API accept.")
    import_max_files: int = Field(100_000, ge=1, description="Most files one dataset import (or zip) may hold.")
    import_max_bytes: int = Field(8 << 30, ge=1, description="Most uncompressed bytes one dataset import may hold.")
    import_max_entry_bytes: int = Field(1 << 30, ge=1, description="Most uncompressed bytes one file of a dataset import may hold.")
    import_max_ratio: float = Field(200.0, gt=1, description="Highest compression ratio a zip entry may have.")
    import_workers: int = Field(0, ge=0, description="Processes that read and hash the images of a large import (500 or more): 0, one per CPU core up to 8; 1, only the studio's own.")
    min_image_side: int = Field(16, ge=1, description="Images with a shorter side are quarantined as too small.")
    sagemaker_role: str | None = Field(None, description="IAM role ARN SageMaker training jobs run as.")
    sagemaker_instance_type: str = Field("ml.g5.2xlarge", description="Default SageMaker instance type.")
    sagemaker_image_uri: str | None = Field(None, description="Training image; default the SageMaker PyTorch image.")
    sagemaker_framework_version: str = Field("2.8.0", description="PyTorch version of the default SageMaker image.")
    sagemaker_py_version: str = Field("py312", description="Python version of the default SageMaker image.")
    mlflow_credentials_secret: str | None = Field(
        None,
        description="AWS Secrets Manager secret (name or ARN) with the MLflow credentials a SageMaker job reads at start, "
        'as JSON {"username": ..., "password": ...} or {"token": ...}; the job gets only this name.',
    )
    webhooks: Annotated[list[str], NoDecode] = Field(
        [], description="URLs (comma-separated) that get a POST when a job succeeds, fails or is stopped; Slack incoming-webhook URLs get Slack's shape."
    )
    team_mode: bool = Field(False, description="Sign-in (OpenID Connect, `[auth]` in .streamlit/secrets.toml), roles and API tokens are required.")
    admins: Annotated[list[str], NoDecode] = Field([], description="Emails (comma-separated) that get the admin role in team mode.")
    trainers: Annotated[list[str], NoDecode] = Field([], description="Emails (comma-separated) that get the trainer role in team mode.")
    role_claim: str | None = Field(None, description="OpenID Connect claim whose value (viewer, trainer or admin) is the user's role; the lists above win.")
    default_role: Literal["viewer", "trainer", "admin"] = Field("viewer", description="Role of a signed-in user named nowhere else.")
    launch_limits: dict[str, LaunchLimit] = Field(
        default_factory=lambda: {"trainer": LaunchLimit(instances=2, hours=24, jobs=2), "admin": LaunchLimit(instances=16, hours=168, jobs=8)},
        description='Launch limits per role in team mode, as JSON: {"trainer": {"instances": 2, "hours": 24, "jobs": 2}, ...}.',
    )

    @field_validator("allowed_hosts", "admins", "trainers", mode="before")
    @classmethod
    def _split_lower(cls, value: object) -> object:
        if isinstance(value, str):
            return [h.strip().lower() for h in value.split(",") if h.strip()]
        return value

    @field_validator("webhooks", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [h.strip() for h in value.split(",") if h.strip()]
        return value

    @property
    def catalog_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home.resolve() / 'catalog.db'}"

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_uri or f"sqlite:///{self.home.resolve() / 'mlflow.db'}"

    @property
    def objects_dir(self) -> Path:
        return self.home.resolve() / "objects"

    @property
    def jobs_dir(self) -> Path:
        return self.home.resolve() / "jobs"

    @property
    def cache_dir(self) -> Path:
        return self.home.resolve() / "cache"

    @property
    def models_dir(self) -> Path:
        """Models imported from single-file checkpoints (`studio model import-single-file`), one folder each."""
        return self.home.resolve() / "models"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    settings = Settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    return settings


def reset_settings() -> None:
    """Forget the cached settings (tests and the CLI change the environment)."""
    get_settings.cache_clear()
