"""Team mode's sign-in, through Streamlit's own OpenID Connect (`st.login`, configured in
`.streamlit/secrets.toml` `[auth]`): who the browser's user is, and their role."""

from __future__ import annotations

import streamlit as st
from streamlit.errors import StreamlitAuthError

from core.access import User, role_for

SETUP = "Team mode needs sign-in set up: add an [auth] section to .streamlit/secrets.toml (see the README's team section)."


def signed_in_user() -> User | None:
    """The signed-in user, or None after drawing the sign-in screen."""
    if st.user.is_logged_in:
        claims = st.user.to_dict()
        email = str(claims.get("email") or claims.get("sub") or "")
        if not email:
            st.error("The sign-in provider sent no email or subject for this account; ask an admin to check its claims.")
            st.button("Sign out", on_click=st.logout)
            return None
        return User(email.strip().lower(), role_for(email, claims))
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
