"""What a user changes on a run from the Runs page or the CLI: its note, its tags, its deletion."""

from __future__ import annotations

from core import audit
from core.access import require
from core.errors import StudioError
from core.tracking.artifacts import drop_cache
from core.tracking.connection import get_tracking
from core.tracking.registry import registered_versions
from core.tracking.runs import NOTE_TAG, check_key, get_run


def set_note(run_id: str, text: str) -> None:
    require("edit_run")
    get_run(run_id)
    get_tracking().client.set_tag(run_id, NOTE_TAG, text)


def set_tag(run_id: str, key: str, value: str) -> None:
    require("edit_run")
    key = check_key(key.strip(), writable=True)
    get_run(run_id)
    get_tracking().client.set_tag(run_id, key, value)


def delete_tag(run_id: str, key: str) -> None:
    require("edit_run")
    get_tracking().client.delete_tag(run_id, key)


def delete_run(run_id: str) -> None:
    """Delete a run (MLflow keeps it restorable until garbage collection); refused while the registry needs it."""
    require("delete")
    get_run(run_id)
    needed = registered_versions(run_id)
    if needed:
        names = ", ".join(f"{v.name} v{v.version}" for v in needed)
        raise StudioError(f"The run is registered as {names}; delete those model versions first.")
    get_tracking().client.delete_run(run_id)
    drop_cache(run_id)
    audit.record("run.delete", run_id)
