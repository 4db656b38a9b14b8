"""The Runs and Train pages under one navigation, for AppTest of Clone (Runs -> Train form)."""

import core  # noqa: F401

import streamlit as st

from pages import runs, train

st.navigation(
    [st.Page(runs.render, title="Runs", url_path="runs", default=True), st.Page(train.render, title="Train", url_path="train")]
).run()
