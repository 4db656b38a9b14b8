"""Account (team mode): who you are, your role, and your API tokens — made here, shown once,
revocable; for admins also the team's roles."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app.widgets import user_errors
from core import roles, tokens
from core.access import RANK, current_user
from core.settings import get_settings


def render() -> None:
    user = current_user()
    st.title("Account")
    st.write(f"Signed in as **{user.name}** with the **{user.role}** role.")
    tokens_section()
    if user.role == "admin":
        roles_section()


def roles_section() -> None:
    st.subheader("Team roles")
    st.caption("Roles set here win over STUDIO_TRAINERS and the sign-in claim; STUDIO_ADMINS are always admins.")
    with st.form("set_role", clear_on_submit=True):
        left, right = st.columns([3, 1])
        email = left.text_input("Email", placeholder="someone@example.com")
        role = right.selectbox("Role", list(RANK), index=1)
        submitted = st.form_submit_button("Set role")
    with user_errors():
        if submitted:
            roles.set_role(email, role)
            st.success(f"{email.strip().lower()} now has the {role} role.")
        assigned = roles.assigned_roles()
        rows = [{"email": e, "role": "admin", "from": "STUDIO_ADMINS"} for e in get_settings().admins]
        rows += [{"email": e, "role": r, "from": "set here"} for e, r in assigned.items() if e not in get_settings().admins]
        if rows:
            st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")


def tokens_section() -> None:
    st.subheader("API tokens")
    st.caption("Send one as `Authorization: Bearer <token>` to the HTTP API. A token acts with your role; revoke it when it leaks or is no longer needed.")
    with st.form("new_token", clear_on_submit=True):
        name = st.text_input("Name", placeholder="e.g. ci or laptop")
        created = st.form_submit_button("Create token", type="primary")
    if created:
        with user_errors():
            info, token = tokens.create(name)
            st.success(f"Token **{info.name}** made. Copy it now: it is shown only this once.")
            st.code(token, language=None)
    with user_errors():
        everyone = current_user().role == "admin"  # an admin sees and revokes the whole team's tokens
        mine = tokens.list_tokens(everyone=everyone)
        if not mine:
            st.info("No API tokens yet." if everyone else "You have no API tokens yet.")
            return
        rows = [{"owner": t.owner, "name": t.name, "created": t.created_at, "last used": t.last_used_at, "revoked": t.revoked_at} for t in mine]
        st.dataframe(pd.DataFrame(rows).drop(columns=[] if everyone else ["owner"]), hide_index=True, width="stretch")
        live = {f"{t.name} · {t.owner} ({t.id[:8]})" if everyone else f"{t.name} ({t.id[:8]})": t.id for t in mine if t.revoked_at is None}
        if live:
            choice = st.selectbox("Token to revoke", list(live))
            if st.button("Revoke"):
                tokens.revoke(live[choice])
                st.rerun()
