"""`studio audit`, `studio token create|list|revoke` and `studio role set|list`: team mode's audit
log, API tokens and the roles admins give.

The CLI runs on the server as the local admin; `--user` makes a token for a team member."""

from __future__ import annotations

import argparse

from app.commands import add_command, emit


def cmd_audit(args: argparse.Namespace) -> int:
    from core import audit

    events = [event.model_dump(mode="json") for event in audit.events(limit=args.limit, actor=args.actor, action=args.action)]
    lines = [f"{e['at']}  {e['actor']}  {e['action']}  {e['target']}" for e in events]
    emit(args, events, "\n".join(lines) or "The audit log is empty.")
    return 0


def cmd_token_create(args: argparse.Namespace) -> int:
    from core import tokens
    from core.access import LOCAL, User, acting_as, role_for

    user = User(args.user.strip().lower(), role_for(args.user)) if args.user else LOCAL
    with acting_as(user):
        info, token = tokens.create(args.name)
    emit(args, {**info.model_dump(mode="json"), "token": token}, f"{token}\nToken {info.id} for {info.owner}; it is shown only this once.")
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    from core import tokens

    rows = [t.model_dump(mode="json") for t in tokens.list_tokens(everyone=True)]
    lines = [f"{t['id']}  {t['owner']}  {t['name']}  {'revoked' if t['revoked_at'] else 'live'}" for t in rows]
    emit(args, rows, "\n".join(lines) or "No API tokens yet.")
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    from core import tokens

    info = tokens.revoke(args.id)
    emit(args, info.model_dump(mode="json"), f"Token {info.id} of {info.owner} is revoked.")
    return 0


def cmd_role_set(args: argparse.Namespace) -> int:
    from core import roles

    roles.set_role(args.email, args.role)
    emit(args, {"email": args.email.strip().lower(), "role": args.role}, f"{args.email.strip().lower()} now has the {args.role} role.")
    return 0


def cmd_role_list(args: argparse.Namespace) -> int:
    from core import roles

    assigned = roles.assigned_roles()
    emit(args, assigned, "\n".join(f"{email}  {role}" for email, role in assigned.items()) or "No roles set in the studio yet.")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    audit = add_command(sub, "audit", "Who launched, stopped, deleted, promoted, exported, imported or made a token, newest first.", cmd_audit)
    audit.add_argument("--limit", type=int, default=200)
    audit.add_argument("--actor", help="only this user's actions")
    audit.add_argument("--action", help="only this action, e.g. job.launch")
    token = sub.add_parser("token", help="API tokens", description="Bearer tokens for the HTTP API (team mode).")
    actions = token.add_subparsers(dest="token_command", required=True)
    create = add_command(actions, "create", "Make a token (printed once).", cmd_token_create)
    create.add_argument("name", help="what the token is for, e.g. 'ci'")
    create.add_argument("--user", help="the team member it acts for (default: the local admin)")
    add_command(actions, "list", "Every token, live and revoked.", cmd_token_list)
    revoke = add_command(actions, "revoke", "Revoke a token by its id.", cmd_token_revoke)
    revoke.add_argument("id")
    role = sub.add_parser("role", help="team roles", description="Roles admins give team members (team mode).")
    role_actions = role.add_subparsers(dest="role_command", required=True)
    give = add_command(role_actions, "set", "Give a team member a role.", cmd_role_set)
    give.add_argument("email")
    give.add_argument("role", choices=["viewer", "trainer", "admin"])
    add_command(role_actions, "list", "The roles set in the studio.", cmd_role_list)
