"""How close the launch estimate is: `jobs.estimate.measure` for a recipe on the demo digits, then
the same config trained for real (`python -m core.training`, as a local job's trainer runs), one
after the other on this machine. The baseline is the real run's wall time; the figure is the
estimate's ratio to it (1.0 = exact).

    .venv/bin/python bench/estimate.py [--recipe quick-demo] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import repo_on_path  # noqa: F401  (first: benchmarks run as files)
import yaml

import core  # noqa: F401
from bench.common import write_result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipe", default="quick-demo")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["STUDIO_HOME"] = str(Path(tmp) / "home")
        from core.datasets.demo import ensure_demo_dataset
        from core.training.config import build_config
        from core.training.recipes import RECIPES
        from jobs.estimate import measure

        dataset = ensure_demo_dataset()
        rows = []
        for attempt in range(args.repeats):
            out = Path(tmp) / f"run-{attempt}"
            config = build_config(RECIPES[args.recipe], [f"dataset={dataset}", f"output_dir={out}"])
            estimate = measure(config)
            config_file = Path(tmp) / f"config-{attempt}.yaml"
            config_file.write_text(yaml.safe_dump(config.model_dump(mode="json")))
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "core.training", "--config", str(config_file)], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
            actual = time.perf_counter() - started
            rows.append({"estimated_s": round(estimate.total_seconds, 1), "actual_s": round(actual, 1),
                         "ratio": round(estimate.total_seconds / actual, 3), "load_average": os.getloadavg()})
    ratios = [r["ratio"] for r in rows]
    write_result("estimate", {
        "recipe": args.recipe,
        "dataset": "digits (1,797 images)",
        "baseline": "the same config trained for real right after the estimate",
        "runs": rows,
        "ratio_range": [min(ratios), max(ratios)],
    })


if __name__ == "__main__":
    main()
