"""MLflow tracking, shaped like MLflow's own `MlflowClient`: one front over the run store and the
model registry. Nothing outside this package talks to the MLflow client.

    connection  the store and experiment (`get_tracking`), created once
    credentials MLflow's username and password or token: passed on, never shown
    writes      what a training, an evaluation or an export writes to a run
    outbox      what could not be written yet, kept beside metrics.jsonl and delivered later
    runs        run queries for the Runs page and `studio runs`: list, filter, resolve, detail
    compare     curves, smoothing, parameter diff and final metrics of several runs
    samples     the stepped sample images and the prompt-by-run grid
    artifacts   the download cache (files, models, model zips) and "does this run have a model"
    registry    registered models: new versions, aliases, promotion
    edits       a run's note, tags and deletion

The names most callers need are importable from here.
"""

from core.tracking.artifacts import model_folder
from core.tracking.connection import Tracking, get_tracking
from core.tracking.writes import create_run, flatten

__all__ = ["Tracking", "create_run", "flatten", "get_tracking", "model_folder"]
