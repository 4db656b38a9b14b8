"""Export rows in the catalog: list, get and find them.

Below both core.export (which writes the rows) and core.inference (which resolves a model name to
an export), so that neither package imports the other's.
"""

from __future__ import annotations

from sqlalchemy import select

from core.db import Export, session_scope
from core.errors import StudioError


def list_exports(limit: int = 100) -> list[Export]:
    with session_scope() as session:
        return list(session.scalars(select(Export).order_by(Export.created_at.desc()).limit(limit)))


def get_export(export_id: str) -> Export:
    with session_scope() as session:
        record = session.get(Export, export_id)
    if record is None:
        raise StudioError(f"There is no export {export_id!r}.")
    return record


def find_export(**where: str) -> Export | None:
    """The newest export whose columns equal `where` (e.g. `mlflow_run_id=...`), or None."""
    with session_scope() as session:
        query = select(Export).filter_by(**where).order_by(Export.created_at.desc()).limit(1)
        return session.scalars(query).first()
