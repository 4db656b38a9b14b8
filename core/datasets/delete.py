"""Deleting a dataset or one version, keeping what runs need to stay reproducible.

A version is kept when an MLflow run (any experiment, deleted runs included: they can be restored)
carries it in its `dataset` tag, or a job row names it. A bare `name` in a tag or job means the
version that was newest when the run or job started. Everything else is removed from the catalog
and the object store together: in a local store the version folders are first renamed out of
sight, the catalog rows are deleted in one transaction, and only after it commits are the folders
removed (renamed back if the transaction fails). Deleting a whole dataset also removes its draft.
"""

from __future__ import annotations

import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from pydantic import BaseModel
from sqlalchemy import delete, select

from core import audit
from core.access import require
from core.datasets.draft import draft_dir
from core.datasets.versions import check_name, list_versions, version_prefix
from core.db import Dataset, DatasetVersion, Job, session_scope
from core.errors import StudioError
from core.settings import get_settings
from core.storage import LocalStore, get_store


class User(BaseModel):
    """A run or job that used a version."""

    kind: Literal["run", "job"]
    id: str
    name: str


class Deletion(BaseModel):
    name: str
    version: str | None  # None: the whole dataset (every version and the draft)
    remove: list[str]
    keep: dict[str, list[User]]
    draft: bool  # the dataset has a draft
    remaining: int  # versions left in the catalog afterwards

    @property
    def whole(self) -> bool:
        return self.version is None

    def summary(self) -> str:
        what = f"the dataset {self.name}" if self.whole else f"{self.name}@{self.version}"
        parts = [f"{len(self.remove)} version(s) of {self.name} removed" if self.remove else "no version removed"]
        if self.whole and self.draft:
            parts.append("the draft removed")
        for version, users in self.keep.items():
            names = ", ".join(f"{u.kind} {u.name}" for u in users[:3]) + (f" and {len(users) - 3} more" if len(users) > 3 else "")
            parts.append(f"{self.name}@{version} kept: used by {names}")
        return f"Deleting {what}: " + "; ".join(parts) + "."


def _as_utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _newest_at(versions: list[DatasetVersion], moment: datetime) -> str | None:
    """The version that was newest at `moment` (what a bare dataset name resolved to then)."""
    older = [v for v in versions if _as_utc(v.created_at) <= moment]  # list_versions: newest first
    return older[0].version if older else None


def users_of(name: str, versions: list[DatasetVersion]) -> dict[str, list[User]]:
    """Runs and jobs that used each version, by version id."""
    from core.tracking.runs import runs_tagged

    ids = {v.version for v in versions}
    used: dict[str, list[User]] = {}
    try:
        for ref in [f"{name}@{v}" for v in sorted(ids)] + [name]:
            for run in runs_tagged("dataset", ref):
                started = datetime.fromtimestamp(run.info.start_time / 1000, timezone.utc)
                version = ref.partition("@")[2] or _newest_at(versions, started)
                if version in ids:
                    used.setdefault(version, []).append(User(kind="run", id=run.info.run_id, name=run.info.run_name or run.info.run_id))
    except Exception as exc:  # never delete what we could not check
        raise StudioError(f"MLflow could not be searched for runs that use {name} ({type(exc).__name__}); nothing was deleted.") from None
    with session_scope() as session:
        jobs = session.scalars(select(Job).where(Job.dataset.in_([name, *(f"{name}@{v}" for v in ids)]))).all()
        for job in jobs:
            version = (job.dataset or "").partition("@")[2] or _newest_at(versions, _as_utc(job.created_at))
            if version in ids:
                used.setdefault(version, []).append(User(kind="job", id=job.id, name=job.id))
    return used


def plan_deletion(ref: str) -> Deletion:
    """What deleting `name` (the whole dataset) or `name@version` would remove and what it keeps."""
    name, _, version = ref.partition("@")
    check_name(name)
    versions = list_versions(name)
    has_draft = draft_dir(name).exists()
    if version:
        chosen = [v for v in versions if v.version == version]
        if not chosen:
            raise StudioError(f"The dataset version {name}@{version} does not exist.")
    elif not versions and not has_draft:
        raise StudioError(f"The dataset {name!r} does not exist.")
    else:
        chosen = versions
    # A bare name resolves against every version, so a run's newest-at-the-time version is found
    # even when only one version is being deleted.
    used = users_of(name, versions)
    remove = [v.version for v in chosen if v.version not in used]
    return Deletion(
        name=name,
        version=version or None,
        remove=remove,
        keep={v.version: used[v.version] for v in chosen if v.version in used},
        draft=has_draft,
        remaining=len(versions) - len(remove),
    )


def delete_dataset(ref: str) -> Deletion:
    """Delete `name` or `name@version` as `plan_deletion` describes it; return the plan carried out."""
    require("delete")
    plan = plan_deletion(ref)
    store = get_store()
    hidden: list[tuple[Path, Path]] = []  # (trash folder, where it was), local store only
    try:
        with session_scope() as session:
            dataset = session.scalar(select(Dataset).where(Dataset.name == plan.name))
            if dataset is not None and plan.remove:
                session.execute(delete(DatasetVersion).where(DatasetVersion.dataset_id == dataset.id, DatasetVersion.version.in_(plan.remove)))
                if plan.remaining == 0 and (plan.whole or not plan.draft):
                    session.delete(dataset)  # nothing of it is left
            session.flush()
            if isinstance(store, LocalStore):
                for version in plan.remove:
                    folder = store.path(version_prefix(plan.name, version))
                    if folder.exists():
                        trash = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".tmp-deleted-"))
                        folder.rename(trash / version)
                        hidden.append((trash, folder))
    except BaseException:
        for trash, folder in hidden:
            (trash / folder.name).rename(folder)
            trash.rmdir()
        raise
    for trash, _ in hidden:
        shutil.rmtree(trash, ignore_errors=True)
    settings = get_settings()
    for version in plan.remove:
        if not isinstance(store, LocalStore):
            store.delete_prefix(version_prefix(plan.name, version))
        shutil.rmtree(settings.cache_dir / version_prefix(plan.name, version), ignore_errors=True)
        (settings.cache_dir / "exports" / f"{plan.name}-{version}.zip").unlink(missing_ok=True)
    if plan.whole:
        shutil.rmtree(draft_dir(plan.name), ignore_errors=True)
    audit.record("dataset.delete", ref, versions=plan.remove)
    return plan
