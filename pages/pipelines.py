"""Pipelines: start one from a saved config, watch its steps live, open the best run and its export."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app import navigation
from app.widgets import pick, status_label, user_errors
from jobs.pipeline.config import parse_pipeline_config
from jobs.pipeline.runner import get_pipeline, launch, list_pipelines, log_tail, pipeline_steps, save_config, saved_configs
from jobs.records import get_job

LIVE_SECONDS = 2.0
STEP_ICONS = {"pending": "⏳", "running": "🏃", "succeeded": "✅", "failed": "❌"}


def start_section() -> None:
    configs = saved_configs()
    if not configs:
        st.info("No saved pipeline configs yet: paste one below and save it.", icon="💡")
    choice = st.selectbox("Saved config", list(configs), help="Configs saved here, and the examples that ship with the studio.")
    text = st.text_area("Config (YAML)", value=configs[choice].read_text() if choice else "", height=320, key=f"pipeline-yaml-{choice}")
    save, start = st.columns(2)
    if save.button("💾 Save config", width="stretch"):
        path = save_config(text)
        st.success(f"Saved as {path.name}.", icon="✅")
    if start.button("▶️ Start pipeline", type="primary", width="stretch"):
        config = parse_pipeline_config(text)
        pipeline = launch(config, configs[choice] if choice and configs[choice].read_text() == text else save_config(text))
        st.session_state["pipeline_selected"] = pipeline.id
        st.success(f"Pipeline {pipeline.name} ({pipeline.id}) started; re-running a name resumes it at the step that failed.", icon="🚀")


def steps_table(pipeline_id: str) -> None:
    rows = [
        {
            "step": s.name,
            "status": f"{STEP_ICONS.get(s.status, '•')} {s.status}",
            "attempts": s.attempts,
            "started": s.started_at,
            "finished": s.finished_at,
            "reason": s.failure_reason or "",
        }
        for s in pipeline_steps(pipeline_id)
    ]
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", column_config={"started": st.column_config.DatetimeColumn(format="HH:mm:ss"), "finished": st.column_config.DatetimeColumn(format="HH:mm:ss")})


def results(pipeline_id: str) -> None:
    outputs = {s.name: s.outputs for s in pipeline_steps(pipeline_id)}
    jobs = outputs["train"].get("jobs", [])
    if jobs:
        st.markdown("**Trainings**")
        ranking = {r["run_id"]: r for r in outputs["select"].get("ranking", [])}
        metric = outputs["select"].get("metric", "")
        st.dataframe(
            pd.DataFrame(
                [
                    {"job": j["job_id"], "status": status_label(get_job(j["job_id"]).status), "sweep values": ", ".join(f"{k}={v}" for k, v in j["params"].items()) or "base", metric or "metric": ranking.get(j["run_id"], {}).get(metric), "run": j["run_id"]}
                    for j in jobs
                ]
            ),
            hide_index=True,
            width="stretch",
        )
    best = outputs["select"].get("run_id")
    export = outputs["export"]
    c1, c2 = st.columns(2)
    if best:
        c1.page_link(navigation.RUNS.page(), label=f"📈 Open the best run ({best[:8]}…)", query_params={"run": best})
    if export.get("export_id"):
        if c2.button(f"📦 Open export {export['registered_model']} v{export['registered_version']}"):
            st.session_state["export_selected"] = export["export_id"]
            st.switch_page(navigation.EXPORT.page())
    if outputs["register"].get("uri"):
        st.success(f"Registered `{outputs['register']['uri']}` → version {outputs['register']['version']}.", icon="🏷️")


def pipeline_view(pipeline_id: str) -> None:
    pipeline = get_pipeline(pipeline_id)
    st.markdown(f"**{pipeline.name}** · `{pipeline.id}` · {status_label(pipeline.status)} · started {pipeline.created_at:%Y-%m-%d %H:%M}")
    if pipeline.failure_reason:
        st.error(pipeline.failure_reason, icon="❌")
    steps_table(pipeline_id)
    results(pipeline_id)
    tail = log_tail(pipeline_id)
    if tail:
        with st.expander("Log", expanded=pipeline.status == "running"):
            st.code(tail, language=None)


@st.fragment(run_every=LIVE_SECONDS)
def live_view(pipeline_id: str) -> None:
    with user_errors():
        pipeline_view(pipeline_id)


def render() -> None:
    st.title("🔁 Pipelines")
    st.caption("Dataset → training (a small sweep) → best run → ONNX export with parity check → registry alias, as one pipeline.")
    with st.expander("▶️ Start a pipeline", expanded=not list_pipelines(limit=1)):
        with user_errors():
            start_section()

    st.subheader("Pipelines")
    with user_errors():
        pipelines = list_pipelines()
        if not pipelines:
            st.info("No pipelines yet. Start the demo above, or run `studio pipeline run --config examples/pipeline-demo.yaml`.", icon="💡")
            return
        labels = {f"{p.name} · {p.id} · {p.status} · {p.created_at:%Y-%m-%d %H:%M}": p.id for p in pipelines}
        pipeline_id = pick("Pipeline", labels, "pipeline_selected")
    if get_pipeline(pipeline_id).status == "running":
        live_view(pipeline_id)
    else:
        with user_errors():
            pipeline_view(pipeline_id)
