"""Importing this puts the repository root on sys.path, before `core` or `bench.common` is imported.

Benchmarks run as files (`.venv/bin/python bench/x.py`, as the README shows), and Python then puts
only `bench/` on the path; this module is found there, so every benchmark starts with
`import repo_on_path`.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
