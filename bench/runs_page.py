"""Time to first paint of the Runs page with 200 runs × 1,000 metric steps, against an empty store.

`python bench/runs_page.py [--runs 200] [--steps 1000] [--repeats 5] [--store DIR]`

Seeds an MLflow store (SQLite, as the studio embeds it) with `--runs` runs that look like the
engine's (tags, the flattened TrainConfig as params, `loss`, `lr` and `val_loss` at every step,
written with log_batch), starts two `streamlit run` servers (that store, and an empty one), and
in Debian's chromium measures from navigation to the runs table (or the empty-state box) being
visible, after one warm-up load each. Writes bench/results/runs_page.json. Seeding takes minutes:
`--store DIR` keeps the seeded store in DIR and reuses it while runs and steps match.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from repo_on_path import REPO  # first: benchmarks run as files

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def seed(home: Path, n_runs: int, steps: int) -> float:
    """Fill the store in `home`; returns the seconds it took."""
    from core.settings import reset_settings
    from core.tracking import create_run, flatten
    from core.tracking.writes import log_params, log_rows, set_status
    from core.training.config import build_config

    os.environ["STUDIO_HOME"] = str(home)
    reset_settings()
    started = time.perf_counter()
    for i in range(n_runs):
        config = build_config({"dataset": f"digits@{i % 7:012x}", "seed": i, "unet": {"lr": 1e-4 * (1 + i % 10)}})
        run_id = create_run(f"bench-{i:03d}", {"dataset": config.dataset, "preset": "tiny", "stage": "all", "backend": "local", "job_id": f"job{i:03d}"})
        log_params(run_id, dict(list(flatten(config.model_dump(mode="json")).items())[:100]))
        t0 = 1_700_000_000 + i * 3_600
        rows = [{"step": s, "time": t0 + s, "loss": 1.0 / (1 + s * (1 + i % 5) / 100), "lr": 1e-3, "val_loss": 1.1 / (1 + s / 90)} for s in range(1, steps + 1)]
        log_rows(run_id, rows)
        set_status(run_id, "FINISHED" if i % 10 else "FAILED")
    return time.perf_counter() - started


def seeded_store(store: Path, n_runs: int, steps: int) -> float:
    """Seed `store` unless it already holds a store of this size; returns the seconds seeding took."""
    marker = store / "seeded.json"
    wanted = {"runs": n_runs, "steps": steps}
    if marker.is_file() and {k: v for k, v in json.loads(marker.read_text()).items() if k in wanted} == wanted:
        return json.loads(marker.read_text())["seed_s"]
    if store.exists() and any(store.iterdir()):
        raise SystemExit(f"{store} holds something other than a seeded store of this size; give an empty folder.")
    store.mkdir(parents=True, exist_ok=True)
    seed_s = seed(store, n_runs, steps)
    marker.write_text(json.dumps({**wanted, "seed_s": round(seed_s, 1)}))
    return seed_s


def first_paint(browser, url: str) -> float:  # type: ignore[no-untyped-def]
    """Seconds from navigation to the Runs table or empty-state box, in a fresh browser context."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    started = time.perf_counter()
    page.goto(f"{url}/runs", timeout=180_000)
    page.locator('[data-testid="stMarkdown"] table, [data-testid="stAlertContainer"]').first.wait_for(state="visible", timeout=180_000)
    elapsed = time.perf_counter() - started
    context.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--store", type=Path, help="Folder that keeps the seeded store between runs.")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    from tests.browser import launch, studio_server

    with tempfile.TemporaryDirectory() as tmp:
        full, empty = args.store or Path(tmp) / "full", Path(tmp) / "empty"
        seed_s = seeded_store(full, args.runs, args.steps)
        empty.mkdir()
        with studio_server(full) as full_url, studio_server(empty) as empty_url, sync_playwright() as p:
            browser = launch(p)
            first_paint(browser, full_url), first_paint(browser, empty_url)  # warm imports and caches
            # Interleave, so a burst of load on the machine hits both sides alike.
            full_times, empty_times = [], []
            for _ in range(args.repeats):
                full_times.append(first_paint(browser, full_url))
                empty_times.append(first_paint(browser, empty_url))
            browser.close()

    full_s, empty_s = statistics.median(full_times), statistics.median(empty_times)
    result = {
        "benchmark": "runs_page",
        "store": {"runs": args.runs, "metric_steps": args.steps, "metrics_per_step": 3, "metric_rows": args.runs * args.steps * 3, "seed_s": round(seed_s, 1)},
        "first_paint_s": {"runs_page_full_store": round(full_s, 3), "runs_page_empty_store": round(empty_s, 3)},
        "samples_s": {"full": [round(t, 3) for t in full_times], "empty": [round(t, 3) for t in empty_times]},
        "ratio": round(full_s / empty_s, 3),
        "target_ratio": 1.5,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(), "load_avg": os.getloadavg()},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    out = REPO / "bench" / "results" / "runs_page.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
