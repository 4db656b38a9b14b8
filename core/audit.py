"""The audit log: one catalog row per action that changes shared state, with who and when."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select

from core.access import current_user, require
from core.db import AuditEvent, session_scope


class Event(BaseModel):
    at: datetime
    actor: str
    action: str
    target: str
    detail: dict[str, Any]


def record(action: str, target: str = "", **detail: Any) -> None:
    """Note that the acting user did `action` to `target` (a job id, a dataset, a run...)."""
    with session_scope() as session:
        session.add(AuditEvent(actor=current_user().name, action=action, target=target, detail=detail))


def events(limit: int = 500, actor: str | None = None, action: str | None = None) -> list[Event]:
    """The newest events first, optionally of one actor or one action (admins only)."""
    require("audit")
    query = select(AuditEvent).order_by(AuditEvent.at.desc(), AuditEvent.id.desc()).limit(limit)
    if actor:
        query = query.where(AuditEvent.actor == actor)
    if action:
        query = query.where(AuditEvent.action == action)
    with session_scope() as session:
        return [Event(at=e.at, actor=e.actor, action=e.action, target=e.target, detail=e.detail) for e in session.scalars(query)]
