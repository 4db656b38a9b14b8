"""Team mode under load: four clients at once against the team stack (`studio team up`'s PostgreSQL
catalog and MLflow server) — two importing and curating datasets, one launching and stopping local
jobs, one browsing runs and generating — for `--seconds`; then every record they made is checked.
The baseline is each client alone for a quarter of that time, in the same run: the ratio is the
operations per second with four at once over the same client alone. Writes bench/results/team_load.json.

    .venv/bin/python bench/team_load.py [--seconds 120]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile
from pathlib import Path

from repo_on_path import REPO  # first: benchmarks run as files

ROLES = ("curate", "curate", "launch", "browse")
LONG = ["stage=unet", "unet.steps=100000", "checkpoint_every=100000", "validate_every=100000", "sample_every=100000"]


def tiny_zip(path: Path, seed: int) -> None:
    """Twelve 32×32 PNGs with .txt captions."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(12):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buf, "PNG")
            zf.writestr(f"img_{i:02d}.png", buf.getvalue())
            zf.writestr(f"img_{i:02d}.txt", f"noise pattern {seed} {i}")


def curate(name: str, i: int, work: Path) -> dict:
    from core.datasets.draft import load_draft, save_version, set_captions
    from core.datasets.ingest import import_dataset

    archive = work / f"{name}-{i}.zip"
    tiny_zip(archive, i)
    dataset = f"{name}-{i}"
    report = import_dataset(dataset, zip_path=archive)
    draft = load_draft(dataset)
    set_captions(draft, {item.id: f"{item.caption}, curated" for item in draft.items[:3]})
    version = save_version(draft, note="curated")
    return {"dataset": dataset, "versions": [report.version, version]}


def launch(name: str, i: int, work: Path) -> dict:
    from core.training.config import build_config
    from jobs import control
    from jobs.records import FINAL, get_job

    config = build_config({"preset": "tiny", "dataset": os.environ["LOAD_DATASET"]}, LONG)
    job = control.launch(config, name=f"{name}-{i}")
    deadline = time.monotonic() + 60
    while control.poll(job.id).status in ("queued", "starting") and time.monotonic() < deadline:
        time.sleep(0.5)
    status = control.poll(job.id).status
    if status == "queued":
        control.cancel(job.id)
    elif status not in FINAL:
        control.stop(job.id)
    deadline = time.monotonic() + 120
    while control.poll(job.id).status not in FINAL and time.monotonic() < deadline:
        time.sleep(0.5)
    return {"job": job.id, "status": get_job(job.id).status}


def browse(name: str, i: int, work: Path) -> dict:
    from core.inference.models import generate
    from core.inference.torch_backend import GenerateRequest
    from core.tracking import runs

    listed = runs.list_runs(runs.RunQuery()).rows
    for row in listed[:2]:
        runs.get_run(row.run_id)
    result = generate(os.environ["LOAD_MODEL"], GenerateRequest(prompt="a noise pattern", steps=2, seed=i), "torch")
    return {"runs": len(listed), "images": len(result.images)}


def client(role: str, name: str, seconds: float, ledger: Path) -> None:
    """Run `role` in a loop for `seconds`; one JSON line per operation in `ledger`."""
    import torch

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix=f"load-{name}-"))
    operation = {"curate": curate, "launch": launch, "browse": browse}[role]
    end = time.monotonic() + seconds
    i = 0
    with ledger.open("a") as out:
        while time.monotonic() < end:
            started = time.monotonic()
            try:
                record = {"ok": True, **operation(name, i, work)}
            except Exception as exc:  # an error is a result here
                record = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-1500:]}
            out.write(json.dumps({"role": role, "client": name, "seconds": round(time.monotonic() - started, 3), **record}) + "\n")
            out.flush()
            i += 1


def run_clients(env: dict[str, str], plan: list[tuple[str, str]], seconds: float, ledger: Path) -> list[dict]:
    procs = [
        subprocess.Popen([sys.executable, __file__, "--client", role, "--name", name, "--seconds", str(seconds), "--ledger", str(ledger)], env=env, cwd=REPO)
        for role, name in plan
    ]
    for proc in procs:
        proc.wait()
    return [json.loads(line) for line in ledger.read_text().splitlines()] if ledger.exists() else []


def check_nothing_lost(records: list[dict]) -> list[str]:
    """Every version a client saved is in the catalog and readable; every job it launched has ended
    and its run is on the MLflow server."""
    from core.datasets.versions import read_manifest
    from core.tracking import get_tracking
    from jobs.records import FINAL, get_job

    lost = []
    for r in records:
        if not r["ok"]:
            continue
        for version in r.get("versions", []):
            try:
                read_manifest(r["dataset"], version)
            except Exception as exc:
                lost.append(f"{r['dataset']}@{version}: {exc}")
        if "job" in r:
            job = get_job(r["job"])
            if job.status not in FINAL:
                lost.append(f"job {job.id} is still {job.status}")
            elif job.mlflow_run_id:
                try:
                    get_tracking().client.get_run(job.mlflow_run_id)
                except Exception as exc:
                    lost.append(f"run of job {job.id}: {exc}")
    return lost


def rates(records: list[dict], seconds: float) -> dict[str, float]:
    by_role: dict[str, int] = {}
    for r in records:
        if r["ok"]:
            by_role[r["role"]] = by_role.get(r["role"], 0) + 1
    return {role: round(count / seconds, 4) for role, count in by_role.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--client", choices=["curate", "launch", "browse"])
    parser.add_argument("--name")
    parser.add_argument("--ledger", type=Path)
    args = parser.parse_args()
    if args.client:
        client(args.client, args.name, args.seconds, args.ledger)
        return

    from bench.common import write_result
    from jobs.team_stack import TeamOptions, TeamStack
    from tests.servers import free_port

    home = Path(tempfile.mkdtemp(prefix="team-load-"))
    home.chmod(0o755)  # PostgreSQL runs as `nobody` when this runs as root
    options = TeamOptions(home=home, studio_port=free_port(), api_port=free_port(), playground_port=free_port(), mlflow_port=free_port(), postgres_port=free_port())
    stack = TeamStack(options, say=lambda line: print(line, file=sys.stderr))
    try:
        urls = stack.start()
        env = {**os.environ, "STUDIO_HOME": str(home), "STUDIO_DATABASE_URL": urls["catalog"], "STUDIO_MLFLOW_URI": urls["mlflow"], "STUDIO_MAX_LOCAL_JOBS": "1"}
        os.environ.update({k: env[k] for k in ("STUDIO_HOME", "STUDIO_DATABASE_URL", "STUDIO_MLFLOW_URI")})
        from core.datasets.demo import ensure_demo_dataset
        from core.modeling.io import save_components
        from core.modeling.presets import build_components

        env["LOAD_DATASET"] = ensure_demo_dataset()
        env["LOAD_MODEL"] = str(save_components(build_components("tiny"), home / "load-model"))

        plan = [(role, f"{role}{n}") for n, role in enumerate(ROLES)]
        alone: list[dict] = []
        quarter = args.seconds / len(plan)
        for role, name in plan:  # the baseline: each client alone
            alone += run_clients(env, [(role, f"alone-{name}")], quarter, home / f"alone-{name}.jsonl")
        together = run_clients(env, plan, args.seconds, home / "together.jsonl")
        errors = [r for r in alone + together if not r["ok"]]
        lost = check_nothing_lost(alone + together)
        alone_rates = {role: rate * len([p for p in plan if p[0] == role]) for role, rate in rates(alone, quarter).items()}
        together_rates = rates(together, args.seconds)
        write_result(
            "team_load",
            {
                "seconds": args.seconds,
                "clients": [role for role, _ in plan],
                "stack": "PostgreSQL (Debian) catalog + mlflow server on PostgreSQL, local jobs, one shared STUDIO_HOME",
                "operations": {"alone": len(alone), "together": len(together)},
                "errors": len(errors),
                "error_samples": [e["error"] for e in errors[:5]],
                "lost": lost,
                "ops_per_s_together": together_rates,
                "ops_per_s_alone": alone_rates,
                "baseline": "each client alone for seconds/4, in the same run (alone rates scaled by the number of clients of that role)",
                "ratio_together_to_alone": {role: round(together_rates.get(role, 0) / rate, 3) for role, rate in alone_rates.items() if rate},
                "median_seconds_per_op": {role: sorted(r["seconds"] for r in together if r["role"] == role and r["ok"])[len([r for r in together if r["role"] == role and r["ok"]]) // 2] for role in together_rates},
            },
        )
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
