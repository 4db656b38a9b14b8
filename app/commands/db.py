"""`studio db upgrade|current`: the catalog's schema migrations (Alembic)."""

from __future__ import annotations

import argparse

from app.commands import add_command, emit


def cmd_upgrade(args: argparse.Namespace) -> int:
    from sqlalchemy import create_engine

    from core.db import describe_url, migrate, reset_engines
    from core.settings import get_settings

    url = get_settings().catalog_url
    engine = create_engine(url)
    try:
        moved = migrate(engine)
    finally:
        engine.dispose()
    reset_engines()
    result = {"url": describe_url(url), "from": moved["from"], "to": moved["to"]}
    if moved["from"] == moved["to"]:
        text = f"The catalog is up to date (revision {moved['to']})."
    else:
        text = f"Upgraded the catalog from {moved['from'] or 'no revision'} to {moved['to']}."
    emit(args, result, text)
    return 0


def cmd_current(args: argparse.Namespace) -> int:
    from core.db import catalog_status

    status = catalog_status()
    emit(args, status, f"{status['url']}: revision {status['revision'] or 'none'} (this studio's head: {status['head']}); {status['state']}.")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    db = sub.add_parser("db", help="the catalog's schema migrations", description="The catalog's schema migrations (Alembic).")
    actions = db.add_subparsers(dest="db_command", required=True)
    add_command(actions, "upgrade", "Bring the catalog's schema to this studio's newest revision.", cmd_upgrade)
    add_command(actions, "current", "Show the catalog's schema revision and this studio's newest.", cmd_current)
