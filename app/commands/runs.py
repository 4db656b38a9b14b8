"""`studio runs list|show|compare`: the Runs page's queries on the command line."""

from __future__ import annotations

import argparse
from typing import Any

from app.commands import add_command, emit
from core.errors import StudioError


def row_summary(row: Any) -> dict[str, Any]:
    return {
        "run_id": row.run_id,
        "name": row.name,
        "status": row.status,
        "dataset": row.dataset,
        "preset": row.preset,
        "stage": row.stage,
        "backend": row.backend,
        "steps": row.steps,
        "loss": row.last_loss,
        "val_loss": row.val_loss,
        "duration_s": round(row.duration_s, 1) if row.duration_s is not None else None,
        "started": row.started.isoformat(),
    }


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def cmd_list(args: argparse.Namespace) -> None:
    from core.tracking import runs

    query = runs.RunQuery(
        status=[s.upper() for s in args.status],
        dataset=args.dataset,
        preset=args.preset,
        tag=args.tag,
        search=args.search,
        sort=args.sort,
        descending=not args.ascending,
        page_size=args.limit,
    )
    rows = [row_summary(r) for r in runs.list_runs(query).rows]
    text = "\n".join(
        f"{r['run_id'][:8]}  {r['name']:<24.24}  {r['status']:<9}  {r['dataset'] or '-':<28.28}  loss {fmt(r['loss'])}  val {fmt(r['val_loss'])}"
        for r in rows
    )
    emit(args, rows, text or "No runs match.")


def cmd_show(args: argparse.Namespace) -> None:
    from core.tracking import runs, samples

    run_id = runs.resolve_run(args.runs[0])
    detail = runs.run_detail(run_id)
    index = samples.image_index(run_id)
    data = {
        **row_summary(detail.row),
        "params": detail.params,
        "tags": detail.tags,
        "note": detail.note,
        "metrics": detail.row.metrics,
        "sample_steps": {key: list(steps) for key, steps in index.items()},
        "artifacts": detail.artifacts,
    }
    lines = [f"{detail.row.name} ({run_id}) {detail.row.status}, dataset {detail.row.dataset or '-'}, preset {detail.row.preset or '-'}"]
    lines += [f"  {k} = {fmt(v)}" for k, v in sorted(detail.row.metrics.items())]
    if index:
        lines.append(f"  sample steps: {samples.image_steps(index)}")
    if detail.note:
        lines.append(f"  note: {detail.note}")
    emit(args, data, "\n".join(lines))


def cmd_compare(args: argparse.Namespace) -> None:
    from core.tracking import compare, runs

    if not 2 <= len(args.runs) <= 4:
        raise StudioError("Compare 2 to 4 runs.")
    ids = [runs.resolve_run(r) for r in args.runs]
    diff = compare.param_diff(ids)
    metrics = compare.final_metrics(ids)
    data = {
        "runs": ids,
        "param_diff": diff.differing,
        "identical_params": len(diff.identical),
        "final_metrics": {key: dict(zip(ids, values, strict=True)) for key, values in zip(metrics.index, metrics.to_numpy().tolist(), strict=True)},
    }
    width = max([len(k) for k in diff.differing] + [len(k) for k in metrics.index] + [10])
    header = f"{'':<{width}}  " + "  ".join(f"{c:<22.22}" for c in metrics.columns)
    lines = [f"Parameters that differ ({len(diff.differing)}; {len(diff.identical)} identical):", header]
    lines += [f"{k:<{width}}  " + "  ".join(f"{str(v):<22.22}" for v in values) for k, values in diff.differing.items()]
    lines += ["", "Final metrics:", header]
    lines += [f"{k:<{width}}  " + "  ".join(f"{fmt(v):<22}" for v in row) for k, row in zip(metrics.index, metrics.to_numpy().tolist(), strict=True)]
    emit(args, data, "\n".join(lines))


def cmd_runs(args: argparse.Namespace) -> int:
    if args.action != "list" and not args.runs:
        raise StudioError(f"`studio runs {args.action}` needs a run id or name.")
    {"list": cmd_list, "show": cmd_show, "compare": cmd_compare}[args.action](args)
    return 0


def register(sub: Any) -> None:
    p = add_command(sub, "runs", "list runs, show one, or compare 2-4 (parameter diff and final metrics)", cmd_runs)
    p.add_argument("action", choices=["list", "show", "compare"])
    p.add_argument("runs", nargs="*", metavar="RUN", help="run id, id prefix or run name")
    p.add_argument("--status", action="append", default=[], choices=["running", "scheduled", "finished", "failed", "killed"])
    p.add_argument("--dataset", help="name or name@version")
    p.add_argument("--preset")
    p.add_argument("--tag", help="key=value or key")
    p.add_argument("--search", help="part of the run name")
    p.add_argument("--sort", default="start_time", help="start_time, run_name or a metric key")
    p.add_argument("--ascending", action="store_true")
    p.add_argument("--limit", type=int, default=25)
