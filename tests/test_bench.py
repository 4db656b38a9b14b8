"""Every benchmark starts the way the README shows it, as a file (`.venv/bin/python bench/x.py`):
`--help` imports it and parses its options, without running the benchmark."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCHMARKS = sorted(p for p in (REPO / "bench").glob("*.py") if 'if __name__ == "__main__":' in p.read_text())


def test_the_benchmarks_are_found() -> None:
    assert {"inference.py", "ingest.py", "quality_digits.py", "train_throughput.py"} <= {p.name for p in BENCHMARKS}


@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda p: p.name)
def test_a_benchmark_runs_as_a_file(script: Path, tmp_path: Path) -> None:
    # Another working directory and no PYTHONPATH: only the file itself may make `core` and `bench` importable.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"STUDIO_HOME": str(tmp_path / "studio")}
    proc = subprocess.run([sys.executable, str(script), "--help"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("usage:")
