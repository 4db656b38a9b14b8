"""`studio` subcommands, one module per area; each has `register(subparsers)`."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_command(sub: Any, name: str, help_text: str, handler: Any) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help_text, description=help_text)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(handler=handler)
    return parser


def emit(args: argparse.Namespace, data: Any, text: str | None = None) -> None:
    """Print `data` as JSON with --json, else the human sentence (or the JSON if there is none)."""
    if getattr(args, "json", False) or text is None:
        print(json.dumps(data, indent=1, default=str))
    else:
        print(text)
