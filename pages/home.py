"""Home: the state of the studio at a glance, and the demo a new user runs first."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd
import streamlit as st

from app import navigation
from app.widgets import loss_chart, status_label, user_errors
from core.access import require
from core.datasets.demo import ensure_demo_dataset
from core.datasets.versions import list_datasets, list_versions
from core.tracking.runs import recent_runs
from core.training.config import build_config
from core.training.recipes import DEMO, QUICK_DEMO
from jobs import control
from jobs.progress import job_progress
from jobs.records import ACTIVE, list_jobs

if TYPE_CHECKING:
    from core.db import Job


def newest_loss(rows: list[dict]) -> float | None:
    """The training loss of the newest metrics row that has one (the VAE's while it trains first)."""
    return next((row.get("loss", row.get("vae_loss")) for row in reversed(rows) if "loss" in row or "vae_loss" in row), None)


def start_demo(quick: bool) -> None:
    require("launch")  # before the dataset is prepared: a viewer hears why at once
    bar = st.progress(0.0, text="Preparing the demo dataset (1,797 handwritten digits)…")
    ref = ensure_demo_dataset(progress=lambda f, text: bar.progress(f, text=text))
    bar.progress(1.0, text=f"Dataset {ref} ready; starting training…")
    config = build_config({**(QUICK_DEMO if quick else DEMO), "dataset": ref})
    job = control.launch(config, name="demo-quick" if quick else "demo")
    st.session_state["demo_job"] = job.id


@st.fragment(run_every=2.0)
def demo_progress(job_id: str) -> None:
    from jobs.records import get_job

    job = get_job(job_id)
    progress = job_progress(job)
    st.markdown(f"**Demo job `{job.id}`** — {status_label(job.status)} · stage `{progress.stage}` step {progress.step}/{progress.total}")
    st.progress(progress.fraction, text=f"{progress.fraction:.0%} of all steps")
    left, right = st.columns([3, 2])
    with left:
        loss_chart(progress.metrics, ("loss", "val_loss") if progress.stage == "unet" else ("vae_loss", "vae_val_mse"))
    with right:
        if progress.latest_sample:
            st.image(str(progress.latest_sample), caption=f"Samples: {progress.latest_sample.stem}", width="stretch")
        else:
            st.caption("The first sample grid appears once the UNet stage has run a while.")
    if job.status not in ACTIVE:
        # The counters and tables outside this fragment still show the job running: redraw the page.
        st.session_state.pop("demo_job", None)
        st.session_state["demo_finished"] = job.id
        st.rerun()


def demo_outcome(job: Job) -> None:
    """How the demo ended, and where a new user goes next."""
    if job.status != "succeeded":
        st.error(job.failure_reason or f"The demo {job.status}.", icon="⚠️")
        return
    st.success(f"The demo finished: job `{job.id}`, MLflow run `{job.mlflow_run_id}`. Next:", icon="🎉")
    run = {"run": job.mlflow_run_id} if job.mlflow_run_id else None
    c1, c2, c3, c4 = st.columns(4)
    c1.page_link(navigation.RUNS.page(), label="Open the run", icon="📈", query_params=run)
    c2.page_link(navigation.PLAYGROUND.page(), label="Try it in the Playground", icon="🧪", query_params={"model": job.mlflow_run_id} if job.mlflow_run_id else None)
    c3.page_link(navigation.RUNS.page(), label="Compare with another run", icon="🆚")
    c4.page_link(navigation.DATASETS.page(), label="Import your own data", icon="🗂️", query_params={"new": "1"})


def render() -> None:
    st.title("🎨 Diffusion Studio")
    st.caption("Curate image–caption data, train text-to-image diffusion models, compare runs, export to ONNX.")

    with user_errors():  # apart: a cloud job AWS cannot be asked about must not hide the rest
        control.refresh()
    with user_errors():
        datasets = list_datasets()
        jobs = list_jobs(limit=200)
        runs = recent_runs(limit=10)

    active = [j for j in jobs if j.status in ACTIVE]
    c1, c2, c3 = st.columns(3)
    c1.metric("Datasets", len(datasets))
    c2.metric("Runs", len(runs))
    c3.metric("Jobs running or queued", len(active))

    st.subheader("Start here")
    demos = [j for j in jobs if (j.config.get("run_name") or "").startswith("demo")]
    demo_job = st.session_state.get("demo_job") or next((j.id for j in demos if j.status in ACTIVE), None)
    if demo_job:
        demo_progress(demo_job)
    else:
        # The newest demo's outcome: next steps once it succeeded; a failure only when it was just seen.
        latest = demos[0] if demos else None
        if latest and (latest.status == "succeeded" or latest.id == st.session_state.get("demo_finished")):
            demo_outcome(latest)
        st.write(
            "Train a small text-to-image model on 1,797 real handwritten digits, right here on the CPU. "
            "Watch the loss fall and the sample grid turn into the ten digits."
        )
        b1, b2, _ = st.columns([1, 1, 3])
        with user_errors():
            if b1.button("▶️ Run the demo", type="primary", help="About 10 minutes on one CPU core: clean digits."):
                start_demo(quick=False)
                st.rerun()
            if b2.button("⚡ Quick demo", help="Under 5 minutes: the digit each prompt names, a little rougher."):
                start_demo(quick=True)
                st.rerun()

    st.subheader("Recent runs")
    if runs:
        # A running job's newest loss is in its metrics.jsonl before MLflow has it (the sink sends in batches).
        live = {j.mlflow_run_id: newest_loss(job_progress(j).metrics) for j in active if j.mlflow_run_id}
        frame = pd.DataFrame(
            [
                {
                    "run": r.name,
                    "status": status_label(r.status),
                    "dataset": r.dataset,
                    "last loss": r.last_loss if r.last_loss is not None else live.get(r.run_id),
                    "val loss": r.val_loss,
                    "started": r.started,
                }
                for r in runs
            ]
        )
        st.dataframe(frame, hide_index=True, width="stretch")
    else:
        st.info("No runs yet. Run the demo above, or start a training on the Train page.", icon="💡")

    st.subheader("Datasets")
    if datasets:
        rows = []
        for d in datasets:
            versions = list_versions(d.name)
            rows.append({"dataset": d.name, "newest version": versions[0].version if versions else "-", "images": versions[0].n_items if versions else 0, "versions": len(versions)})
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    else:
        st.info("No datasets yet. The demo creates one; the Datasets page imports your own.", icon="💡")
