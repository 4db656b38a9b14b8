"""Playground: the Gradio playground, served once per studio process and embedded here."""

from __future__ import annotations

from urllib.parse import urlencode

import streamlit as st

from app.widgets import user_errors
from core.settings import get_settings

IFRAME_HEIGHT = 980


def render() -> None:
    st.title("🧪 Playground")
    st.caption("Try prompts on your runs and exports with PyTorch or ONNX Runtime; compare models with one seed.")
    with user_errors():
        from app.api import PLAYGROUND_PATH, serve_in_background

        with st.spinner("Starting the playground…"):
            url = serve_in_background(get_settings().playground_port)
        # `?model=<run or export id>` preselects that model (the Runs page's "Open in Playground").
        query = urlencode({"__theme": "dark", **({"model": st.query_params["model"]} if "model" in st.query_params else {})})
        st.iframe(f"{url}{PLAYGROUND_PATH}/?{query}", height=IFRAME_HEIGHT)
        st.caption(f"Also at {url}{PLAYGROUND_PATH}/ · HTTP API at {url}/docs (`POST /v1/generate`, `GET /v1/models`).")
