"""Widgets shared by the pages."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from core.errors import StudioError
from core.training.logline import stage_of

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


# Library chatter in a job's log that says nothing about the user's training (torchvision missing
# on purpose, DeepSpeed finding no GPU, Python's deprecation notices); the log file keeps it.
LIBRARY_NOISE = re.compile(
    r"^\[(transformers|diffusers)\] "
    r"|^\[\d{4}-\d\d-\d\d [\d:,]+\] \[(WARNING|INFO)\] \[\w+\.py:\d+:\w+\]"
    r"|/site-packages/.*: (Future|Deprecation|User)Warning: "
)


def user_log(text: str, lines: int) -> str:
    """The newest `lines` lines of a job's log that concern the user."""
    kept = [line for line in text.splitlines() if not LIBRARY_NOISE.search(line)]
    return "\n".join(kept[-lines:])


def status_label(status: str) -> str:
    return f"{STATUS_ICONS.get(status, '•')} {status.lower()}"


# Cell highlights name their text colour too: with the background alone, the dark theme draws its
# white text on a pale fill.
HIGHLIGHT_CHANGED = "background-color: #fff3b0; color: #1f2328"
HIGHLIGHT_BEST = "background-color: #c8f7c5; color: #1f2328"

LEGEND_PX = 40


STAGE_TITLES = {"vae": "VAE", "unet": "UNet"}


def loss_chart(rows: list[dict], keys: tuple[str, ...], height: int = 220) -> None:
    """Line charts of the given metric keys against step, from metrics.jsonl rows: one chart per
    training stage, side by side, since each stage counts its steps from zero.

    Long format, one series per key: validation metrics come every few hundred steps, and in a wide
    table their gaps would break their lines into invisible single points."""
    frame = pd.DataFrame([{"step": r["step"], "metric": k, "value": r[k]} for r in rows if "step" in r for k in keys if r.get(k) is not None])
    if frame.empty:
        st.caption("No metrics yet.")
        return
    frame["stage"] = frame["metric"].map(lambda key: stage_of(key) or "unet")
    stages = [s for s in STAGE_TITLES if s in set(frame["stage"])]
    for column, stage in zip(st.columns(len(stages)), stages, strict=True):
        title = STAGE_TITLES[stage]
        chart = (
            alt.Chart(frame[frame["stage"] == stage])
            .mark_line()
            .encode(
                x=alt.X("step:Q", title=f"{title} step", scale=alt.Scale(zero=False, nice=False)),
                y=alt.Y("value:Q", title=None),
                color=alt.Color("metric:N", title=None, legend=alt.Legend(orient="top")),
                tooltip=["metric", "step", "value"],
            )
        )
        column.altair_chart(chart, width="stretch", height=height + LEGEND_PX)  # the legend takes its share


def pick(label: str, options: dict[str, str], state_key: str) -> str:
    """A selectbox over `{shown label: id}` that starts on the id another page left in `state_key`."""
    ids = list(options.values())
    selected = st.session_state.get(state_key)
    shown = st.selectbox(label, list(options), index=ids.index(selected) if selected in ids else 0)
    return options[shown]


def file_download(label: str, path: Path | Callable[[], Path], file_name: str, mime: str, *, where=st, **kwargs) -> None:  # type: ignore[no-untyped-def]
    """A button that downloads the file at `path` (or at the path the callable makes, on click).

    The bytes are read on click, not at every rerun (a checkpoint runs to gigabytes), and the click
    starts no rerun: a rerun would replace the button's deferred file while the browser fetches it,
    and the download would be lost.
    """
    where.download_button(label, data=lambda: (path() if callable(path) else path).read_bytes(), file_name=file_name, mime=mime, on_click="ignore", **kwargs)
