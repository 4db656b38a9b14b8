"""Widgets shared by the pages."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import altair as alt
import pandas as pd
import streamlit as st

from core.errors import StudioError

log = logging.getLogger("app")

STATUS_ICONS = {
    "queued": "⏳",
    "starting": "🚀",
    "running": "🏃",
    "stopping": "✋",
    "stopped": "⏹️",
    "succeeded": "✅",
    "failed": "❌",
    "FINISHED": "✅",
    "RUNNING": "🏃",
    "FAILED": "❌",
    "KILLED": "⏹️",
    "SCHEDULED": "⏳",
}


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Show a problem the user can fix as one sentence; anything else as one sentence plus a log entry."""
    try:
        yield
    except StudioError as exc:
        st.error(str(exc), icon="⚠️")
    except Exception as exc:  # never a traceback page
        log.exception("Unexpected error")
        st.error(f"Something went wrong: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", icon="🛑")


def status_label(status: str) -> str:
    return f"{STATUS_ICONS.get(status, '•')} {status.lower()}"


LEGEND_PX = 40


def loss_chart(rows: list[dict], keys: tuple[str, ...], height: int = 220) -> None:
    """A line chart of the given metric keys against step, from metrics.jsonl rows.

    Long format, one series per key: validation metrics come every few hundred steps, and in a wide
    table their gaps would break their lines into invisible single points."""
    frame = pd.DataFrame([{"step": r["step"], "metric": k, "value": r[k]} for r in rows if "step" in r for k in keys if r.get(k) is not None])
    if frame.empty:
        st.caption("No metrics yet.")
        return
    chart = (
        alt.Chart(frame)
        .mark_line()
        .encode(
            x=alt.X("step:Q", title=None, scale=alt.Scale(zero=False, nice=False)),
            y=alt.Y("value:Q", title=None),
            color=alt.Color("metric:N", title=None, legend=alt.Legend(orient="top")),
            tooltip=["metric", "step", "value"],
        )
    )
    st.altair_chart(chart, width="stretch", height=height + LEGEND_PX)  # the legend takes its share


def pick(label: str, options: dict[str, str], state_key: str) -> str:
    """A selectbox over `{shown label: id}` that starts on the id another page left in `state_key`."""
    ids = list(options.values())
    selected = st.session_state.get(state_key)
    shown = st.selectbox(label, list(options), index=ids.index(selected) if selected in ids else 0)
    return options[shown]
