"""Who is acting, and what their role lets them do.

Embedded mode (a laptop) has one user, the local admin. In team mode the HTTP API acts as the
token's owner for one request (`acting_as`), and the Streamlit entry registers a resolver that
names the signed-in user of whichever script run asks, fragment reruns included (`resolve_with`).
The functions in `jobs/` and `core/` that change something call `require`, so a refusal holds
whatever calls them, not only where a button is hidden. The `studio` CLI runs on the server with
the server's files and credentials, so it acts as the local admin.
"""

from __future__ import annotations

import contextlib
import getpass
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from core.db import UserRole, session_scope
from core.errors import StudioError
from core.settings import get_settings

Role = Literal["viewer", "trainer", "admin"]
RANK: dict[Role, int] = {"viewer": 0, "trainer": 1, "admin": 2}

# The least role each action needs, and how a refusal names it.
ACTIONS: dict[str, tuple[Role, str]] = {
    "generate": ("viewer", "generate images"),
    "token": ("viewer", "manage API tokens"),
    "import": ("trainer", "import or curate datasets"),
    "push": ("trainer", "push datasets to S3"),
    "launch": ("trainer", "launch jobs"),
    "stop": ("trainer", "stop, resume or reorder jobs"),
    "export": ("trainer", "export models"),
    "edit_run": ("trainer", "edit runs"),
    "delete": ("admin", "delete datasets or runs"),
    "promote": ("admin", "promote models"),
    "audit": ("admin", "read the audit log"),
    "roles": ("admin", "change roles"),
}


class NotAllowed(StudioError):
    """The acting user's role does not allow the action; nothing was changed."""


@dataclass(frozen=True)
class User:
    name: str  # an email in team mode
    role: Role


LOCAL = User(getpass.getuser() or "local", "admin")
_acting: ContextVar[User | None] = ContextVar("acting_user", default=None)
_resolver: Callable[[], User | None] | None = None


def role_for(email: str, claims: dict | None = None) -> Role:
    """A signed-in user's role: STUDIO_ADMINS (so admins can never be locked out), then the role an
    admin set in the studio, then STUDIO_TRAINERS, then the role claim, then STUDIO_DEFAULT_ROLE."""
    settings = get_settings()
    email = email.strip().lower()
    if email in settings.admins:
        return "admin"
    with session_scope() as session:
        assigned = session.get(UserRole, email)
    if assigned is not None:
        return assigned.role  # type: ignore[return-value]
    if email in settings.trainers:
        return "trainer"
    claimed = (claims or {}).get(settings.role_claim) if settings.role_claim else None
    if claimed in RANK:
        return claimed  # type: ignore[return-value]
    return settings.default_role


@contextlib.contextmanager
def acting_as(user: User) -> Iterator[User]:
    token = _acting.set(user)
    try:
        yield user
    finally:
        _acting.reset(token)


def resolve_with(resolver: Callable[[], User | None]) -> None:
    """Where to find the acting user when no `acting_as` is in force: the UI's session (it returns
    None outside a session's thread, or raises NotAllowed for a session nobody signed in to)."""
    global _resolver
    _resolver = resolver


def _acting_user() -> User | None:
    return _acting.get() or (_resolver() if _resolver is not None else None)


def current_user() -> User:
    return _acting_user() or LOCAL


def require(action: str) -> User:
    """The acting user, if their role allows `action`; else NotAllowed."""
    user = current_user()
    needed, what = ACTIONS[action]
    if RANK[user.role] < RANK[needed]:
        article = "an" if needed == "admin" else "a"
        raise NotAllowed(f"{user.name} has the {user.role} role; only {article} {needed} can {what}.")
    return user


def server_path(path: Path | str) -> Path:
    """`path` resolved, if the acting user may read or write it on the server: in team mode a
    signed-in user (the pages, the API) is kept to STUDIO_HOME; the CLI, run on the server, is not."""
    resolved = Path(path).expanduser().resolve()
    home = get_settings().home.resolve()
    if get_settings().team_mode and _acting_user() is not None and not resolved.is_relative_to(home):
        raise NotAllowed(f"In team mode the studio reads and writes server folders only under {home}; upload or download instead.")
    return resolved


def require_own(action: str, owner: str | None) -> User:
    """`require`, and the thing must be the user's own (`owner`) unless they are an admin."""
    user = require(action)
    if user.role != "admin" and owner != user.name:
        _, what = ACTIONS[action]
        raise NotAllowed(f"This belongs to {owner or 'nobody signed in'}; only its owner or an admin can {what}.")
    return user
