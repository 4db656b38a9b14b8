"""The studio's pages, in one place: the entry declares them with `st.navigation`, and pages move to
one another with `st.switch_page(RUNS.page())` or `st.page_link(RUNS.page(), …)`."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING

import streamlit as st
from streamlit.navigation.page import StreamlitPage

if TYPE_CHECKING:
    from core.access import User


@dataclass(frozen=True)
class StudioPage:
    """One page: its module under `pages/` (which is also its URL path), title and icon."""

    module: str
    title: str
    icon: str
    default: bool = False  # served at "/"

    def page(self) -> StreamlitPage:
        """Its `st.Page`, built in the current script run: st.Page needs a running script, and a
        page object carries per-run state, so sessions must not share one."""
        # The default page answers at "/"; its own name goes to a hidden twin (`alias`), so "/home" works too.
        url_path = f"{self.module}-default" if self.default else self.module
        return st.Page(self.render, title=self.title, icon=self.icon, url_path=url_path, default=self.default)

    def alias(self) -> StreamlitPage:
        return st.Page(self.render, title=self.title, icon=self.icon, url_path=self.module, visibility="hidden")

    def render(self) -> None:
        # Imported when drawn, not here: page modules import this one to link to each other.
        import_module(f"pages.{self.module}").render()


HOME = StudioPage("home", "Home", "🏠", default=True)
DATASETS = StudioPage("datasets", "Datasets", "🗂️")
TRAIN = StudioPage("train", "Train", "🏋️")
PIPELINES = StudioPage("pipelines", "Pipelines", "🔁")
RUNS = StudioPage("runs", "Runs", "📈")
EXPORT = StudioPage("export", "Export", "📦")
PLAYGROUND = StudioPage("playground", "Playground", "🧪")
ACCOUNT = StudioPage("account", "Account", "🔑")
AUDIT = StudioPage("audit", "Audit log", "🧾")
PAGES = (HOME, DATASETS, TRAIN, PIPELINES, RUNS, EXPORT, PLAYGROUND)  # in the menu's order


def menu(user: User | None = None) -> list[StreamlitPage]:
    """What the entry hands to `st.navigation`: every page, and the default page's twin at its own
    name; in team mode (a signed-in `user`) also the Account page, and the audit log for admins."""
    pages = list(PAGES)
    if user is not None:
        pages += [ACCOUNT, AUDIT] if user.role == "admin" else [ACCOUNT]
    return [p.page() for p in pages] + [p.alias() for p in pages if p.default]
