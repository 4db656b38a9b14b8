"""Evaluation results on MLflow runs: logged as metrics (for tables and sorting) and artifacts
(`evaluation/<features>/result.json` and the sample grids), and read back for the comparison."""

from __future__ import annotations

from pathlib import Path

from core.evaluation.evaluate import EvalResult
from core.files import atomic_write_text
from core.tracking.runs import get_run
from core.tracking.writes import log_artifacts, log_metrics, set_tags

PREFIX = "eval"
# The comparison's columns: (metric, label, better) with better = "max" or "min".
COLUMNS = (
    ("prompt_accuracy", "Prompt accuracy", "max"),
    ("frechet", "Fréchet distance", "min"),
    ("kid", "KID", "min"),
    ("coverage", "Coverage", "max"),
    ("precision", "Precision", "max"),
    ("recall", "Recall", "max"),
    ("density", "Density", None),
)


def metric_values(result: EvalResult) -> dict[str, float]:
    """Flat MLflow metrics: `eval/<features>/cfg<g>/<metric>`, the floors and the ceiling."""
    base = f"{PREFIX}/{result.features}"
    values = {f"{base}/evaluator_accuracy": result.evaluator_accuracy}
    for floor in ("floor_real", "floor_vae"):
        values.update({f"{base}/{floor}/{k}": v for k, v in getattr(result, floor).model_dump().items()})
    for r in result.results:
        values.update({f"{base}/cfg{r.guidance:g}/{k}": v for k, v in r.metrics.model_dump().items()})
        values[f"{base}/cfg{r.guidance:g}/prompt_accuracy"] = r.prompt_accuracy
        values[f"{base}/cfg{r.guidance:g}/images_per_second"] = r.images_per_second
    return values


def log_result(run_id: str, result: EvalResult, out_dir: Path) -> None:
    log_metrics(run_id, metric_values(result))
    set_tags(run_id, {f"{PREFIX}.{result.features}.dataset": result.dataset})
    atomic_write_text(out_dir / "result.json", result.model_dump_json(indent=1))
    log_artifacts(run_id, out_dir, f"evaluation/{result.features}")


def comparison_rows(run_ids: list[str], names: dict[str, str] | None = None) -> list[dict[str, object]]:
    """One row per run, features and guidance scale that has evaluation metrics."""
    rows = []
    for run_id in run_ids:
        metrics = get_run(run_id).data.metrics
        found: dict[tuple[str, str], dict[str, float]] = {}
        for key, value in metrics.items():
            parts = key.split("/")
            if len(parts) == 4 and parts[0] == PREFIX and parts[2].startswith("cfg"):
                found.setdefault((parts[1], parts[2][3:]), {})[parts[3]] = value
        for (features, guidance), values in sorted(found.items(), key=lambda kv: (kv[0][0], float(kv[0][1]))):
            base = f"{PREFIX}/{features}"
            rows.append(
                {
                    "run": (names or {}).get(run_id, run_id),
                    "features": features,
                    "guidance": float(guidance),
                    **{label: values.get(metric) for metric, label, _ in COLUMNS},
                    "Ceiling (evaluator)": metrics.get(f"{base}/evaluator_accuracy"),
                    "Floor real-vs-real": metrics.get(f"{base}/floor_real/frechet"),
                    "Floor VAE": metrics.get(f"{base}/floor_vae/frechet"),
                }
            )
    return rows
