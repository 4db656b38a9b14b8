"""The Runs and Train pages under one navigation, for AppTest of Clone (Runs -> Train form)."""

import core  # noqa: F401

import streamlit as st

from app.navigation import RUNS, TRAIN

st.navigation([RUNS.page(), TRAIN.page()]).run()  # the first opens
