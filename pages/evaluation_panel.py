"""Evaluation in the Runs page: the metrics table of a comparison and a run's Evaluate action.

pages/runs.py calls `metrics_table(run_ids, names)` in a comparison and `evaluate_section(run_id,
dataset)` in a run's detail; everything else lives here (and in core.evaluation / jobs.evaluate).
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app.widgets import HIGHLIGHT_BEST, user_errors
from core.evaluation.features import DESCRIPTIONS, FEATURES

HELP = (
    "Prompt accuracy is the share of generated images the dataset's evaluator assigns to the prompted class; "
    "its ceiling is the evaluator's accuracy on real held-out images. Fréchet distance and KID: lower is better, "
    "down to the real-vs-real floor (and the VAE floor for latent models). Coverage: the share of real images "
    "with a generated image nearby; class-mean images score high accuracy but almost no coverage."
)


def metrics_table(run_ids: list[str], names: dict[str, str] | None = None) -> None:
    """Evaluation metrics across runs, one row per run and guidance, the best value per column highlighted."""
    from core.evaluation.records import COLUMNS, comparison_rows

    st.markdown("#### 🧪 Evaluation")
    with user_errors():
        rows = comparison_rows(run_ids, names)
        if not rows:
            st.caption("No evaluations yet: open a run and press 🧪 Evaluate (or `studio eval RUN --dataset NAME@VERSION`).")
            return
        frame = pd.DataFrame(rows)
        styler = frame.style.format(precision=4, na_rep="-")
        for _, label, better in COLUMNS:
            if better and frame[label].notna().any():
                styler = styler.highlight_max(subset=[label], props=HIGHLIGHT_BEST) if better == "max" else styler.highlight_min(subset=[label], props=HIGHLIGHT_BEST)
        st.dataframe(styler, hide_index=True, width="stretch")
        st.caption(HELP)


def evaluate_section(run_id: str, dataset: str | None, has_model: bool = True) -> None:
    """Start an evaluation of this run and follow its evaluations (progress, results, grids)."""
    from jobs import control
    from jobs import evaluate as jobs

    with user_errors():
        st.markdown("#### 🧪 Evaluation")
        if not has_model:
            st.caption("This run has no trained model yet; evaluate it when training has finished.")
            return
        with st.form(f"eval-{run_id}"):
            c = st.columns([3, 1, 1, 1])
            ref = c[0].text_input("Dataset version", dataset or "", help="name@version; its val split is the reference")
            n = c[1].number_input("Images per guidance", 10, 100_000, 200, step=50)
            features = c[2].selectbox("Features", FEATURES, help="  \n".join(f"**{k}**: {v}" for k, v in DESCRIPTIONS.items()))
            guidance = c[3].text_input("Guidance", "1,2,4")
            if st.form_submit_button("🧪 Evaluate", type="primary"):
                from core.evaluation.request import EvalRequest

                scales = [float(g) for g in guidance.split(",") if g.strip()]
                job = control.evaluate_run(EvalRequest(model=run_id, dataset=ref, n=int(n), features=features, guidance=scales))
                st.success(f"Evaluation job {job.id} started; it logs its results to this run.")
        for job in jobs.evaluations(run_id)[:5]:
            st.markdown(f"**{job.status}** · job `{job.id}` · {job.dataset} · {job.config.get('features')} · N={job.config.get('n')}")
            if job.status in ("starting", "running", "stopping"):
                fraction, text = jobs.progress(job.id)
                st.progress(min(max(fraction, 0.0), 1.0), text=text)
            elif job.status == "failed":
                st.error(job.failure_reason or "The evaluation failed.", icon="⚠️")
            result = jobs.result(job.id) if job.status == "succeeded" else None
            if result:
                st.caption(
                    f"Evaluator ceiling {result.evaluator_accuracy:.3f} · Fréchet floors: real-vs-real "
                    f"{result.floor_real.frechet:.2f}, VAE {result.floor_vae.frechet:.2f} ({result.floor_source})"
                )
                st.dataframe(pd.DataFrame([{"guidance": r.guidance, "prompt accuracy": r.prompt_accuracy, **r.metrics.model_dump(), "images/s": r.images_per_second} for r in result.results]), hide_index=True, width="stretch")
                cols = st.columns(len(result.grids))
                for col, (g, path) in zip(cols, result.grids.items(), strict=True):
                    col.image(path, caption=f"guidance {g}")
