"""Widgets shared by the pages."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

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


def loss_chart(rows: list[dict], keys: tuple[str, ...], height: int = 220) -> None:
    """A line chart of the given metric keys against step, from metrics.jsonl rows."""
    frame = pd.DataFrame([{k: r[k] for k in ("step", *keys) if k in r} for r in rows if any(k in r for k in keys)])
    if frame.empty:
        st.caption("No metrics yet.")
        return
    st.line_chart(frame.groupby("step").last(), height=height)


def pick(label: str, options: dict[str, str], state_key: str) -> str:
    """A selectbox over `{shown label: id}` that starts on the id another page left in `state_key`."""
    ids = list(options.values())
    selected = st.session_state.get(state_key)
    shown = st.selectbox(label, list(options), index=ids.index(selected) if selected in ids else 0)
    return options[shown]
