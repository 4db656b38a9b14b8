"""Pipelines in the catalog: create or resume one, run its steps in order, record each step.

A step is skipped when its last attempt succeeded with the same inputs (inputs include the outputs
of the steps before it), so re-running a pipeline resumes at the step that failed, and a fixed
config re-runs only the steps it changes. One config name is one pipeline until it succeeds; a
changed config after that starts a new one. The pipeline process holds a claim (its pid and start
time, see jobs.processes), so two runs of one pipeline never overlap; Airflow runs the same steps
one task at a time.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import and_, select, update

from core.db import Pipeline, PipelineStep, session_scope, utcnow
from core.errors import StudioError
from core.files import atomic_write_text
from core.settings import get_settings
from jobs.pipeline.config import STEPS, PipelineConfig
from jobs.pipeline.steps import STEP_FUNCTIONS, Context, Log
from jobs.processes import ProcessId, alive, current, spawn

REPO = Path(__file__).resolve().parents[2]


def _json(data: Any) -> Any:
    """What the catalog's JSON column gives back, so a fresh value compares equal to a stored one."""
    return json.loads(json.dumps(data, default=str))


def pipelines_dir() -> Path:
    return get_settings().home.resolve() / "pipelines"


def get_pipeline(ref: str) -> Pipeline:
    """A pipeline by id, or the newest one of a name."""
    with session_scope() as session:
        found = session.get(Pipeline, ref) or session.scalars(select(Pipeline).where(Pipeline.name == ref).order_by(Pipeline.created_at.desc())).first()
    if found is None:
        raise StudioError(f"There is no pipeline {ref!r}; `studio pipeline list` shows them.")
    return found


def list_pipelines(limit: int = 50) -> list[Pipeline]:
    with session_scope() as session:
        return list(session.scalars(select(Pipeline).order_by(Pipeline.created_at.desc()).limit(limit)))


def pipeline_steps(pipeline_id: str) -> list[PipelineStep]:
    with session_scope() as session:
        return list(session.scalars(select(PipelineStep).where(PipelineStep.pipeline_id == pipeline_id).order_by(PipelineStep.position)))


def prepare(config: PipelineConfig, config_path: Path | None = None) -> Pipeline:
    """The pipeline this config continues (same name, not yet succeeded, or the same config), or a new one."""
    data = config.model_dump(mode="json")
    path = str(Path(config_path).resolve()) if config_path else None
    with session_scope() as session:
        newest = session.scalars(select(Pipeline).where(Pipeline.name == config.name).order_by(Pipeline.created_at.desc())).first()
        if newest is not None and (newest.status != "succeeded" or newest.config == data):
            newest.config, newest.config_path = data, path or newest.config_path
            return newest
        pipeline = Pipeline(name=config.name, config=data, config_path=path)
        session.add(pipeline)
        session.flush()
        session.add_all(PipelineStep(pipeline_id=pipeline.id, name=name, position=i) for i, name in enumerate(STEPS))
        return pipeline


def _holder(pipeline: Pipeline) -> ProcessId | None:
    """The process that runs the pipeline (a `studio pipeline run` or a launched one), if it still does."""
    process = ProcessId(pipeline.pid, pipeline.pid_started) if pipeline.pid else None
    return process if alive(process) else None


def _claim(pipeline_id: str) -> None:
    """Record this process as the pipeline's holder, unless another live process holds it.

    The UPDATE only matches the holder this process read (none, a dead one, or itself), so of two
    processes claiming at once exactly one changes the row; the other sees no row changed and refuses.
    """
    me = current()
    with session_scope() as session:
        row = session.get(Pipeline, pipeline_id)
        if row is None:
            raise StudioError(f"There is no pipeline {pipeline_id!r}; `studio pipeline list` shows them.")
        holder = _holder(row)
        if holder not in (None, me):
            raise StudioError(f"The pipeline {row.name} is already running (process {holder.pid}).")
        seen = Pipeline.pid.is_(None) if row.pid is None else and_(Pipeline.pid == row.pid, Pipeline.pid_started.is_(None) if row.pid_started is None else Pipeline.pid_started == row.pid_started)
        claimed = session.execute(update(Pipeline).where(Pipeline.id == pipeline_id, seen).values(pid=me.pid, pid_started=me.started)).rowcount == 1
    if not claimed:  # another process claimed it between the read and the UPDATE
        raise StudioError(f"The pipeline {row.name} is already running (process {get_pipeline(pipeline_id).pid}).")


def _set_step(pipeline_id: str, name: str, **fields: Any) -> None:
    with session_scope() as session:
        session.execute(update(PipelineStep).where(PipelineStep.pipeline_id == pipeline_id, PipelineStep.name == name).values(**fields))


def _set_pipeline(pipeline_id: str, **fields: Any) -> None:
    with session_scope() as session:
        session.execute(update(Pipeline).where(Pipeline.id == pipeline_id).values(**fields))


def run_step(pipeline_id: str, name: str, log: Log = print) -> bool:
    """Run one step (False: skipped, its last attempt succeeded with the same inputs)."""
    pipeline = get_pipeline(pipeline_id)
    config = PipelineConfig.model_validate(pipeline.config)
    steps = {s.name: s for s in pipeline_steps(pipeline_id)}
    before = STEPS[: STEPS.index(name)]
    waiting = [s for s in before if steps[s].status != "succeeded"]
    if waiting:
        raise StudioError(f"The {name} step needs the {waiting[0]} step to succeed first.")
    row = steps[name]
    ctx = Context(
        config=config,
        done={s: steps[s].outputs for s in before},
        previous=row.outputs or {},
        save=lambda outputs: _set_step(pipeline_id, name, outputs=_json(outputs)),
        log=lambda text: log(f"[{name}] {text}"),
    )
    step = STEP_FUNCTIONS[name]
    _set_pipeline(pipeline_id, status="running", failure_reason=None, finished_at=None, started_at=pipeline.started_at or utcnow())
    try:
        inputs = _json(step.inputs(ctx))
        if row.status == "succeeded" and row.inputs == inputs:
            ctx.log("done earlier with the same inputs; skipped.")
            return False
        _set_step(pipeline_id, name, status="running", inputs=inputs, attempts=row.attempts + 1, failure_reason=None, started_at=utcnow(), finished_at=None)
        outputs = _json(step.run(ctx, inputs))
    except BaseException as exc:
        if isinstance(exc, StudioError):
            reason = str(exc)
        elif isinstance(exc, KeyboardInterrupt):
            reason = "Interrupted; run the pipeline again to resume here (its jobs keep running)."
        else:
            reason = f"{type(exc).__name__}: {exc}"
        _set_step(pipeline_id, name, status="failed", failure_reason=reason, finished_at=utcnow())
        _set_pipeline(pipeline_id, status="failed", failure_reason=f"The {name} step failed: {reason}", finished_at=utcnow())
        raise
    _set_step(pipeline_id, name, status="succeeded", outputs=outputs, finished_at=utcnow())
    if name == STEPS[-1]:
        _set_pipeline(pipeline_id, status="succeeded", finished_at=utcnow())
    return True


def run(pipeline_id: str, log: Log = print) -> Pipeline:
    """Run (or resume) every step in order; a failed step raises its reason as one sentence."""
    _claim(pipeline_id)
    try:
        for name in STEPS:
            try:
                run_step(pipeline_id, name, log)
            except StudioError as exc:
                raise StudioError(f"The pipeline stopped at the {name} step: {exc}") from None
        if get_pipeline(pipeline_id).status != "succeeded":  # every step was skipped
            _set_pipeline(pipeline_id, status="succeeded", finished_at=utcnow())
    finally:
        _set_pipeline(pipeline_id, pid=None, pid_started=None)
    return get_pipeline(pipeline_id)


def launch(config: PipelineConfig, config_path: Path | None = None) -> Pipeline:
    """Run the pipeline in a detached process (it outlives the page); its log goes to pipelines/<id>.log."""
    pipeline = prepare(config, config_path)
    if _holder(pipeline):
        raise StudioError(f"The pipeline {pipeline.name} is already running (process {pipeline.pid}).")
    log_file = log_path(pipeline.id)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    process = spawn([sys.executable, "-m", "jobs.pipeline", pipeline.id], log=log_file)
    _set_pipeline(pipeline.id, pid=process.pid, pid_started=process.started, status="running", failure_reason=None)
    return get_pipeline(pipeline.id)


def log_path(pipeline_id: str) -> Path:
    return pipelines_dir() / f"{pipeline_id}.log"


def log_tail(pipeline_id: str, lines: int = 40) -> str:
    path = log_path(pipeline_id)
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.is_file() else ""


def summary(pipeline: Pipeline) -> dict[str, Any]:
    """The pipeline and its steps as plain data (the CLI's --json, the page's table)."""
    return {
        "id": pipeline.id,
        "name": pipeline.name,
        "status": pipeline.status,
        "failure_reason": pipeline.failure_reason,
        "created_at": pipeline.created_at,
        "finished_at": pipeline.finished_at,
        "steps": [
            {"name": s.name, "status": s.status, "attempts": s.attempts, "failure_reason": s.failure_reason, "inputs": s.inputs, "outputs": s.outputs, "started_at": s.started_at, "finished_at": s.finished_at}
            for s in pipeline_steps(pipeline.id)
        ],
    }



def configs_dir() -> Path:
    return pipelines_dir() / "configs"


def saved_configs() -> dict[str, Path]:
    """Configs saved from the page (by name), then the repository's examples."""
    found = {f"{p.stem} (saved)": p for p in sorted(configs_dir().glob("*.yaml"))}
    found.update({f"{p.name} (example)": p for p in sorted((REPO / "examples").glob("pipeline*.yaml"))})
    return found


def save_config(text: str) -> Path:
    """Validate a config's YAML and keep it as pipelines/configs/<name>.yaml."""
    from jobs.pipeline.config import parse_pipeline_config

    config = parse_pipeline_config(text)
    dest = configs_dir() / f"{config.name}.yaml"
    atomic_write_text(dest, text)
    return dest
