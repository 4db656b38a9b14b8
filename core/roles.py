"""Roles an admin gives team members in the studio (team mode), on top of the settings' lists."""

from __future__ import annotations

from sqlalchemy import select

from core import audit
from core.access import RANK, Role, require
from core.db import UserRole, session_scope, utcnow
from core.errors import StudioError


def set_role(email: str, role: Role) -> None:
    """Give `email` a role in this studio (admins only); STUDIO_ADMINS stay admins whatever is set."""
    admin = require("roles")
    email = email.strip().lower()
    if "@" not in email or len(email) > 256:
        raise StudioError(f"{email!r} is not an email address.")
    if role not in RANK:
        raise StudioError(f"There is no role {role!r}; choose viewer, trainer or admin.")
    with session_scope() as session:
        row = session.get(UserRole, email) or UserRole(email=email)
        before = row.role
        row.role, row.updated_by, row.updated_at = role, admin.name, utcnow()
        session.add(row)
    audit.record("user.role", email, role=role, before=before)


def assigned_roles() -> dict[str, str]:
    """The roles admins set in the studio, by email."""
    require("roles")
    with session_scope() as session:
        return {row.email: row.role for row in session.scalars(select(UserRole).order_by(UserRole.email))}
