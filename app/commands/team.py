"""`studio team up`: the team stack on one machine (PostgreSQL, MLflow server, the studio and its API)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from app.commands import add_command, emit


def cmd_up(args: argparse.Namespace) -> int:
    from core.settings import get_settings
    from jobs.team_stack import TeamOptions, run

    settings = get_settings()
    options = TeamOptions(
        home=args.home or settings.home,
        host=args.host,
        studio_port=args.port,
        api_port=args.api_port,
        playground_port=args.playground_port,
        mlflow_port=args.mlflow_port,
        postgres_port=args.postgres_port,
        s3_bucket=settings.s3_bucket,
        s3_prefix=settings.s3_prefix,
    )

    def ready(urls: dict[str, str]) -> None:
        text = (
            f"The team stack is up (Ctrl-C stops it):\n"
            f"  studio     {urls['studio']}\n"
            f"  HTTP API   {urls['api']} (docs at {urls['api_docs']})\n"
            f"  MLflow UI  {urls['mlflow']}\n"
            f"  catalog    {urls['catalog']}\n"
            f"  logs       {options.folder / 'logs'}"
        )
        emit(args, urls, text)
        sys.stdout.flush()

    run(options, say=lambda line: print(line, file=sys.stderr, flush=True), ready=ready)
    print("The team stack is stopped.", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    team = sub.add_parser("team", help="the team stack on one machine", description="The team stack on one machine: PostgreSQL, MLflow server, the studio and its HTTP API.")
    actions = team.add_subparsers(dest="team_command", required=True)
    p = add_command(
        actions,
        "up",
        "Start PostgreSQL (a cluster under STUDIO_HOME/team), the MLflow server on it, the studio and its HTTP API; Ctrl-C stops them all.",
        cmd_up,
    )
    p.add_argument("--host", default="127.0.0.1", help="address the studio, the API and MLflow listen on (default 127.0.0.1; PostgreSQL always listens on 127.0.0.1 only)")
    p.add_argument("--port", type=int, default=8501, help="the studio's port (default 8501)")
    p.add_argument("--api-port", type=int, default=8000, help="the HTTP API's port (default 8000)")
    p.add_argument("--playground-port", type=int, default=7860, help="port of the studio's own playground (default 7860)")
    p.add_argument("--mlflow-port", type=int, default=5000, help="the MLflow server's port (default 5000)")
    p.add_argument("--postgres-port", type=int, default=5432, help="PostgreSQL's port on 127.0.0.1 (default 5432)")
    p.add_argument("--home", type=Path, help="the studio's folder (default STUDIO_HOME); the cluster, artifacts and logs go in its team/ folder")
