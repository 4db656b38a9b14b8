"""Runs: browse MLflow runs, open one, and compare 2–4 side by side (curves, parameters, samples).

The view lives in the URL (`?run=ID`, `?compare=ID,ID`), so a comparison can be shared.
"""

from __future__ import annotations

from datetime import date
from html import escape
from pathlib import Path
from urllib.parse import quote

import altair as alt
import pandas as pd
import streamlit as st

from app import navigation
from app.widgets import HIGHLIGHT_CHANGED, file_download, status_label, user_errors, user_log
from core.errors import StudioError
from core.export.exporter import export_model
from core.tracking import artifacts, compare, edits, registry, runs, samples
from core.training import clone
from core.training.config import PRESET_NAMES
from pages import evaluation_panel

MAX_COMPARE = 4
SORTS = ("start_time", "run_name", *compare.CURVES)
TABLE_STYLE = "<style>.runs-table th, .runs-table td {white-space: nowrap; padding: 0.3rem 0.6rem; font-size: 0.875rem}</style>"


def show(**params: str) -> None:
    """Switch the view by rewriting the query parameters (which also makes it shareable)."""
    st.query_params.clear()
    st.query_params.update(params)
    st.rerun()


def metric_chart(frame: pd.DataFrame, key: str, x: str, names: dict[str, str]) -> None:
    data = frame[frame.key == key].assign(run=lambda f: f.run.map(names))
    if data.empty:
        return
    x_title = {"step": "step", "wall_s": "seconds since start"}[x]
    chart = (
        alt.Chart(data, title=key, height=230)
        .mark_line(point=len(data) < 60)
        .encode(
            x=alt.X(f"{x}:Q", title=x_title),
            y=alt.Y("value:Q", title=key, scale=alt.Scale(zero=False)),
            color=alt.Color("run:N", title="run", scale=alt.Scale(scheme="category10")),
            tooltip=["run", "step", alt.Tooltip("value:Q", format=".4g"), alt.Tooltip("wall_s:Q", format=".1f")],
        )
    )
    st.altair_chart(chart, width="stretch")


def curves(run_ids: list[str], names: dict[str, str], key_prefix: str, with_alignment: bool) -> None:
    keys = compare.metric_keys(run_ids)
    if not keys:
        st.info("No metrics logged yet; curves appear as soon as the training logs its first steps.", icon="💡")
        return
    c1, c2, c3 = st.columns([3, 1, 1])
    default = [k for k in ("loss", "val_loss", "lr", "samples_per_s") if k in keys] or keys[:2]
    chosen = c1.multiselect("Metrics", keys, default=default, key=f"{key_prefix}-metrics")
    weight = c2.slider("Smoothing", 0.0, 0.99, 0.6 if len(run_ids) > 1 else 0.0, 0.01, key=f"{key_prefix}-smooth",
                       help="Exponential moving average, as in TensorBoard; 0 shows the raw values.")
    x = "step"
    if with_alignment:
        x = c3.radio("Align by", ["step", "wall_s"], format_func={"step": "step", "wall_s": "wall time"}.get, key=f"{key_prefix}-align")
    frame = compare.smooth_frame(compare.metric_frame(run_ids, chosen), weight)
    columns = st.columns(2)
    for i, key in enumerate(chosen):
        with columns[i % 2]:
            metric_chart(frame, key, x, names)


# ---- list -------------------------------------------------------------------------------------------


def short_ref(ref: str) -> str:
    """`name@version` with the version cut to 8 characters, as git shows commits."""
    name, at, version = ref.partition("@")
    return f"{name}@{version[:8]}" if at else ref


def estimate_text(row: runs.RunRow) -> str:
    """The launch's estimate in minutes, with its error against the real duration once finished."""
    if row.estimated_s is None:
        return "–"
    error = row.estimate_error_pct
    return f"{row.estimated_s / 60:.1f}" + (f" ({error:+.0f}%)" if error is not None else "")


def run_table(rows: list[runs.RunRow]) -> str:
    """One page of runs as a plain HTML table, each name linking to its detail.

    Streamlit paints this with its core bundle; st.dataframe first loads ~1.2 MB of grid and Arrow
    code in the browser, which was most of this page's first paint (bench/runs_page.py).
    """

    def number(value: float | None, spec: str) -> str:
        return "–" if value is None else format(value, spec)

    frame = pd.DataFrame(
        [
            {
                # The run id is the link's hover text: the table fits the page at 1400 px, no sideways scroll.
                "run": f'<a href="?run={escape(quote(r.run_id, safe=""))}" title="run {escape(r.run_id)}" target="_self">{escape(r.name)}</a>',
                "status": status_label(r.status),
                # Short forms, full text on hover.
                "dataset": f'<span title="{escape(r.dataset)}">{escape(short_ref(r.dataset))}</span>',
                "model": escape(f"{r.preset} · {r.stage}"),
                "steps": number(r.steps, "d"),
                "loss": number(r.last_loss, ".4f"),
                "val loss": number(r.val_loss, ".4f"),
                "minutes": number(r.duration_s / 60 if r.duration_s is not None else None, ".1f"),
                "estimated": estimate_text(r),
                "started": f'<span title="{r.started:%Y-%m-%d %H:%M:%S}">{r.started:%b %d %H:%M}</span>',
                "backend": escape(r.backend),
            }
            for r in rows
        ]
    )
    table = frame.to_html(index=False, escape=False, border=0, justify="left", classes="runs-table")
    return f'<div style="overflow-x: auto">{TABLE_STYLE}{table}</div>'


def filters() -> runs.RunQuery:
    c1, c2, c3, c4 = st.columns(4)
    status = c1.multiselect("Status", runs.STATUSES, key="runs-status")
    dataset = c2.text_input("Dataset", key="runs-dataset", placeholder="digits or digits@version")
    preset = c3.selectbox("Preset", ["any", *PRESET_NAMES], key="runs-preset")
    tag = c4.text_input("Tag", key="runs-tag", placeholder="key=value or key")
    c5, c6, c7, c8 = st.columns(4)
    search = c5.text_input("Search names", key="runs-search")
    days = c6.date_input("Started between", value=(), key="runs-dates", max_value=date.today())
    sort = c7.selectbox("Sort by", SORTS, key="runs-sort", format_func=lambda s: {"start_time": "start time", "run_name": "name"}.get(s, f"metric {s}"))
    order = c8.radio("Order", ["descending", "ascending"], horizontal=True, key="runs-order")
    since, until = (list(days) + [None, None])[:2] if isinstance(days, (tuple, list)) else (days, days)
    return runs.RunQuery(
        status=status,
        dataset=dataset or None,
        preset=None if preset == "any" else preset,
        tag=tag or None,
        since=since,
        until=until,
        search=search or None,
        sort=sort,
        descending=order == "descending",
    )


def render_list() -> None:
    query = filters()
    # Paging: MLflow hands out a token per page; keep the tokens that led here, per query.
    signature = query.model_dump_json()
    if st.session_state.get("runs-signature") != signature:
        st.session_state["runs-signature"] = signature
        st.session_state["runs-tokens"] = [None]
    tokens: list[str | None] = st.session_state["runs-tokens"]
    page = runs.list_runs(query, tokens[-1])
    if not page.rows:
        if len(tokens) == 1 and signature == runs.RunQuery().model_dump_json():
            st.info("No runs yet. Train a model on the Train page, or run the demo from Home; its run appears here at once.", icon="💡")
        else:
            st.info("No runs match these filters.", icon="🔎")
        return
    st.markdown(run_table(page.rows), unsafe_allow_html=True)
    p1, p2, p3 = st.columns([1, 1, 4])
    if p1.button("◀ Previous", disabled=len(tokens) == 1):
        tokens.pop()
        st.rerun()
    if p2.button("Next ▶", disabled=page.next_token is None):
        tokens.append(page.next_token)
        st.rerun()
    p3.caption(f"Page {len(tokens)} · {len(page.rows)} runs shown")

    names = {r.run_id: f"{r.name} ({r.run_id[:8]})" for r in page.rows}
    chosen = st.multiselect("Select one run to open, or 2–4 to compare", list(names), format_func=names.get, key="runs-chosen",
                            max_selections=MAX_COMPARE)
    b1, b2, _ = st.columns([1, 1, 4])
    if b1.button("🔍 Open", disabled=len(chosen) != 1, type="primary" if len(chosen) == 1 else "secondary"):
        show(run=chosen[0])
    if b2.button("⚖️ Compare", disabled=not 2 <= len(chosen) <= MAX_COMPARE, type="primary" if len(chosen) > 1 else "secondary"):
        show(compare=",".join(chosen))


# ---- detail -----------------------------------------------------------------------------------------


def samples_through_training(run_id: str) -> None:
    index = samples.image_index(run_id)
    if not index:
        st.info("No sample grids yet; the training renders one every `sample_every` UNet steps.", icon="💡")
        return
    keys = list(index)
    prompts = samples.validation_prompts(run_id)
    label = lambda k: "all prompts" if k == "samples" else (prompts[int(k[7:])] if k.startswith("prompt_") and int(k[7:]) < len(prompts) else k)  # noqa: E731
    key = st.selectbox("Samples", keys, index=keys.index("samples") if "samples" in keys else 0, format_func=label, key="detail-key")
    steps = list(index[key])
    step = st.select_slider("Step", steps, value=steps[-1], key="detail-step") if len(steps) > 1 else steps[0]
    st.image(str(artifacts.artifact_file(run_id, index[key][step])), caption=f"{label(key)} · step {step}", width=min(900, 96 * 10))


def notes_and_tags(detail: runs.RunDetail) -> None:
    run_id = detail.row.run_id
    note = st.text_area("Notes", detail.note, key=f"note-{run_id}", placeholder="What did you learn from this run?")
    if st.button("💾 Save notes", disabled=note == detail.note):
        edits.set_note(run_id, note)
        st.toast("Notes saved.")
        st.rerun()
    st.dataframe(pd.DataFrame({"tag": list(detail.tags), "value": list(detail.tags.values())}), hide_index=True, width="stretch")
    with st.form(f"tag-{run_id}", clear_on_submit=True):
        c1, c2 = st.columns(2)
        key = c1.text_input("Tag name")
        value = c2.text_input("Value")
        if st.form_submit_button("🏷️ Set tag") and key:
            edits.set_tag(run_id, key, value)
            st.rerun()
    removable = [k for k in detail.tags if k not in ("dataset", "preset", "stage", "job_id", "backend")]
    if removable:
        c1, c2 = st.columns([3, 1])
        gone = c1.selectbox("Remove a tag", removable, key=f"untag-{run_id}")
        if c2.button("Remove"):
            edits.delete_tag(run_id, gone)
            st.rerun()


def actions(detail: runs.RunDetail) -> None:
    run_id = detail.row.run_id
    has_model = "model/" in detail.artifacts
    no_model = None if has_model else "The run has no final model yet."
    st.markdown("**Promote to the Model Registry**")
    c1, c2, c3 = st.columns([2, 1, 1])
    default_name = (detail.row.dataset.split("@")[0] or detail.row.preset or "model") + "-model"
    name = c1.text_input("Registered model", default_name, key="promote-name")
    alias = c2.text_input("Alias", "champion", key="promote-alias")
    if c3.button("🏆 Promote", disabled=not has_model, help=no_model):
        version = registry.promote(run_id, name, alias)
        st.success(f"Registered {name} version {version} with alias '{alias}'.")

    st.markdown("**Use the model**")
    c1, c2 = st.columns(2)
    if c1.button("🧪 Open in Playground", disabled=not has_model, help=no_model):
        st.switch_page(navigation.PLAYGROUND.page(), query_params={"model": run_id})  # the Playground preselects `?model=`
    if c2.button("📦 Export to ONNX", disabled=not has_model, help=no_model or "Export, check parity with PyTorch and register it."):
        bar = c2.progress(0.0, text="Starting the export…")
        record = export_model(run_id, progress=lambda f, text: bar.progress(min(f, 1.0), text=text))
        st.session_state["export_selected"] = record.id  # the Export page opens on it
        st.success(f"Exported to ONNX and registered as {record.registered_model} version {record.registered_version}; "
                   "the Export page shows its parity report, and the Playground can run it with ONNX Runtime.", icon="✅")

    st.markdown("**Reuse**")
    c1, c2 = st.columns(2)
    if c1.button("🧬 Clone into the Train form"):
        st.session_state["train_clone"] = clone.run_config(run_id)  # the Train page fills its form from it
        st.switch_page(navigation.TRAIN.page())
    if has_model:
        if c2.button("📦 Prepare the model as a zip"):
            with st.spinner("Zipping the model…"):
                st.session_state[f"zip-{run_id}"] = str(artifacts.model_zip(run_id))
        if st.session_state.get(f"zip-{run_id}"):
            file_download("⬇️ Download model.zip", Path(st.session_state[f"zip-{run_id}"]), f"{detail.row.name}-model.zip", "application/zip", where=c2)

    st.markdown("**Delete**")
    sure = st.checkbox(f"Yes, delete the run {detail.row.name}", key=f"sure-{run_id}")
    if st.button("🗑️ Delete run", disabled=not sure):
        edits.delete_run(run_id)
        show()


def job_log(detail: runs.RunDetail) -> None:
    job_id = detail.tags.get("job_id")
    if not job_id:
        st.caption("This run was not started by a studio job, so there is no job log.")
        return
    from jobs import control

    try:
        st.code(user_log(control.logs(job_id, 400), 200) or "(the log is empty)", language="log")
    except StudioError:
        st.caption(f"The log of job {job_id} is not on this machine.")


def render_detail(run_id: str) -> None:
    detail = runs.run_detail(run_id)
    row = detail.row
    if st.button("◀ All runs"):
        show()
    st.subheader(f"{row.name}  ·  {status_label(row.status)}")
    st.caption(f"Run `{row.run_id}` · dataset `{row.dataset or '-'}` → run → registered versions: "
               + (", ".join(f"{v.name} v{v.version}" for v in registry.registered_versions(run_id)) or "none"))
    m = st.columns(6)
    m[0].metric("Preset", row.preset or "-")
    m[1].metric("Planned steps", row.steps or "-")
    m[2].metric("Loss", f"{row.last_loss:.4f}" if row.last_loss is not None else "-")
    m[3].metric("Val loss", f"{row.val_loss:.4f}" if row.val_loss is not None else "-")
    m[4].metric("Duration", f"{row.duration_s / 60:.1f} min" if row.duration_s is not None else "-")
    error = row.estimate_error_pct
    m[5].metric("Estimated", f"{row.estimated_s / 60:.1f} min" if row.estimated_s is not None else "-",
                f"{error:+.0f}% vs actual" if error is not None else None, delta_color="off",
                help="Measured before launch (a few real steps); the error is (estimated − actual) / actual.")
    tabs = st.tabs(["📈 Charts", "🖼️ Samples", "⚙️ Parameters", "📁 Artifacts", "📜 Log", "📝 Notes & tags", "🚀 Actions"])
    names = {run_id: row.name}
    with tabs[0]:
        curves([run_id], names, "detail", with_alignment=False)
    with tabs[1]:
        samples_through_training(run_id)
    with tabs[2]:
        st.dataframe(pd.DataFrame({"parameter": list(detail.params), "value": list(detail.params.values())}), hide_index=True, width="stretch")
    with tabs[3]:
        st.write(", ".join(f"`{a}`" for a in detail.artifacts) or "No artifacts yet.")
        if detail.model_files:
            st.dataframe(pd.DataFrame(detail.model_files, columns=["model file", "bytes"]), hide_index=True, width="stretch")
    with tabs[4]:
        job_log(detail)
    with tabs[5]:
        notes_and_tags(detail)
    with tabs[6]:
        actions(detail)
        evaluation_panel.evaluate_section(run_id, row.dataset or None, "model/" in detail.artifacts)


# ---- compare ----------------------------------------------------------------------------------------


def sample_comparison(run_ids: list[str], names: dict[str, str]) -> None:
    indexes = {rid: samples.image_index(rid) for rid in run_ids}
    steps = sorted({s for index in indexes.values() for s in samples.image_steps(index)})
    if not steps:
        st.info("None of these runs has logged sample images yet.", icon="💡")
        return
    step = st.select_slider("Step (each run shows its nearest logged step)", steps, value=steps[-1], key="compare-step") if len(steps) > 1 else steps[0]
    grid = samples.sample_grid(run_ids, step, indexes)
    header = st.columns([2] + [3] * len(run_ids))
    header[0].markdown("**prompt**")
    for col, rid in zip(header[1:], run_ids, strict=True):
        col.markdown(f"**{names[rid]}**")
    for prompt, cells in grid.items():
        columns = st.columns([2] + [3] * len(run_ids))
        columns[0].write(prompt)
        for col, cell in zip(columns[1:], cells, strict=True):
            if cell.path is None:
                col.caption("not logged")
            else:
                col.image(str(cell.path), caption=f"step {cell.step}", width="stretch")


def same_seed(run_ids: list[str], names: dict[str, str]) -> None:
    from core.inference.models import generate_side_by_side
    from core.inference.torch_backend import GenerateRequest

    with st.form("same-seed"):
        c1, c2, c3 = st.columns([3, 1, 1])
        prompt = c1.text_input("Prompt", "a handwritten digit seven")
        seed = c2.number_input("Seed", 0, 2**31 - 1, 0)
        steps = c3.number_input("Steps", 1, 200, 25)
        go = st.form_submit_button("🎲 Generate with the same seed")
    if go:
        request = GenerateRequest(prompt=prompt, seed=int(seed), steps=int(steps))
        with st.spinner("Generating with each run's final model…"):
            images = generate_side_by_side(run_ids, request)
        for col, rid in zip(st.columns(len(run_ids)), run_ids, strict=True):
            col.image(images[rid][0], caption=names[rid], width="stretch")


STRENGTHS = [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5]


def lora_sweep(run_ids: list[str], names: dict[str, str]) -> None:
    """A LoRA run's adapter at several strengths (rows) × its checkpoints (columns), one seed."""
    from core.inference.torch_backend import GenerateRequest
    from core.training.lora_sweep import sweep, sweep_columns
    from jobs.control import checkpoints_of

    details = {rid: runs.run_detail(rid) for rid in run_ids}
    lora_runs = [rid for rid in run_ids if details[rid].params.get("unet.lora_rank") not in (None, "", "None")]
    if not lora_runs:
        st.caption("None of these runs trained a LoRA.")
        return
    with st.form("lora-sweep"):
        c1, c2, c3, c4 = st.columns([2, 3, 1, 1])
        rid = c1.selectbox("Run", lora_runs, format_func=names.get)
        prompt = c2.text_input("Prompt", details[lora_runs[0]].params.get("subject.instance_prompt") or "")
        seed = c3.number_input("Seed", 0, 2**31 - 1, 0)
        steps = c4.number_input("Steps", 1, 200, 25)
        strengths = st.multiselect("Strengths", STRENGTHS, default=[0.0, 0.5, 1.0])
        go = st.form_submit_button("🎚️ Sweep strength × checkpoint")
    if not go:
        return
    with user_errors():
        base = details[rid].params.get("base_model") or ""
        if not base or not Path(base).is_dir():
            raise StudioError(f"The base model this run was fine-tuned from ({base or 'not recorded'}) is not on this machine, so its LoRA has nothing to apply to.")
        if not prompt.strip():
            raise StudioError("Write a prompt to sweep.")
        with st.spinner("Generating every strength at every checkpoint…"):
            columns = sweep_columns(rid, checkpoints_of(rid), has_final="model/" in details[rid].artifacts)
            grid = sweep(base, columns, sorted(strengths), GenerateRequest(prompt=prompt, seed=int(seed), steps=int(steps)))
        header = st.columns([1] + [3] * len(columns))
        header[0].markdown("**strength**")
        for col, column in zip(header[1:], columns, strict=True):
            col.markdown(f"**{column.label}**")
        for strength, images in grid.items():
            row = st.columns([1] + [3] * len(columns))
            row[0].write(f"{strength:g}")
            for col, image in zip(row[1:], images, strict=True):
                col.image(image, width="stretch")


def render_compare(run_ids: list[str]) -> None:
    if not 2 <= len(run_ids) <= MAX_COMPARE:
        raise StudioError(f"Compare 2 to {MAX_COMPARE} runs; this link names {len(run_ids)}.")
    rows = {rid: runs.run_detail(rid).row for rid in run_ids}
    names = {rid: f"{r.name} ({rid[:6]})" for rid, r in rows.items()}
    if st.button("◀ All runs"):
        show()
    st.subheader("Comparing " + " · ".join(names.values()))
    st.caption("Share this comparison: copy the page address (it ends in `?compare=" + ",".join(run_ids) + "`).")

    st.markdown("#### Curves")
    curves(run_ids, names, "compare", with_alignment=True)

    st.markdown("#### Parameters that differ")
    diff = compare.param_diff(run_ids)
    if diff.differing:
        table = pd.DataFrame(diff.differing, index=[names[r] for r in run_ids]).T
        # Highlight the values that differ from the first run's.
        st.dataframe(table.style.apply(lambda row: ["" if v == row.iloc[0] else HIGHLIGHT_CHANGED for v in row], axis=1), width="stretch")
    else:
        st.caption("All parameters are the same.")
    with st.expander(f"{len(diff.identical)} identical parameters"):
        st.dataframe(pd.DataFrame({"parameter": list(diff.identical), "value": list(diff.identical.values())}), hide_index=True, width="stretch")

    st.markdown("#### Final metrics")
    final = compare.final_metrics(run_ids)
    final.columns = list(names.values())
    st.dataframe(final, width="stretch")

    evaluation_panel.metrics_table(run_ids, names)

    st.markdown("#### Samples by prompt")
    sample_comparison(run_ids, names)

    st.markdown("#### Generate with the same seed")
    same_seed(run_ids, names)

    st.markdown("#### LoRA: strength × checkpoint")
    lora_sweep(run_ids, names)


def render() -> None:
    st.title("📈 Runs")
    with user_errors():
        if "compare" in st.query_params:
            ids = [runs.resolve_run(r) for r in st.query_params["compare"].split(",") if r.strip()]
            render_compare(ids)
        elif "run" in st.query_params:
            render_detail(runs.resolve_run(st.query_params["run"]))
        else:
            st.caption("Every training is an MLflow run. Filter, open one, or pick 2–4 to compare their curves, settings and samples.")
            render_list()
