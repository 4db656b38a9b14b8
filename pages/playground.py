"""Playground: the Gradio playground, served once per studio process and embedded here."""

from __future__ import annotations

import streamlit as st

from app.embedded import api_base_url, iframe_url
from app.widgets import user_errors

IFRAME_HEIGHT = 980


def render() -> None:
    st.title("🧪 Playground")
    st.caption(
        "Try prompts on your runs and exports with PyTorch or ONNX Runtime, at the sizes a model was trained at, "
        "with a LoRA at a strength (PyTorch); compare models with one seed."
    )
    with user_errors():
        from app.api import PLAYGROUND_PATH

        url = api_base_url()
        # `?model=<run or export id>` preselects that model (the Runs page's "Open in Playground").
        query = {"__theme": "dark", **({"model": st.query_params["model"]} if "model" in st.query_params else {})}
        st.iframe(iframe_url(url, PLAYGROUND_PATH, query), height=IFRAME_HEIGHT)
        st.caption(f"Also at {url}{PLAYGROUND_PATH}/ · HTTP API at {url}/docs (`POST /v1/generate`, `GET /v1/models`, `POST /v1/loras`).")
