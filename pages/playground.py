"""Playground: the Gradio playground, served once per studio process and embedded here."""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit

import streamlit as st

from app.widgets import user_errors
from core.access import current_user
from core.settings import get_settings

IFRAME_HEIGHT = 980


def page_url() -> str | None:
    """The URL the browser shows for this page (or, failing that, its Host header)."""
    if st.context.url:
        return st.context.url
    host = st.context.headers.get("host")
    return f"http://{host}" if host else None


def render() -> None:
    st.title("🧪 Playground")
    st.caption("Try prompts on your runs and exports with PyTorch or ONNX Runtime; compare models with one seed.")
    with user_errors():
        from app.api import PLAYGROUND_PATH, allowed_hosts, browser_base_url, host_allowed, is_ip_address, serve_in_background

        settings = get_settings()
        with st.spinner("Starting the playground…"):
            serve_in_background(settings.playground_port)
        # The browser reaches the playground at the host it reached this page at (not 127.0.0.1,
        # which is wrong behind Docker or a proxy), or at STUDIO_PLAYGROUND_URL.
        url = browser_base_url(page_url(), settings.playground_port, settings.playground_url)
        host = urlsplit(url).hostname or ""
        # (An IP address may be the one the server listens on, which it always answers.)
        if not is_ip_address(host) and not host_allowed(host, allowed_hosts(settings, settings.playground_host)):
            st.warning(
                f"The playground answers only the hosts in STUDIO_ALLOWED_HOSTS; add `{host}` there "
                "(or set STUDIO_PLAYGROUND_URL) to use it from this address."
            )
        # `?model=<run or export id>` preselects that model (the Runs page's "Open in Playground").
        query = urlencode({"__theme": "dark", **({"model": st.query_params["model"]} if "model" in st.query_params else {})})
        if settings.team_mode:  # the iframe is another origin: it signs in with a ticket for this user
            from app.api import BearerTokenMiddleware
            from core.tokens import ticket

            query += "&" + urlencode({BearerTokenMiddleware.TICKET: ticket(current_user())})
        st.iframe(f"{url}{PLAYGROUND_PATH}/?{query}", height=IFRAME_HEIGHT)
        st.caption(f"Also at {url}{PLAYGROUND_PATH}/ · HTTP API at {url}/docs (`POST /v1/generate`, `GET /v1/models`).")
