"""MLflow's credentials against a real `mlflow server --app-name basic-auth` (about 20 s to start
here): the studio writes with them, says one sentence without them, and never shows them; a
SageMaker launch (moto's server, the real SDK) carries only a Secrets Manager secret's name, which
the job's entry point reads at start."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.errors import StudioError
from tests.servers import free_port, mlflow_server
from tests.test_jobs_sagemaker import aws, launch_options, recorded  # noqa: F401  (aws: a fixture)

USER, PASSWORD = "admin", "Zq8-not-a-real-password-41x"


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """MLflow's basic-auth app (needs Flask-WTF, `mlflow[auth]`), admin USER:PASSWORD; yields its URL."""
    store = tmp_path_factory.mktemp("mlflow-auth")
    config = store / "basic_auth.ini"
    config.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{store / 'auth.db'}\nadmin_username = {USER}\nadmin_password = {PASSWORD}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    port = free_port()
    env = {"MLFLOW_AUTH_CONFIG_PATH": str(config), "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-only"}
    with mlflow_server(store, port, env=env, app_name="basic-auth"):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
def tracking(home: Path, auth_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """This test's home, logging to the basic-auth server, with no MLflow credentials set yet."""
    from core.settings import reset_settings
    from core.tracking.connection import _tracking_for

    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "STUDIO_MLFLOW_CREDENTIALS_SECRET"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("STUDIO_MLFLOW_URI", auth_server)
    monkeypatch.setenv("STUDIO_EXPERIMENT", f"auth-{time.time_ns()}")
    reset_settings()
    _tracking_for.cache_clear()
    yield auth_server
    _tracking_for.cache_clear()


def test_credentials_from_the_environment_or_one_sentence(tracking: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.tracking import create_run, get_tracking
    from core.tracking.writes import log_params

    with pytest.raises(StudioError) as caught:
        create_run("no credentials")
    assert str(caught.value) == (
        f"The MLflow server at {tracking} needs credentials; set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)."
    )
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", USER)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong-password")
    with pytest.raises(StudioError, match="rejected the credentials") as caught:
        create_run("wrong password")
    assert "wrong-password" not in str(caught.value)

    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    run_id = create_run("with credentials", {"backend": "local"})
    log_params(run_id, {"lr": "0.001"})
    assert get_tracking().client.get_run(run_id).data.params == {"lr": "0.001"}


def test_a_password_in_the_uri_moves_to_mlflows_variables(tracking: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from core.settings import reset_settings
    from core.tracking import create_run, get_tracking

    monkeypatch.setenv("STUDIO_MLFLOW_URI", tracking.replace("http://", f"http://{USER}:{PASSWORD}@"))
    reset_settings()
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "")  # monkeypatch restores them after the test
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "")
    create_run("uri credentials")
    assert get_tracking().uri == tracking  # what the studio shows and hands on
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == PASSWORD


def test_a_local_job_logs_with_them_and_shows_them_nowhere(tracking: str, demo: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.settings import get_settings
    from core.tracking import get_tracking
    from jobs import control
    from jobs.records import get_job, job_dir
    from tests.test_jobs_local import tiny, wait_until

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", USER)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    job = control.launch(tiny(demo, "stage=unet"))
    wait_until(lambda: (control.refresh(), get_job(job.id).status)[1] in ("succeeded", "failed", "stopped"), timeout=400, what="the job")
    job = get_job(job.id)
    logs = "".join(p.read_text(errors="replace") for p in job_dir(job.id).rglob("*.log"))
    assert job.status == "succeeded", logs[-3000:]
    run = get_tracking().client.get_run(job.mlflow_run_id)
    assert run.data.params and run.data.metrics  # the job itself logged to the basic-auth server
    assert PASSWORD not in logs
    assert PASSWORD not in json.dumps({**run.data.params, **run.data.tags})
    catalog = Path(get_settings().catalog_url.removeprefix("sqlite:///")).read_bytes()
    assert PASSWORD.encode() not in catalog


def test_sagemaker_gets_a_secret_name_and_the_job_reads_it(aws: str, tracking: str, moto_url: str, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    import os

    import boto3

    from core.settings import reset_settings
    from core.tracking import get_tracking
    from core.tracking.connection import _tracking_for
    from core.training.__main__ import main
    from core.training.config import build_config
    from jobs import control

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", USER)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    config = build_config({"preset": "tiny", "dataset": aws, "unet": {"steps": 40}})
    with pytest.raises(StudioError, match="STUDIO_MLFLOW_CREDENTIALS_SECRET") as caught:
        control.launch(config, backend="sagemaker", sagemaker=launch_options())
    assert "\n" not in str(caught.value)

    secrets = boto3.client("secretsmanager")
    secrets.create_secret(Name="studio/mlflow", SecretString=json.dumps({"username": USER, "password": PASSWORD}))
    monkeypatch.setenv("STUDIO_MLFLOW_CREDENTIALS_SECRET", "studio/mlflow")
    reset_settings()
    for action in ("reset-recording", "start-recording"):
        urllib.request.urlopen(urllib.request.Request(f"{moto_url}/moto-api/recorder/{action}", method="POST"))
    job = control.launch(config, backend="sagemaker", sagemaker=launch_options())
    urllib.request.urlopen(urllib.request.Request(f"{moto_url}/moto-api/recorder/stop-recording", method="POST"))
    (sent,) = recorded(moto_url, "SageMaker.CreateTrainingJob")
    assert sent["Environment"]["STUDIO_MLFLOW_URI"] == tracking
    assert sent["Environment"]["STUDIO_MLFLOW_CREDENTIALS_SECRET"] == "studio/mlflow"
    assert PASSWORD not in json.dumps(sent) and "MLFLOW_TRACKING_PASSWORD" not in json.dumps(sent)
    assert PASSWORD not in json.dumps(job.config)

    # In the container: no credentials in the environment, the secret's name and the job's role.
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
    _tracking_for.cache_clear()
    from core.tracking.credentials import load_secret

    load_secret("studio/mlflow")
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == PASSWORD
    assert get_tracking().client.get_run(job.mlflow_run_id).info.run_id == job.mlflow_run_id

    # A secret that is missing or holds something else stops the job at once, in one sentence.
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
    secrets.create_secret(Name="studio/other", SecretString="not json")
    for name, says in (("studio/missing", "Secrets Manager"), ("studio/other", "holds no MLflow credentials")):
        monkeypatch.setenv("STUDIO_MLFLOW_CREDENTIALS_SECRET", name)
        reset_settings()
        with pytest.raises(StudioError, match=says):
            load_secret(name)
        assert main(["--set", "preset=tiny"]) == 2
