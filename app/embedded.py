"""Pages the studio draws in iframes from its API server (the playground, the upload box).

The server is started once per studio process. The browser reaches it at the host it reached the
studio's page at (not 127.0.0.1, which is wrong behind Docker or a proxy), or at
STUDIO_PLAYGROUND_URL. The iframe is another origin, so in team mode its URL carries a signed
ticket for the signed-in user, which the API keeps as a cookie scoped to that path.
"""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit

import streamlit as st

from core.access import current_user
from core.settings import get_settings


def page_url() -> str | None:
    """The URL the browser shows for this page (or, failing that, its Host header)."""
    if st.context.url:
        return st.context.url
    host = st.context.headers.get("host")
    return f"http://{host}" if host else None


def api_base_url() -> str:
    """Where the browser reaches the API server, started here if it is not running yet; warns on the
    page when that host is not one the server answers."""
    from app.api import allowed_hosts, browser_base_url, host_allowed, is_ip_address, serve_in_background

    settings = get_settings()
    with st.spinner("Starting the studio's API server…"):
        serve_in_background(settings.playground_port)
    url = browser_base_url(page_url(), settings.playground_port, settings.playground_url)
    host = urlsplit(url).hostname or ""
    # (An IP address may be the one the server listens on, which it always answers.)
    if not is_ip_address(host) and not host_allowed(host, allowed_hosts(settings, settings.playground_host)):
        st.warning(
            f"The studio's API server answers only the hosts in STUDIO_ALLOWED_HOSTS; add `{host}` there "
            "(or set STUDIO_PLAYGROUND_URL) to use it from this address."
        )
    return url


def iframe_url(base: str, path: str, query: dict[str, str] | None = None) -> str:
    """`base` + `path` with `query`, plus this user's ticket in team mode."""
    from app.api import BearerTokenMiddleware

    params = dict(query or {})
    if get_settings().team_mode:
        from core.tokens import ticket

        params[BearerTokenMiddleware.TICKET] = ticket(current_user())
    return f"{base}{path}/" + (f"?{urlencode(params)}" if params else "")
