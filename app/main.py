"""The Streamlit entry: `streamlit run app/main.py` (or `make studio`). It declares the pages.

In team mode (`STUDIO_TEAM_MODE`) nothing but the sign-in screen is drawn until the user signs in,
and every page, fragment reruns included, then acts as that user (`core.access.resolve_with`), so
`jobs/` and `core/` check their role.
"""

from __future__ import annotations

import core  # noqa: F401  (telemetry off before streamlit's neighbours are imported)

import streamlit as st

from app.navigation import menu
from core.access import resolve_with
from core.settings import get_settings

st.set_page_config(page_title="Diffusion Studio", page_icon="🎨", layout="wide")
if not get_settings().team_mode:
    st.navigation(menu()).run()
else:
    from app.auth import account_sidebar, session_user, signed_in_user

    resolve_with(session_user)
    if (user := signed_in_user()) is not None:
        account_sidebar(user)
        st.navigation(menu(user)).run()
