"""The studio's pages, in one place: the entry declares them with `st.navigation`, and pages move to
one another with `st.switch_page(RUNS.page())` or `st.page_link(RUNS.page(), …)`."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module

import streamlit as st
from streamlit.navigation.page import StreamlitPage


@dataclass(frozen=True)
class StudioPage:
    """One page: its module under `pages/` (which is also its URL path), title and icon."""

    module: str
    title: str
    icon: str

    def page(self) -> StreamlitPage:
        """Its `st.Page`, built in the current script run: st.Page needs a running script, and a
        page object carries per-run state, so sessions must not share one."""
        return st.Page(self.render, title=self.title, icon=self.icon, url_path=self.module)

    def render(self) -> None:
        # Imported when drawn, not here: page modules import this one to link to each other.
        import_module(f"pages.{self.module}").render()


HOME = StudioPage("home", "Home", "🏠")
DATASETS = StudioPage("datasets", "Datasets", "🗂️")
TRAIN = StudioPage("train", "Train", "🏋️")
PIPELINES = StudioPage("pipelines", "Pipelines", "🔁")
RUNS = StudioPage("runs", "Runs", "📈")
EXPORT = StudioPage("export", "Export", "📦")
PLAYGROUND = StudioPage("playground", "Playground", "🧪")
PAGES = (HOME, DATASETS, TRAIN, PIPELINES, RUNS, EXPORT, PLAYGROUND)  # in the menu's order; the first opens
