"""Audit log (team mode, admins): who launched, stopped, deleted, promoted, exported, imported or made a token."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app.widgets import user_errors
from core import audit


def render() -> None:
    st.title("Audit log")
    with user_errors():
        everything = audit.events(limit=2000)
        if not everything:
            st.info("Nothing has been done yet: launches, stops, deletes, promotions, exports, imports and tokens appear here.")
            return
        left, right = st.columns(2)
        actor = left.selectbox("Who", ["everyone", *sorted({e.actor for e in everything})])
        action = right.selectbox("What", ["everything", *sorted({e.action for e in everything})])
        shown = [e for e in everything if actor in ("everyone", e.actor) and action in ("everything", e.action)]
        table = pd.DataFrame([{"when": e.at, "who": e.actor, "what": e.action, "on": e.target, "detail": e.detail} for e in shown])
        st.dataframe(table, hide_index=True, width="stretch")
        st.caption(f"{len(shown)} of the newest {len(everything)} events. `studio audit --json` prints them for scripts.")
