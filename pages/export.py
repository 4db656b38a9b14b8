"""Export: turn a run's model into ONNX, read its parity report, download it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from app.widgets import file_download, pick, user_errors
from core.export.exporter import export_files, export_model, export_zip
from core.export_records import get_export, list_exports
from core.inference.models import list_models
from core.inference.onnx_backend import cuda_works
from core.modeling.exchange import files_for_tools

FOLDER = "📁 A model folder on this machine…"


def export_form() -> str | None:
    runs = [m for m in list_models() if m.kind == "run"]
    labels = {m.label: m.id for m in runs}
    choice = st.selectbox("Model to export", [*labels, FOLDER], help="A finished run with a trained model, or any diffusers-layout folder.")
    ref = st.text_input("Model folder", placeholder="/path/to/model (with model_index.json)") if choice == FOLDER else labels.get(choice)
    gpu = cuda_works()
    fp16 = st.checkbox(
        "fp16 graphs for the CUDA execution provider",
        disabled=not gpu,
        help="Checked for parity on the GPU like the rest." if gpu else "ONNX Runtime finds no GPU here, so fp16 cannot be checked.",
    )
    if st.button("📦 Export to ONNX", type="primary", disabled=not ref):
        bar = st.progress(0.0, text="Starting the export…")
        record = export_model(ref, fp16=fp16, progress=lambda f, text: bar.progress(min(f, 1.0), text=text))
        st.session_state["export_selected"] = record.id
        st.success(f"Exported and registered as **{record.registered_model}** version {record.registered_version}.", icon="✅")
    return ref


def model_files(ref: str) -> None:
    """The model as files other tools load: one Stable Diffusion checkpoint and, for a LoRA run, the adapter alone."""
    st.markdown("**Files for other tools**: AUTOMATIC1111, ComfyUI, diffusers' `from_single_file` and `load_lora_weights`.")
    key = f"files_for_tools:{ref}"
    if st.button("🧳 Prepare the files", help="Writes the single-file checkpoint once; LoRA runs add their adapter in two formats."):
        with st.spinner("Writing the single-file checkpoint…"):
            st.session_state[key] = files_for_tools(ref)
    name = Path(ref).name
    # diffusers' load_lora_weights(folder) looks for its file by name; the other tools take any name.
    buttons = {
        "checkpoint": ("⬇️ Single-file checkpoint (.safetensors)", f"{name}.safetensors"),
        "diffusers": ("⬇️ LoRA for diffusers", "pytorch_lora_weights.safetensors"),
        "kohya": ("⬇️ LoRA for kohya / ComfyUI", f"{name}-lora.safetensors"),
    }
    for kind, path in st.session_state.get(key, {}).items():
        label, file_name = buttons[kind]
        file_download(label, path, file_name, "application/octet-stream")


def parity_section(parity: dict) -> None:
    ok = parity["passed"]
    st.markdown(f"**Parity with PyTorch:** {'✅ within tolerance' if ok else '❌ beyond tolerance'} · providers {', '.join(parity['providers'])}")
    frame = pd.DataFrame(
        [{"component": c["name"], "input shape": "×".join(map(str, c["input_shape"])), "max abs error": c["max_abs"], "max rel error": c["max_rel"], "ok": "✅" if c["passed"] else "❌"} for c in parity["components"]]
    )
    st.dataframe(frame, hide_index=True, width="stretch", column_config={"max abs error": st.column_config.NumberColumn(format="%.2e"), "max rel error": st.column_config.NumberColumn(format="%.2e")})
    req = parity["request"]
    c1, c2, c3 = st.columns(3)
    c1.metric("End-to-end PSNR (worst image)", f"{min(parity['psnr_db']):.1f} dB", help="100 dB means identical images.")
    c2.metric("Tolerance", f"rel ≤ {parity['tolerance']['max_rel']:.0e}, ≥ {parity['tolerance']['min_psnr']:.0f} dB")
    c3.metric("Check generation", f"{req['scheduler']} · {req['steps']} steps")
    st.caption(f"Prompt “{req['prompt']}”, negative “{req['negative_prompt']}”, seed {req['seed']}, batch {req['batch']}, guidance {req['guidance']}.")


def export_details(export_id: str) -> None:
    record = get_export(export_id)
    st.markdown(
        f"**{record.registered_model}** v{record.registered_version} · from `{record.source}` · "
        f"{record.size_bytes / 1e6:.1f} MB · {'fp16' if record.fp16 else 'fp32'} · `{record.path}`"
    )
    parity_section(record.parity)
    with st.expander("Files", expanded=False):
        st.dataframe(pd.DataFrame([{"file": f, "MB": round(size / 1e6, 3)} for f, size in export_files(record)]), hide_index=True, width="stretch")
    file_download("⬇️ Download as zip", lambda: export_zip(record), f"onnx-{record.id}.zip", "application/zip")
    st.code(f"studio generate --model {record.id} --backend onnx --prompt \"a handwritten digit seven\"", language="bash")


def render() -> None:
    st.title("📦 Export")
    st.caption("ONNX graphs in Optimum's layout, checked against PyTorch, logged to the run and registered in MLflow.")
    with user_errors():
        ref = export_form()
        if ref:
            model_files(ref)

    st.subheader("Exports")
    with user_errors():
        exports = list_exports()
        if not exports:
            st.info("No exports yet. Export a finished run above; the Playground can then use ONNX Runtime.", icon="💡")
            return
        labels = {f"{e.registered_model} v{e.registered_version} · {e.id} · {e.created_at:%Y-%m-%d %H:%M}": e.id for e in exports}
        export_details(pick("Export", labels, "export_selected"))
