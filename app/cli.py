"""The `studio` command line: the same functions the pages call, for scripts and tests.

Each area registers its subcommands from `app/commands/<area>.py`. Every subcommand that reports
something accepts `--json`. A problem the user can fix prints one sentence (`error: ...`) and
exits with status 2.
"""

from __future__ import annotations

import argparse
import sys

import core  # noqa: F401  (telemetry off before anything else is imported)
from app.commands import access, datasets, db, evaluate, export, pipeline, runs, team, training
from core.errors import StudioError

AREAS = (training, datasets, runs, export, pipeline, evaluate, db, team, access)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="studio", description="Diffusion Studio on the command line.")
    sub = parser.add_subparsers(dest="command", required=True)
    for area in AREAS:
        area.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except StudioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("Interrupted; jobs keep running (`studio job list`).", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
