"""The Streamlit entry: `streamlit run app/main.py` (or `make studio`). It declares the pages."""

from __future__ import annotations

import core  # noqa: F401  (telemetry off before streamlit's neighbours are imported)

import streamlit as st

from app.navigation import menu

st.set_page_config(page_title="Diffusion Studio", page_icon="🎨", layout="wide")
st.navigation(menu()).run()
