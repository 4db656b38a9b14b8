"""Team mode's sign-in in Debian's chromium against a real OpenID Connect provider process
(oidc-provider-mock), each role in its own browser context: a viewer cannot launch; a trainer makes
an API token and launches the quick demo; an admin watches it on Train, stops it, revokes the
trainer's token and reads all of it in the audit log. The catalog is checked after each step."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser import launch, screenshot, studio_server
from jobs.team_stack import wait_http
from tests.servers import free_port

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.xdist_group("sign-in")]
USERS = {"ada": "admin", "tom": "trainer", "vic": "viewer"}


@pytest.fixture
def provider() -> Iterator[str]:
    """oidc-provider-mock on 127.0.0.1 with one predefined user per role (sub = the name)."""
    port = free_port()
    claims = [arg for sub in USERS for arg in ("--user-claims", json.dumps({"sub": sub, "email": f"{sub}@example.com"}))]
    server = subprocess.Popen([sys.executable, "-m", "oidc_provider_mock", "--port", str(port), *claims],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(server, "oidc-provider-mock", f"{url}/.well-known/openid-configuration", timeout=60)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def sign_in(browser, studio: str, sub: str):  # type: ignore[no-untyped-def]
    page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
    page.goto(studio)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("button", name=sub, exact=True).click()  # the provider's predefined user
    page.get_by_text(f"Signed in as {sub}@example.com ({USERS[sub]})").wait_for(timeout=60_000)
    return page


def wait_for(condition, what: str, timeout: float = 120) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def test_roles_in_the_browser(home: Path, tmp_path: Path, provider: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from playwright.sync_api import sync_playwright

    from core import audit, tokens
    from core.access import User, acting_as
    from core.settings import reset_settings
    from jobs.records import get_job, list_jobs

    port = free_port()
    secrets_file = tmp_path / "secrets.toml"
    secrets_file.write_text(
        "[auth]\n"
        f'redirect_uri = "http://127.0.0.1:{port}/oauth2callback"\n'
        f'cookie_secret = "{secrets.token_hex(16)}"\n'
        'client_id = "studio"\nclient_secret = "studio-secret"\n'
        f'server_metadata_url = "{provider}/.well-known/openid-configuration"\n'
    )
    env = {"STUDIO_TEAM_MODE": "1", "STUDIO_ADMINS": "ada@example.com", "STUDIO_TRAINERS": "tom@example.com"}
    for key, value in env.items():  # this process reads the catalog as the studio does
        monkeypatch.setenv(key, value)
    reset_settings()
    with studio_server(home, env, port=port, args=("--secrets.files", str(secrets_file))) as studio, sync_playwright() as p:
        browser = launch(p)
        # Nothing but the sign-in screen before signing in.
        first = browser.new_page()
        first.goto(studio)
        first.get_by_role("button", name="Sign in").wait_for(timeout=60_000)
        assert first.get_by_role("link", name="Datasets").count() == 0

        viewer = sign_in(browser, studio, "vic")
        viewer.get_by_role("button", name="Quick demo").click()
        viewer.get_by_text("vic@example.com has the viewer role; only a trainer can launch jobs.").wait_for(timeout=60_000)
        assert viewer.get_by_role("link", name="Audit log").count() == 0
        assert list_jobs() == []  # the refusal launched nothing

        # The trainer makes an API token and launches the quick demo.
        trainer = sign_in(browser, studio, "tom")
        trainer.get_by_role("link", name="Account").click()
        trainer.get_by_label("Name").fill("ci")
        trainer.get_by_role("button", name="Create token").click()
        trainer.get_by_text("Copy it now: it is shown only this once.").wait_for(timeout=60_000)
        token = trainer.locator("code").filter(has_text="dst_").inner_text().strip()
        screenshot(trainer, "account")
        assert tokens.authenticate(token) == User("tom@example.com", "trainer")
        trainer.get_by_role("link", name="Home").click()
        trainer.get_by_role("button", name="Quick demo").click()
        wait_for(lambda: [j.owner for j in list_jobs()] == ["tom@example.com"], "the trainer's demo job")

        # The admin watches it on Train, stops it, revokes the trainer's token, reads the audit log.
        admin = sign_in(browser, studio, "ada")
        admin.get_by_role("link", name="Train").click()
        admin.get_by_text("launched by tom@example.com").wait_for(timeout=120_000)
        (job,) = list_jobs()
        wait_for(lambda: get_job(job.id).status == "running", "the demo job to run")
        admin.get_by_role("button", name="⏹ Stop").click()
        wait_for(lambda: get_job(job.id).status == "stopped", "the demo job to stop", timeout=300)
        admin.get_by_role("link", name="Account").click()
        admin.get_by_text("tom@example.com").first.wait_for(state="attached", timeout=60_000)
        admin.get_by_role("button", name="Revoke").click()
        wait_for(lambda: tokens.authenticate(token) is None, "the token to be revoked")
        # The page's rerun after the revoke ends with no live token left to pick: a click on the
        # menu during that rerun could be lost.
        wait_for(lambda: admin.get_by_role("button", name="Revoke").count() == 0, "the Account page to redraw")
        admin.get_by_role("link", name="Audit log").click()
        admin.get_by_role("heading", name="Audit log").wait_for(timeout=60_000)
        admin.get_by_text("token.revoke").wait_for(state="attached", timeout=60_000)  # a cell of the grid
        screenshot(admin, "audit")
        browser.close()

    with acting_as(User("ada@example.com", "admin")):
        done = [(e.actor, e.action) for e in audit.events()]
    for expected in [("tom@example.com", "token.create"), ("tom@example.com", "job.launch"), ("ada@example.com", "job.stop"), ("ada@example.com", "token.revoke")]:
        assert expected in done
