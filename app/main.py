"""The Streamlit entry: `streamlit run app/main.py` (or `make studio`). It declares the pages."""

from __future__ import annotations

import core  # noqa: F401  (telemetry off before streamlit's neighbours are imported)

import streamlit as st

from pages import datasets, export, home, pipelines, playground, runs, train

st.set_page_config(page_title="Diffusion Studio", page_icon="🎨", layout="wide")

PAGES = [
    st.Page(home.render, title="Home", icon="🏠", url_path="home", default=True),
    st.Page(datasets.render, title="Datasets", icon="🗂️", url_path="datasets"),
    st.Page(train.render, title="Train", icon="🏋️", url_path="train"),
    st.Page(pipelines.render, title="Pipelines", icon="🔁", url_path="pipelines"),
    st.Page(runs.render, title="Runs", icon="📈", url_path="runs"),
    st.Page(export.render, title="Export", icon="📦", url_path="export"),
    st.Page(playground.render, title="Playground", icon="🧪", url_path="playground"),
]

st.navigation(PAGES).run()
