"""Team mode's sign-in, through Streamlit's own OpenID Connect (`st.login`, configured in
`.streamlit/secrets.toml` `[auth]`): who the browser's user is, and their role."""

from __future__ import annotations

import streamlit as st
from streamlit.errors import StreamlitAuthError
from streamlit.runtime.scriptrunner import get_script_run_ctx

from core.access import NotAllowed, User, role_for

SETUP = "Team mode needs sign-in set up: add an [auth] section to .streamlit/secrets.toml (see the README's team section)."


def _claims_user() -> User | None:
    """The user the browser's session signed in as (None: nobody, or no usable email)."""
    if not st.user.is_logged_in:
        return None
    claims = st.user.to_dict()
    email = str(claims.get("email") or claims.get("sub") or "").strip().lower()
    return User(email, role_for(email, claims)) if email else None


def session_user() -> User | None:
    """`core.access`'s resolver in team mode: the signed-in user of the script run (or fragment
    rerun) on this thread; None off Streamlit's script threads (the API sets its own)."""
    if get_script_run_ctx(suppress_warning=True) is None:
        return None
    user = _claims_user()
    if user is None:
        raise NotAllowed("Sign in first.")
    return user


def signed_in_user() -> User | None:
    """The signed-in user, or None after drawing the sign-in screen."""
    if st.user.is_logged_in:
        if (user := _claims_user()) is None:
            st.error("The sign-in provider sent no email or subject for this account; ask an admin to check its claims.")
            st.button("Sign out", on_click=st.logout)
        return user
    st.title("Diffusion Studio")
    st.write("This studio is shared by a team: sign in to see its datasets, runs and models.")
    if st.button("Sign in", type="primary"):
        try:
            st.login()
        except StreamlitAuthError:
            st.error(SETUP)
    return None


def account_sidebar(user: User) -> None:
    with st.sidebar:
        st.caption(f"Signed in as **{user.name}** ({user.role})")
        st.button("Sign out", on_click=st.logout, key="sign_out")
