"""What every benchmark records next to its figures: the machine, its load, and where it writes."""

from __future__ import annotations

import fcntl
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from core.files import atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results"
ABLATIONS = RESULTS / "quality_ablations.json"


def machine() -> dict[str, Any]:
    import torch

    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average": os.getloadavg(),
    }


def run_metrics(out: Path) -> tuple[list[dict[str, float]], dict[str, float]]:
    """A training run's metrics.jsonl lines under `out`, and the last value of each metric."""
    lines = [json.loads(line) for line in (out / "checkpoints" / "metrics.jsonl").read_text().splitlines()]
    last: dict[str, float] = {}
    for line in lines:
        last.update({k: v for k, v in line.items() if k != "time"})
    return lines, last


def write_result(name: str, result: dict[str, Any]) -> Path:
    """Write bench/results/<name>.json (atomically) and print it."""
    result = {"benchmark": name, "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **result, "machine": machine()}
    path = RESULTS / f"{name}.json"
    atomic_write_text(path, json.dumps(result, indent=1, default=str))
    print(json.dumps(result, indent=1, default=str))
    return path


def append_ablation(row: dict[str, Any]) -> None:
    """Add one row to bench/results/quality_ablations.json; ablations run side by side, so under a lock."""
    with open(ABLATIONS.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        rows = json.loads(ABLATIONS.read_text()) if ABLATIONS.exists() else []
        atomic_write_text(ABLATIONS, json.dumps([*rows, row], indent=1))
