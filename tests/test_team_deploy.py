"""The team stack's deployment: `compose.yaml` and `.dockerignore` read as Docker reads them, and
`studio team up` run for real (PostgreSQL, MLflow server, the HTTP API and the studio), stopped by Ctrl-C."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.servers import free_port

REPO = Path(__file__).resolve().parent.parent


def compose() -> dict:
    return yaml.safe_load((REPO / "compose.yaml").read_text())


def test_the_build_context_leaves_out_secrets_data_and_virtualenvs(tmp_path: Path) -> None:
    from docker.utils.build import exclude_paths  # docker-py: the .dockerignore matcher `docker build` uses

    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines() if line.strip() and not line.startswith("#")]
    context = tmp_path / "context"
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True)
    for name in listed.stdout.splitlines():  # the checkout's files, as `docker build .` would see them
        if (REPO / name).is_file():
            (context / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(REPO / name, context / name)
    planted = [".env", ".env.production", "studio-data/catalog.db", "team-data/x", ".venv/bin/python", ".venv-airflow/bin/python",
               ".git/HEAD", "app/__pycache__/x.pyc", ".pytest_cache/v", "sub/.env", "bench/results/run.tmp"]  # fmt: skip
    for name in planted:
        (context / name).parent.mkdir(parents=True, exist_ok=True)
        (context / name).write_text("secret")
    sent = set(exclude_paths(str(context), patterns))
    kept_out = {".env", ".env.production", "studio-data", "team-data", ".venv", ".venv-airflow", ".git", ".pytest_cache"}
    assert not {p for p in sent if p.split("/")[0] in kept_out or "__pycache__" in p.split("/") or p.endswith((".env", ".tmp"))}
    # What the image needs is still sent.
    assert {"Dockerfile", "pyproject.toml", "requirements.txt", "constraints.txt", "app/main.py", "core/settings.py", "jobs/team_stack.py"} <= sent
    assert ".streamlit/config.toml" in sent and "core/migrations/env.py" in sent


def test_compose_publishes_only_the_studio_and_checks_every_service() -> None:
    services = compose()["services"]
    assert {"studio", "api", "mlflow", "postgres"} <= services.keys()
    published = {name: s["ports"] for name, s in services.items() if s.get("ports")}
    assert list(published) == ["studio"]
    for port in published["studio"]:  # on the host's loopback unless STUDIO_PUBLISH_ADDRESS says otherwise
        assert str(port).startswith("${STUDIO_PUBLISH_ADDRESS:-127.0.0.1}:")
    assert {str(p).rsplit(":", 1)[1] for p in published["studio"]} == {"8501", "7860"}  # the pages and the Playground's iframe
    for name, service in services.items():
        assert "test" in service["healthcheck"], name
        assert "network_mode" not in service and not service.get("privileged") and "cap_add" not in service, name
        assert all(not str(v).startswith(("/", ".", "~")) for v in service.get("volumes", [])), f"{name} binds a host path"
    for name in ("studio", "api", "mlflow"):
        assert {"postgres"} <= set(services[name]["depends_on"]) and services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
        env = services[name]["environment"]
        assert env["MLFLOW_DISABLE_TELEMETRY"] == "true" and env["HF_HUB_DISABLE_TELEMETRY"] == "1"
    assert services["studio"]["depends_on"]["mlflow"]["condition"] == "service_healthy"
    # Secrets come from .env at run time (never baked into the image).
    assert services["studio"]["env_file"] and ".env" in str(services["studio"]["env_file"])
    assert ".env" in (REPO / ".dockerignore").read_text().split()


def _descendants(pid: int) -> dict[int, str]:
    """Every process below `pid` (pid → command line)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(") ", 1)[1].split()[1])
            except (OSError, IndexError):
                pass
    found, frontier = {}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in found:
                try:
                    found[child] = (Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")).decode()
                except OSError:
                    found[child] = ""
                frontier.append(child)
    return found


def _running(pid: int) -> bool:
    try:
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[0]) not in ("Z", "X")
    except (OSError, IndexError):
        return False


def test_team_up_without_postgresql_names_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from app.cli import main
    from jobs import team_stack

    monkeypatch.setattr(team_stack, "PG_ROOT", tmp_path / "no-postgresql")
    assert main(["team", "up", "--home", str(tmp_path / "home")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "`postgresql`" in err and err.count("\n") == 1


@pytest.mark.slow
@pytest.mark.xdist_group("team")
def test_studio_team_up_starts_the_stack_and_ctrl_c_stops_it() -> None:
    import psycopg

    if not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        pytest.skip("PostgreSQL's server is not installed (Debian package `postgresql`, `make system-deps`).")
    home = Path(tempfile.mkdtemp(prefix="studio-team-"))  # not under pytest's root-only tmp: `nobody` runs PostgreSQL
    os.chmod(home, 0o755)
    ports = {name: free_port() for name in ("port", "api-port", "playground-port", "mlflow-port", "postgres-port")}
    env = {k: v for k, v in os.environ.items() if k not in ("STUDIO_DATABASE_URL", "STUDIO_MLFLOW_URI", "STUDIO_S3_BUCKET")}
    argv = [sys.executable, "-m", "app.cli", "team", "up", "--json", "--home", str(home), *(f"--{k}={v}" for k, v in ports.items())]
    stderr = home / "stderr.log"
    with open(stderr, "wb") as err:
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=err, start_new_session=True)
    lines: list[str] = []

    def read() -> None:
        for raw in iter(proc.stdout.readline, b""):  # type: ignore[union-attr]
            lines.append(raw.decode())

    threading.Thread(target=read, daemon=True).start()
    children: dict[int, str] = {}
    try:
        deadline = time.monotonic() + 150
        while "}\n" not in lines:
            assert proc.poll() is None, f"studio team up exited {proc.returncode}: {stderr.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"the stack did not come up: {stderr.read_text()[-3000:]}"
            time.sleep(0.3)
        urls = json.loads("".join(lines))
        assert urls["studio"] == f"http://127.0.0.1:{ports['port']}" and urls["mlflow"] == f"http://127.0.0.1:{ports['mlflow-port']}"
        assert urls["catalog"] == f"postgresql+psycopg://postgres@127.0.0.1:{ports['postgres-port']}/studio"
        for url in (urls["studio"] + "/_stcore/health", urls["mlflow"] + "/health", urls["api"] + "/healthz"):
            with urllib.request.urlopen(url, timeout=10) as response:
                assert response.status == 200, url

        # The catalog and MLflow's store are databases of the cluster under STUDIO_HOME/team.
        assert (home / "team" / "postgres" / "PG_VERSION").is_file()
        with psycopg.connect(host="127.0.0.1", port=ports["postgres-port"], user="postgres", dbname="studio") as conn:
            assert conn.execute("SELECT version_num FROM studio_schema_version").fetchone()
            assert conn.execute("SELECT to_regclass('jobs')").fetchone() != (None,)
        with psycopg.connect(host="127.0.0.1", port=ports["postgres-port"], user="postgres", dbname="mlflow") as conn:
            assert conn.execute("SELECT count(*) FROM experiments").fetchone()[0] >= 1

        children = _descendants(proc.pid)
        commands = " | ".join(children.values())
        for program in ("bin/postgres", "mlflow server", "streamlit run app/main.py", "app.cli serve"):
            assert program in commands, commands
        proc.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal delivers to `studio`
        assert proc.wait(timeout=90) == 0, stderr.read_text()[-3000:]
        left = {pid: cmd for pid, cmd in children.items() if _running(pid)}
        assert not left, left
        assert "database system is shut down" in (home / "team" / "logs" / "postgres.log").read_text()
        assert "The team stack is stopped." in stderr.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for pid in children:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(home, ignore_errors=True)
