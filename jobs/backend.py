"""What every job backend provides, and the training request the two training backends take.

A backend is a module with the functions of `Backend`: `jobs.local` (training on this
machine), `jobs.sagemaker` (training on Amazon SageMaker) and `jobs.evaluate` (evaluations on this
machine). `jobs.control` picks one by the job row's `backend` and calls it; nothing else branches
on where a job runs.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from core.db import Job
from core.training.config import TrainConfig


class TrainRequest(BaseModel):
    """One training job to start, as the Train page, the CLI and pipelines ask for it."""

    model_config = ConfigDict(extra="forbid")

    config: TrainConfig
    name: str | None = Field(None, description="The MLflow run's name.")
    processes: int = Field(1, description="Local: processes under torchrun.")
    sagemaker: dict[str, Any] = Field(default_factory=dict, description="SageMaker: the cloud options (`jobs.sagemaker.SageMakerLaunch`).")


Request_contra = TypeVar("Request_contra", contravariant=True)


class Backend(Protocol[Request_contra]):
    def submit(self, request: Request_contra) -> Job:
        """Record the job (and the MLflow run it reports to) and start or queue it."""
        ...

    def stop(self, job: Job) -> Job:
        """Ask a running job to stop; a queued one is cancelled."""
        ...

    def resume(self, job: Job) -> Job:
        """Run a stopped or failed job again, from its latest checkpoint where it keeps one."""
        ...

    def logs(self, job: Job, lines: int) -> str:
        """The newest lines of the job's log."""
        ...

    def refresh(self) -> None:
        """Bring this backend's active rows up to date with their processes (or cloud jobs)."""
        ...

    def model_archive(self, job: Job) -> str | None:
        """Where the job left its trained model besides its MLflow run (None: nowhere else)."""
        ...
