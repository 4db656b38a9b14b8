"""Bearer tokens for the HTTP API: made by their owner, shown once, kept as a sha256 digest; and
playground tickets, which carry a signed-in user from the Playground page into its iframe.

A token is 32 random bytes, so a plain sha256 is enough to keep a stolen catalog from yielding
usable tokens (no password stretching needed). The role is looked up when a token or a ticket is
used, so a changed role applies at once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from datetime import datetime
from functools import lru_cache

from pydantic import BaseModel
from sqlalchemy import select

from core import audit
from core.access import User, require, require_own, role_for
from core.db import ApiToken, session_scope, utcnow
from core.errors import StudioError
from core.settings import get_settings

PREFIX = "dst_"  # recognisable in logs and secret scanners


class TokenInfo(BaseModel):
    id: str
    owner: str
    name: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _info(row: ApiToken) -> TokenInfo:
    return TokenInfo.model_validate(row, from_attributes=True)


def create(name: str) -> tuple[TokenInfo, str]:
    """A new token for the acting user: its record, and the token itself (never stored, shown once)."""
    user = require("token")
    name = name.strip()
    if not name or len(name) > 128:
        raise StudioError("Give the token a name of 1 to 128 characters, e.g. where it will be used.")
    token = PREFIX + secrets.token_urlsafe(32)
    with session_scope() as session:
        row = ApiToken(owner=user.name, name=name, digest=_digest(token))
        session.add(row)
        session.flush()
        info = _info(row)
    audit.record("token.create", info.id, name=name)
    return info, token


def list_tokens(everyone: bool = False) -> list[TokenInfo]:
    """The acting user's tokens (everyone's for an admin who asks), newest first."""
    user = require("audit") if everyone else require("token")
    query = select(ApiToken).order_by(ApiToken.created_at.desc())
    if not everyone:
        query = query.where(ApiToken.owner == user.name)
    with session_scope() as session:
        return [_info(row) for row in session.scalars(query)]


def revoke(token_id: str) -> TokenInfo:
    """Revoke one token: the owner's own, or anyone's for an admin. Revoking twice is harmless."""
    with session_scope() as session:
        row = session.get(ApiToken, token_id)
        if row is None:
            raise StudioError(f"There is no API token {token_id!r}.")
        require_own("token", row.owner)
        if row.revoked_at is None:
            row.revoked_at = utcnow()
        info = _info(row)
    audit.record("token.revoke", token_id, owner=info.owner)
    return info


def authenticate(token: str) -> User | None:
    """The user a live token acts for, or None (unknown, malformed or revoked)."""
    if not token.startswith(PREFIX):
        return None
    with session_scope() as session:
        row = session.scalar(select(ApiToken).where(ApiToken.digest == _digest(token)))
        if row is None or row.revoked_at is not None:
            return None
        row.last_used_at = utcnow()
        return User(row.owner, role_for(row.owner))


@lru_cache(maxsize=4)
def _signing_key(home: str) -> bytes:
    """The studio's key for tickets: made once under STUDIO_HOME (0600), shared by its processes."""
    path = os.path.join(home, "signing.key")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        with open(path, "rb") as existing:
            return existing.read()
    key = secrets.token_bytes(32)
    with os.fdopen(fd, "wb") as new:
        new.write(key)
    return key


def _sign(payload: bytes) -> str:
    key = _signing_key(str(get_settings().home.resolve()))
    return base64.urlsafe_b64encode(hmac.new(key, payload, hashlib.sha256).digest()).decode().rstrip("=")


def ticket(user: User, seconds: int = 12 * 3600) -> str:
    """A signed note that `user` may use the playground until `seconds` from now."""
    payload = base64.urlsafe_b64encode(json.dumps({"u": user.name, "exp": int(time.time()) + seconds}).encode()).decode().rstrip("=")
    return f"{payload}.{_sign(payload.encode())}"


def from_ticket(value: str) -> User | None:
    """The user a ticket names, if it is signed by this studio and not expired."""
    payload, _, signature = value.partition(".")
    if not payload or not hmac.compare_digest(signature, _sign(payload.encode())):
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except ValueError:
        return None
    if not isinstance(claims, dict) or int(claims.get("exp", 0)) < time.time():
        return None
    return User(str(claims["u"]), role_for(str(claims["u"])))

