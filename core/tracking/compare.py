"""Runs side by side: metric curves (with TensorBoard's smoothing), parameter diff, final metrics."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from core.errors import StudioError
from core.tracking.connection import get_tracking
from core.tracking.runs import get_run

# What the page plots by default, in this order; any other logged metric can be picked too.
CURVES = ("loss", "val_loss", "lr", "samples_per_s", "vae_loss", "vae_val_mse", "vae_val_psnr")
FRAME_COLUMNS = ["run", "key", "step", "value", "wall_s"]


def metric_keys(run_ids: list[str]) -> list[str]:
    """Metric keys logged by any of the runs, the usual curves first."""
    keys = {k for rid in run_ids for k in get_run(rid).data.metrics}
    return [k for k in CURVES if k in keys] + sorted(keys - set(CURVES))


def metric_frame(run_ids: list[str], keys: list[str]) -> pd.DataFrame:
    """Long frame run, key, step, value, wall_s (seconds since the run started) for curves."""
    client = get_tracking().client
    frames = []
    for rid in run_ids:
        start = get_run(rid).info.start_time
        for key in keys:
            history = client.get_metric_history(rid, key)
            if history:
                frames.append(
                    pd.DataFrame(
                        {"run": rid, "key": key, "step": [m.step for m in history], "value": [m.value for m in history],
                         "wall_s": [(m.timestamp - start) / 1000 for m in history]}
                    )
                )
    if not frames:
        return pd.DataFrame(columns=FRAME_COLUMNS)
    return pd.concat(frames, ignore_index=True).sort_values(["run", "key", "step"], ignore_index=True)


def smooth(values: pd.Series, weight: float) -> pd.Series:
    """TensorBoard's exponential moving average with bias correction; weight 0 leaves the curve as is."""
    if not 0 <= weight < 1:
        raise StudioError("Smoothing must be at least 0 and below 1.")
    if weight == 0 or values.empty:
        return values
    out, last = [], 0.0
    for count, value in enumerate(values.to_numpy(dtype=float), start=1):
        last = last * weight + (1 - weight) * value
        out.append(last / (1 - weight**count))
    return pd.Series(out, index=values.index)


def smooth_frame(frame: pd.DataFrame, weight: float) -> pd.DataFrame:
    """Smooth each run's curve of each key separately."""
    if frame.empty or weight == 0:
        return frame
    out = frame.copy()
    out["value"] = frame.groupby(["run", "key"], group_keys=False)["value"].apply(lambda s: smooth(s, weight))
    return out


@dataclass
class ParamDiff:
    differing: dict[str, list[str | None]]  # key -> one value per run, in the runs' order
    identical: dict[str, str]


def param_diff(run_ids: list[str]) -> ParamDiff:
    """The parameters whose values differ between the runs (missing counts as different)."""
    params = [get_run(rid).data.params for rid in run_ids]
    keys = sorted(set().union(*params))
    differing, identical = {}, {}
    for key in keys:
        values = [p.get(key) for p in params]
        if len(set(values)) > 1:
            differing[key] = values
        else:
            identical[key] = values[0]  # type: ignore[assignment]
    return ParamDiff(differing, identical)


def final_metrics(run_ids: list[str], keys: list[str] | None = None) -> pd.DataFrame:
    """The last value of each metric per run: rows = metrics, columns = run names."""
    runs = [get_run(rid) for rid in run_ids]
    keys = keys or metric_keys(run_ids)
    columns = {f"{r.info.run_name} ({r.info.run_id[:8]})": [r.data.metrics.get(k) for k in keys] for r in runs}
    return pd.DataFrame(columns, index=keys)
