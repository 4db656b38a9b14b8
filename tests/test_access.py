"""Team mode's roles, launch limits, audit log and API tokens, checked where they are enforced:
by calling the `jobs`/`core` functions directly as each user, and the HTTP API as a client."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from core.access import NotAllowed, User, acting_as
from core.errors import StudioError

VIEWER = User("vera@example.com", "viewer")
ALICE = User("alice@example.com", "trainer")
BOB = User("bob@example.com", "trainer")
ADMIN = User("ada@example.com", "admin")


@pytest.fixture
def team(home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from core.settings import reset_settings

    monkeypatch.setenv("STUDIO_TEAM_MODE", "1")
    monkeypatch.setenv("STUDIO_ADMINS", ADMIN.name)
    monkeypatch.setenv("STUDIO_TRAINERS", f"{ALICE.name},{BOB.name}")
    monkeypatch.setenv("STUDIO_LAUNCH_LIMITS", json.dumps({"trainer": {"instances": 2, "hours": 12, "jobs": 1}}))
    reset_settings()
    return home


def queued_job(owner: User) -> str:
    """A real queued job row made as `owner` (nothing is spawned for it)."""
    from core.db import new_id
    from jobs.records import create_job

    with acting_as(owner):
        return create_job(new_id(), "train", "local", {"dataset": "demo"}, "train.log").id


def actions() -> list[tuple[str, str, str]]:
    from core import audit

    with acting_as(ADMIN):
        return [(e.actor, e.action, e.target) for e in audit.events()]


def test_roles_come_from_the_lists_then_the_claim_then_the_default(team: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.access import role_for
    from core.settings import reset_settings

    assert role_for("ADA@example.com ") == "admin" and role_for(ALICE.name) == "trainer"
    assert role_for("someone@example.com") == "viewer"
    monkeypatch.setenv("STUDIO_ROLE_CLAIM", "studio_role")
    reset_settings()
    assert role_for("someone@example.com", {"studio_role": "trainer"}) == "trainer"
    assert role_for("someone@example.com", {"studio_role": "owner"}) == "viewer"  # not a role: the default
    assert role_for(ALICE.name, {"studio_role": "admin"}) == "trainer"  # the lists win


def test_a_viewer_can_change_nothing_and_each_refusal_is_one_sentence(team: Path, tmp_path: Path) -> None:
    from core.datasets.delete import delete_dataset
    from core.datasets.ingest import import_dataset
    from core.tracking.edits import delete_run
    from core.tracking.registry import promote
    from core.training.config import build_config
    from jobs import control
    from jobs.records import list_jobs

    (tmp_path / "a.png").write_bytes(b"not read")
    with acting_as(VIEWER):
        with pytest.raises(NotAllowed) as refused:
            control.launch(build_config({"dataset": "demo"}))
        assert str(refused.value) == "vera@example.com has the viewer role; only a trainer can launch jobs."
        with pytest.raises(NotAllowed, match="only a trainer can import or curate datasets"):
            import_dataset("cats", folder=tmp_path)
        with pytest.raises(NotAllowed, match="only an admin can delete datasets or runs"):
            delete_dataset("cats")
    with acting_as(ALICE):
        with pytest.raises(NotAllowed, match="alice@example.com has the trainer role; only an admin can promote models."):
            promote("any-run", "digits")
        with pytest.raises(NotAllowed, match="only an admin can delete datasets or runs"):
            delete_run("any-run")
    assert list_jobs() == [] and not (team / "drafts" / "cats").exists()
    assert actions() == []


def test_a_trainer_stops_only_their_own_jobs_and_an_admin_any(team: Path) -> None:
    from jobs import control
    from jobs.records import get_job

    mine, theirs = queued_job(ALICE), queued_job(BOB)
    assert get_job(mine).owner == ALICE.name
    with acting_as(ALICE):
        with pytest.raises(NotAllowed) as refused:
            control.cancel(theirs)
        assert str(refused.value) == "This belongs to bob@example.com; only its owner or an admin can stop, resume or reorder jobs."
        assert get_job(theirs).status == "queued"
        control.cancel(mine)
    with acting_as(ADMIN):
        control.cancel(theirs)
    assert get_job(mine).status == get_job(theirs).status == "stopped"
    assert actions() == [(ADMIN.name, "job.cancel", theirs), (ALICE.name, "job.cancel", mine)]


def test_launch_limits_of_a_role(team: Path) -> None:
    from core.training.config import build_config
    from jobs import control

    config = build_config({"dataset": "demo"})
    with acting_as(ALICE):
        with pytest.raises(NotAllowed, match="at most 2 instances per job; this asks for 4"):
            control.launch(config, backend="sagemaker", sagemaker={"instance_count": 4})
        with pytest.raises(NotAllowed, match="at most 12 hours; this asks for 48"):
            control.launch(config, backend="sagemaker", sagemaker={"max_run_hours": 48})
        with pytest.raises(NotAllowed, match="Only an admin can choose SageMaker's role, image_uri"):
            control.launch(config, backend="sagemaker", sagemaker={"role": "arn:aws:iam::1:role/x", "image_uri": "x"})
    queued_job(ALICE)
    with acting_as(ALICE), pytest.raises(NotAllowed, match="may have 1 jobs queued or running at once"):
        control.launch(config)


def test_tokens_are_shown_once_kept_hashed_and_revocable(team: Path) -> None:
    from core import tokens
    from core.db import get_engine

    with acting_as(ALICE):
        info, token = tokens.create("laptop")
        assert token.startswith("dst_") and info.owner == ALICE.name
    with get_engine().connect() as conn:
        stored = json.dumps([list(row) for row in conn.execute(text("SELECT * FROM api_tokens"))], default=str)
    assert token not in stored and token[4:] not in stored
    assert tokens.authenticate(token) == ALICE
    assert tokens.authenticate(token + "x") is None and tokens.authenticate("") is None
    with acting_as(BOB), pytest.raises(NotAllowed, match="This belongs to alice@example.com"):
        tokens.revoke(info.id)
    with acting_as(ADMIN):
        assert tokens.revoke(info.id).revoked_at is not None
    assert tokens.authenticate(token) is None
    with acting_as(ALICE):
        assert [t.id for t in tokens.list_tokens()] == [info.id]
    assert [a for _, a, _ in actions()] == ["token.revoke", "token.create"]


def test_the_api_needs_a_live_token_in_team_mode(team: Path) -> None:
    from app.api import create_app
    from core import tokens

    with acting_as(VIEWER):
        _, token = tokens.create("script")
    client = TestClient(create_app(playground=False), base_url="http://127.0.0.1")
    assert client.get("/healthz").status_code == 200
    missing = client.get("/v1/models")
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert client.get("/v1/models", headers={"Authorization": "Bearer dst_nope"}).status_code == 401
    live = {"Authorization": f"Bearer {token}"}
    assert client.get("/v1/models", headers=live).status_code == 200
    assert client.get("/v1/models", headers={**live, "Host": "evil.example"}).status_code == 400
    with acting_as(ADMIN):
        (info,) = tokens.list_tokens(everyone=True)
        tokens.revoke(info.id)
    assert client.get("/v1/models", headers=live).status_code == 401


def test_embedded_mode_has_no_sign_in_and_the_cli_prints_the_audit_log(home: Path, capsys: pytest.CaptureFixture) -> None:
    from app.api import create_app
    from app.cli import main
    from core.access import LOCAL, current_user
    from core.db import AuditEvent, session_scope

    assert current_user() == LOCAL and LOCAL.role == "admin"
    assert TestClient(create_app(playground=False), base_url="http://127.0.0.1").get("/v1/models").status_code == 200
    job = queued_job(LOCAL)
    assert main(["job", "cancel", job]) == 0
    capsys.readouterr()
    assert main(["audit", "--json"]) == 0
    (event,) = json.loads(capsys.readouterr().out)
    assert (event["actor"], event["action"], event["target"]) == (LOCAL.name, "job.cancel", job)
    with session_scope() as session:
        assert session.scalar(select(AuditEvent.actor)) == LOCAL.name


def test_the_playground_takes_a_signed_ticket_then_its_cookie(team: Path) -> None:
    from app.api import BearerTokenMiddleware, create_app
    from core.tokens import ticket

    client = TestClient(create_app(playground=True), base_url="http://127.0.0.1")
    name = BearerTokenMiddleware.TICKET
    assert client.get("/playground/").status_code == 401
    good = ticket(ALICE)
    forged = good[:-2] + ("AA" if not good.endswith("AA") else "BB")
    assert client.get("/playground/", params={name: forged}).status_code == 401
    assert client.get("/playground/", params={name: ticket(ALICE, seconds=-1)}).status_code == 401  # expired
    first = client.get("/playground/", params={name: good})
    assert first.status_code == 200 and "Path=/playground" in first.headers["set-cookie"]
    assert client.get("/playground/config").status_code == 200  # the cookie, as the iframe's own requests send it
    assert client.get("/v1/models").status_code == 401  # the ticket opens the playground only



def test_the_upload_box_takes_a_ticket_and_keeps_batches_to_their_sender(team: Path) -> None:
    from app.api import BearerTokenMiddleware, create_app
    from core.datasets import staging
    from core.tokens import ticket

    client = TestClient(create_app(playground=False), base_url="http://127.0.0.1")
    mark = {"X-Studio-Upload": "1"}
    assert client.post("/uploads/batches", headers=mark).status_code == 401
    first = client.get("/uploads/", params={BearerTokenMiddleware.TICKET: ticket(ALICE)})
    assert first.status_code == 200 and "Path=/uploads" in first.headers["set-cookie"]
    batch = client.post("/uploads/batches", headers=mark).json()["id"]  # the cookie, as the box's script sends it
    assert client.put(f"/uploads/batches/{batch}/files", params={"name": "a.zip"}, content=b"zip", headers=mark).json() == {"bytes": 3}
    assert client.get("/v1/models").status_code == 401  # the ticket opens the upload box only
    with acting_as(BOB):
        assert staging.ready_batches() == []
    viewer = TestClient(create_app(playground=False), base_url="http://127.0.0.1")
    viewer.get("/uploads/", params={BearerTokenMiddleware.TICKET: ticket(VIEWER)})
    refused = viewer.post("/uploads/batches", headers=mark)
    assert refused.status_code == 403 and "viewer" in refused.json()["detail"]

def test_team_mode_keeps_pages_to_the_studios_own_folder(team: Path, tmp_path: Path) -> None:
    from core.datasets.export import export_folder
    from core.datasets.ingest import import_dataset

    outside = tmp_path / "outside"
    outside.mkdir()
    with acting_as(ALICE):
        with pytest.raises(NotAllowed, match="reads and writes server folders only under"):
            import_dataset("cats", folder=outside)
        with pytest.raises(NotAllowed, match="reads and writes server folders only under"):
            export_folder("cats", tmp_path / "export")
    assert not (tmp_path / "export").exists() and not (team / "drafts" / "cats").exists()
    with pytest.raises(StudioError, match="no image|No image|empty|nothing"):  # the CLI (local admin) may read any folder
        import_dataset("cats", folder=outside)


def test_admins_set_roles_in_the_studio_and_stay_admins(team: Path, capsys: pytest.CaptureFixture) -> None:
    from app.cli import main
    from core import roles
    from core.access import role_for

    with acting_as(ALICE), pytest.raises(NotAllowed, match="only an admin can change roles"):
        roles.set_role(VIEWER.name, "trainer")
    assert role_for(VIEWER.name) == "viewer"
    with acting_as(ADMIN):
        roles.set_role(VIEWER.name, "trainer")
        roles.set_role(ALICE.name, "viewer")  # wins over STUDIO_TRAINERS
        roles.set_role(ADMIN.name, "viewer")  # STUDIO_ADMINS cannot be locked out
        with pytest.raises(StudioError, match="is not an email address"):
            roles.set_role("nobody", "admin")
    assert (role_for(VIEWER.name), role_for(ALICE.name), role_for(ADMIN.name)) == ("trainer", "viewer", "admin")
    assert main(["role", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[ALICE.name] == "viewer"
    assert ("ada@example.com", "user.role", VIEWER.name) in actions()
