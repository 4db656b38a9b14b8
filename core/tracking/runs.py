"""The run queries behind the Runs page and `studio runs`: list, filter, resolve, detail.

Everything reads what the engine logs (core/training/loop.py): the flattened TrainConfig as params,
tags `dataset`/`preset`/`stage`/`job_id`/`backend`, stepped metrics, one stepped image per
validation prompt (`prompt_00`, ...) plus the whole grid (`samples`), `validation_prompts.json`
and the final model in the `model` artifact folder. A run launched with an estimate has its
`estimate.*` tags (`jobs.estimate`), compared with its duration once it finished.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Literal

from mlflow.entities import Run, ViewType
from pydantic import BaseModel, Field

from core.errors import StudioError
from core.tracking.artifacts import MODEL, artifact_tree, list_artifacts
from core.tracking.connection import get_tracking
from core.tracking.writes import ESTIMATE_TAG

STATUSES = ("RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED")
NOTE_TAG = "mlflow.note.content"
SAFE_TEXT = re.compile(r"^[^'\"\\]*$")
SAFE_KEY = re.compile(r"^[\w.\- /]+$")


class RunQuery(BaseModel):
    """The Runs table's filters, sort and page size; becomes one MLflow `filter_string`."""

    status: list[Literal["RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"]] = []
    dataset: str | None = Field(None, description="name@version, or a name for all its versions.")
    preset: str | None = None
    tag: str | None = Field(None, description="key=value, or a key that must be set.")
    since: date | None = None
    until: date | None = None
    search: str | None = Field(None, description="Part of the run name.")
    sort: str = Field("start_time", description="start_time, run_name, or a metric key.")
    descending: bool = True
    page_size: int = Field(25, ge=1, le=1000)


@dataclass
class RunRow:
    run_id: str
    name: str
    status: str
    dataset: str
    preset: str
    stage: str
    backend: str
    steps: int | None
    last_loss: float | None
    val_loss: float | None
    started: datetime
    duration_s: float | None
    metrics: dict[str, float] = field(default_factory=dict)
    estimated_s: float | None = None  # the launch's estimate of the run's wall time (`estimate.total_seconds`)

    @property
    def estimate_error_pct(self) -> float | None:
        """(estimated − actual) / actual in %, once the run finished; positive: it took less than estimated."""
        if self.estimated_s is None or self.status != "FINISHED" or not self.duration_s:
            return None
        return (self.estimated_s - self.duration_s) / self.duration_s * 100


@dataclass
class RunPage:
    rows: list[RunRow]
    next_token: str | None


@dataclass
class RunDetail:
    row: RunRow
    params: dict[str, str]
    tags: dict[str, str]  # the user's and the studio's tags, without mlflow.* bookkeeping
    note: str
    artifacts: list[str]
    model_files: list[tuple[str, int]]


def quote(value: str, what: str) -> str:
    if not SAFE_TEXT.match(value):
        raise StudioError(f"The {what} filter cannot contain quotes or backslashes.")
    return f"'{value}'"


def check_key(key: str, writable: bool = False) -> str:
    """A tag name safe in a filter; `writable` also refuses MLflow's own `mlflow.*` tags."""
    if not SAFE_KEY.match(key) or (writable and key.startswith("mlflow.")):
        raise StudioError(f"The tag name {key!r} may hold only letters, digits, '_', '-', '.', '/' and spaces.")
    return key


def _day_ms(day: date, end: bool) -> int:
    moment = datetime.combine(day, time.max if end else time.min, tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def filter_string(query: RunQuery) -> str:
    """The MLflow search filter for a query, e.g. `tags.preset = 'tiny' AND attributes.status IN ('FINISHED')`."""
    parts = []
    # MLflow has no OR and no IN for statuses: exclude the ones not chosen instead.
    parts += [f"attributes.status != '{s}'" for s in STATUSES if query.status and s not in query.status]
    if query.dataset:
        ref = query.dataset.strip()
        parts.append(f"tags.dataset = {quote(ref, 'dataset')}" if "@" in ref else f"tags.dataset LIKE {quote(ref + '@%', 'dataset')}")
    if query.preset:
        parts.append(f"tags.preset = {quote(query.preset, 'preset')}")
    if query.tag:
        key, sep, value = query.tag.partition("=")
        key = check_key(key.strip())
        parts.append(f"tags.`{key}` = {quote(value.strip(), 'tag')}" if sep else f"tags.`{key}` LIKE '%'")
    if query.since:
        parts.append(f"attributes.start_time >= {_day_ms(query.since, end=False)}")
    if query.until:
        parts.append(f"attributes.start_time <= {_day_ms(query.until, end=True)}")
    if query.search and query.search.strip():
        parts.append(f"attributes.run_name ILIKE {quote('%' + query.search.strip() + '%', 'search')}")
    return " AND ".join(parts)


def order_by(query: RunQuery) -> list[str]:
    direction = "DESC" if query.descending else "ASC"
    if query.sort == "start_time":
        return [f"attributes.start_time {direction}"]
    if query.sort in ("run_name", "end_time", "status"):
        return [f"attributes.{query.sort} {direction}", "attributes.start_time DESC"]
    if not SAFE_KEY.match(query.sort):
        raise StudioError(f"There is no metric called {query.sort!r} to sort by.")
    return [f"metrics.`{query.sort}` {direction}", "attributes.start_time DESC"]


def _planned_steps(params: dict[str, str], stage: str) -> int | None:
    stages = ["vae", "unet"] if stage in ("all", "") else [stage]
    try:
        return sum(int(params[f"{s}.steps"]) for s in stages)
    except (KeyError, ValueError):
        return None


def _row(run: Run) -> RunRow:
    info, data = run.info, run.data
    stage = data.tags.get("stage", "")
    end = info.end_time / 1000 if info.end_time else None
    start = info.start_time / 1000
    return RunRow(
        run_id=info.run_id,
        name=info.run_name or info.run_id,
        status=info.status,
        dataset=data.tags.get("dataset", ""),
        preset=data.tags.get("preset", ""),
        stage=stage,
        backend=data.tags.get("backend", ""),
        steps=_planned_steps(data.params, stage),
        last_loss=data.metrics.get("loss"),
        val_loss=data.metrics.get("val_loss"),
        started=datetime.fromtimestamp(start, tz=UTC),
        duration_s=(end or datetime.now(UTC).timestamp()) - start if info.status != "SCHEDULED" else None,
        metrics=dict(data.metrics),
        estimated_s=_number(data.tags.get(f"{ESTIMATE_TAG}total_seconds")),
    )


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def list_runs(query: RunQuery | None = None, page_token: str | None = None) -> RunPage:
    """One page of runs; MLflow filters, sorts and pages in its store, so hundreds of runs stay fast."""
    query = query or RunQuery()
    tracking = get_tracking()
    try:
        found = tracking.client.search_runs(
            [tracking.experiment_id],
            filter_string=filter_string(query),
            order_by=order_by(query),
            max_results=query.page_size,
            page_token=page_token,
        )
    except StudioError:
        raise
    except Exception as exc:  # MLflow rejects a malformed filter with a long message
        raise StudioError(f"MLflow could not search the runs: {str(exc).splitlines()[0][:200]}") from None
    return RunPage([_row(r) for r in found], found.token or None)


def recent_runs(limit: int = 10) -> list[RunRow]:
    return list_runs(RunQuery(page_size=limit)).rows


def runs_tagged(key: str, value: str) -> list[Run]:
    """Every run of every experiment with the tag, deleted runs included (what still refers to something)."""
    client = get_tracking().client
    experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    return list(client.search_runs(experiments, filter_string=f"tags.`{check_key(key)}` = {quote(value, key)}", run_view_type=ViewType.ALL, max_results=1000))


def get_run(run_id: str) -> Run:
    try:
        return get_tracking().client.get_run(run_id)
    except Exception:
        raise StudioError(f"There is no run {run_id!r} in the tracking store.") from None


def resolve_run(ref: str) -> str:
    """A run id, a unique prefix of one, or a run name; returns the run id."""
    tracking = get_tracking()
    ref = ref.strip()
    if SAFE_TEXT.match(ref):
        by_name = tracking.client.search_runs([tracking.experiment_id], filter_string=f"attributes.run_name = '{ref}'", max_results=2)
        if len(by_name) == 1:
            return by_name[0].info.run_id
        if len(by_name) > 1:
            raise StudioError(f"Several runs are called {ref!r}; give the run id instead.")
    if re.fullmatch(r"[0-9a-f]{32}", ref):
        return get_run(ref).info.run_id
    if re.fullmatch(r"[0-9a-f]{4,31}", ref):
        found = tracking.client.search_runs([tracking.experiment_id], filter_string=f"attributes.run_id LIKE '{ref}%'", max_results=2)
        if len(found) == 1:
            return found[0].info.run_id
    raise StudioError(f"No run is called {ref!r} and no run id starts with it.")


def run_detail(run_id: str) -> RunDetail:
    run = get_run(run_id)
    tags = {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")}
    top = list_artifacts(run_id)
    has_model = any(a.path == MODEL and a.is_dir for a in top)
    return RunDetail(
        row=_row(run),
        params=dict(sorted(run.data.params.items())),
        tags=dict(sorted(tags.items())),
        note=run.data.tags.get(NOTE_TAG, ""),
        artifacts=[a.path + ("/" if a.is_dir else "") for a in top],
        model_files=sorted((path, int(size or 0)) for path, size in artifact_tree(run_id, MODEL).items()) if has_model else [],
    )
