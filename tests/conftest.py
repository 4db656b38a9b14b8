"""Shared fixtures: a fresh STUDIO_HOME per test (real SQLite catalog, real MLflow store, local
object store), the demo dataset, and a tiny model trained for real once per worker."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("STUDIO_TORCH_THREADS", "1")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
# moto writes its request recording to ./moto_recording unless told otherwise.
os.environ.setdefault("MOTO_RECORDER_FILEPATH", os.path.join(tempfile.gettempdir(), f"moto-recording-{os.getpid()}.jsonl"))

import core  # noqa: E402,F401
import torch  # noqa: E402

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parent.parent

# A few steps of everything: enough to exercise every code path of the loop.
TINY_OVERRIDES = [
    "vae.steps=6",
    "unet.steps=6",
    "vae.batch_size=8",
    "unet.batch_size=8",
    "vae.warmup_steps=2",
    "unet.warmup_steps=2",
    "log_every=2",
    "validate_every=3",
    "sample_every=3",
    "checkpoint_every=3",
    "sample_steps=3",
    "sample_images_per_prompt=1",
]


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    """moto's server on 127.0.0.1, one per test module; pair it with `tests.servers.use_moto`."""
    from tests.servers import moto_server

    with moto_server() as url:
        yield url


def use_home(path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from core.settings import reset_settings

    monkeypatch.setenv("STUDIO_HOME", str(path))
    for key in ("STUDIO_DATABASE_URL", "STUDIO_MLFLOW_URI", "STUDIO_S3_BUCKET", "STUDIO_S3_PREFIX"):
        monkeypatch.delenv(key, raising=False)
    reset_settings()
    return path


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh, empty studio: its own catalog, MLflow store and object store."""
    yield use_home(tmp_path / "studio", monkeypatch)
    from core.settings import reset_settings

    reset_settings()


@pytest.fixture(scope="session")
def demo_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A studio home with the demo dataset, built once per worker; copy it before writing to it."""
    path = tmp_path_factory.mktemp("demo-home")
    env = {**os.environ, "STUDIO_HOME": str(path)}
    subprocess.run(
        [sys.executable, "-c", "from core.datasets.demo import ensure_demo_dataset; ensure_demo_dataset()"],
        env=env, cwd=REPO, check=True,
    )
    return path


@pytest.fixture
def demo(home: Path, demo_home: Path) -> str:
    """The demo dataset in this test's own home; returns its `name@version`."""
    import shutil

    shutil.rmtree(home, ignore_errors=True)
    shutil.copytree(demo_home, home)
    from core.datasets.demo import ensure_demo_dataset

    return ensure_demo_dataset()


def run_training(config_overrides: list[str], env: dict[str, str], *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    """Train in a subprocess, exactly as a job does: `python -m core.training`."""
    cmd = [sys.executable, "-m", "core.training", *(a for o in config_overrides for a in ("--set", o)), *extra]
    proc = subprocess.run(cmd, env={**os.environ, **env}, cwd=REPO, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"training failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory: pytest.TempPathFactory, demo_home: Path) -> Path:
    """A tiny model really trained for a few steps on the demo digits (diffusers layout)."""
    out = tmp_path_factory.mktemp("trained")
    run_training([*TINY_OVERRIDES, "dataset=digits", f"output_dir={out}"], {"STUDIO_HOME": str(demo_home)})
    return out / "model"


# Two real tiny trainings that differ in learning rate, seed, sampling cadence and prompt order,
# plus a failed run on another dataset: what the Runs page and `studio runs` browse and compare.
RUN_PROMPTS = ["a handwritten digit one", "a handwritten digit two", "a handwritten digit three"]
SEED_RUNS = """
import json, sys
from core.datasets.demo import demo_items
from core.datasets.versions import write_version
from core.tracking import create_run, get_tracking
items = demo_items()
mini = [i for i in items if i.split == "train"][:64] + [i for i in items if i.split == "val"][:16]
ref = "digits-mini@" + write_version("digits-mini", mini, note="80 demo digits")
runs = {name: create_run(name, {"dataset": ref, "preset": "tiny", "stage": "all", "backend": "local", "job_id": name})
        for name in ("tiny-a", "tiny-b")}
failed = create_run("broken-small", {"dataset": "other@0123456789ab", "preset": "small", "stage": "unet", "backend": "local"})
get_tracking().client.set_terminated(failed, "FAILED")
print(json.dumps({"dataset": ref, "runs": runs, "failed": failed}))
"""


@pytest.fixture(scope="session")
def runs_home(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A studio home with two real tiny training runs in MLflow, built once for all xdist workers.

    Returns {"home", "dataset", "runs": {"tiny-a": id, "tiny-b": id}, "failed": id}; copy the home
    (see `runs_store`) before writing to it.
    """
    import json
    from concurrent.futures import ThreadPoolExecutor

    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    root = root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root
    path = root / "runs-home"
    done = root / "runs-home.json"
    with FileLock(str(root / "runs-home.lock")):
        if not done.is_file():
            env = {**os.environ, "STUDIO_HOME": str(path)}
            seeded = json.loads(subprocess.run([sys.executable, "-c", SEED_RUNS], env=env, cwd=REPO, check=True, capture_output=True, text=True).stdout)
            base = [*TINY_OVERRIDES, f"dataset={seeded['dataset']}", "vae.steps=4", "checkpoint_every=100"]
            settings = {
                "tiny-a": [f"validation_prompts={RUN_PROMPTS}"],
                "tiny-b": [f"validation_prompts={RUN_PROMPTS[::-1]}", "unet.lr=0.003", "seed=1", "sample_every=2"],
            }

            def train(name: str) -> None:
                run_id = seeded["runs"][name]
                run_training([*base, *settings[name], f"output_dir={path / 'outputs' / name}", f"mlflow_run_id={run_id}"], {"STUDIO_HOME": str(path)})

            with ThreadPoolExecutor(2) as pool:
                list(pool.map(train, settings))
            finish = "from core.tracking import get_tracking; import sys; [get_tracking().client.set_terminated(r, 'FINISHED') for r in sys.argv[1:]]"
            subprocess.run([sys.executable, "-c", finish, *seeded["runs"].values()], env=env, cwd=REPO, check=True)
            done.write_text(json.dumps({**seeded, "home": str(path)}))
    return json.loads(done.read_text())


@pytest.fixture
def runs_store(runs_home: dict, home: Path) -> dict:
    """A private, writable copy of `runs_home`, used as this test's STUDIO_HOME."""
    import shutil

    shutil.rmtree(home, ignore_errors=True)
    shutil.copytree(runs_home["home"], home, ignore=shutil.ignore_patterns("cache", "outputs"))
    return {**runs_home, "home": str(home)}


@pytest.fixture(scope="session")
def export_home(tmp_path_factory: pytest.TempPathFactory, trained_model: Path) -> dict:
    """A studio home with one finished run holding `trained_model`, exported to ONNX for real
    (catalog row, MLflow artifacts, registry version). Returns {"home", "run_id", "export_id", "path"}."""
    from core.settings import reset_settings

    path = tmp_path_factory.mktemp("export-home") / "studio"
    with pytest.MonkeyPatch.context() as mp:
        use_home(path, mp)
        from core.export.exporter import export_model
        from core.tracking import create_run, get_tracking

        run_id = create_run("tiny-trained", {"preset": "tiny"})
        get_tracking().client.log_artifacts(run_id, str(trained_model), "model")
        get_tracking().client.set_terminated(run_id, "FINISHED")
        record = export_model(run_id)
    reset_settings()
    return {"home": str(path), "run_id": run_id, "export_id": record.id, "path": record.path}


@pytest.fixture
def exported(export_home: dict, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    """`export_home` as this test's STUDIO_HOME (read it; write only what the test cleans up)."""
    from core.settings import reset_settings

    use_home(Path(export_home["home"]), monkeypatch)
    yield export_home
    reset_settings()


# tests/airflow runs in Airflow's own environment (`make test-airflow`); the main suite leaves it out.
import importlib.util  # noqa: E402

if importlib.util.find_spec("airflow") is None:
    collect_ignore = ["airflow"]


# A throwaway PostgreSQL cluster (Debian's postgresql), one per test session and worker, started
# as `studio team up` starts its own (jobs/team_stack.py): as root (CI) it runs as `nobody`, in a
# folder nobody owns.
@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The URL of a fresh cluster's `postgres` database (trust auth on 127.0.0.1)."""
    import shutil

    from core.errors import StudioError
    from jobs import team_stack
    from tests.servers import free_port

    try:
        team_stack.pg_bin()
    except StudioError as exc:
        pytest.skip(str(exc))
    folder = Path(tempfile.mkdtemp(prefix="studio-pg-"))
    os.chmod(folder, 0o755)
    data, port = folder / "data", free_port()
    log = open(folder / "server.log", "wb")  # noqa: SIM115  (closed below)
    server = None
    try:
        team_stack.init_cluster(data, fast=True)
        server = team_stack.start_postgres(data, port, log, socket_dir=data, fast=True)
        try:
            team_stack.wait_postgres(server, port, timeout=120)
        except StudioError as exc:
            raise AssertionError(f"PostgreSQL did not start: {exc}\n{(folder / 'server.log').read_text()}") from exc
        yield team_stack.postgres_url(port)
    finally:
        if server is not None:
            team_stack.stop_postgres(server, immediate=True)
        log.close()
        shutil.rmtree(folder, ignore_errors=True)


def new_postgres_database(server_url: str) -> str:
    """CREATE DATABASE on the test cluster; returns its SQLAlchemy URL."""
    import uuid

    import psycopg
    from sqlalchemy import make_url

    url = make_url(server_url)
    name = f"studio_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(host=url.host, port=url.port, user=url.username, dbname=url.database, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return url.set(database=name).render_as_string(hide_password=False)


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog(request: pytest.FixtureRequest, home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """This test's studio with its catalog on SQLite (the embedded default, in `home`) or on a
    fresh PostgreSQL database of the test cluster; yields the catalog URL."""
    from core.db import reset_engines
    from core.settings import get_settings, reset_settings

    if request.param == "postgresql":
        monkeypatch.setenv("STUDIO_DATABASE_URL", new_postgres_database(request.getfixturevalue("postgres_server")))
        reset_settings()
    reset_engines()
    yield get_settings().catalog_url
    reset_engines()
