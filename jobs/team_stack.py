"""The team stack on one machine (`studio team up`, `make team`): a PostgreSQL cluster from Debian's
`postgresql` under STUDIO_HOME/team/postgres, `mlflow server` on it, the studio and its HTTP API.

Each server runs as a child in a session of its own (a Ctrl-C in the terminal reaches only the
`studio` process, which then stops the children newest first and PostgreSQL last, with a fast
shutdown). PostgreSQL refuses to run as root, so as root it runs as `nobody`. It always listens on
127.0.0.1 only, with trust authentication: the other servers bind `host`, which is 127.0.0.1
unless told otherwise. The test fixtures start their throwaway PostgreSQL and `mlflow server`
with the same functions.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from core.errors import StudioError

REPO = Path(__file__).resolve().parent.parent
PG_ROOT = Path("/usr/lib/postgresql")
PG_SUPERUSER = "postgres"
UNPRIVILEGED = ("nobody", "nogroup")
WILDCARD_ADDRESSES = {"", "0.0.0.0", "::"}


class Interrupted(Exception):
    """A stop was asked for (SIGINT/SIGTERM) while the stack was still starting."""


# ---------------------------------------------------------------- PostgreSQL


def pg_bin() -> Path:
    """The newest installed PostgreSQL server's bin folder (Debian's `postgresql`)."""
    found = sorted(
        (p for p in PG_ROOT.glob("*/bin") if (p / "initdb").is_file() and (p / "postgres").is_file()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if not found:
        raise StudioError(f"PostgreSQL's server is not installed (no initdb in {PG_ROOT}/*/bin); install the Debian package `postgresql` (`make system-deps`).")
    return found[-1]


def _as_user() -> dict[str, object]:
    """Popen arguments that drop root to `nobody` (PostgreSQL will not run as root); none otherwise."""
    if os.geteuid() != 0:
        return {}
    return {"user": UNPRIVILEGED[0], "group": UNPRIVILEGED[1], "extra_groups": []}


def init_cluster(data: Path, fast: bool = False) -> bool:
    """initdb a cluster in `data` unless one is there already; returns whether it made one.

    Superuser `postgres`, trust authentication, UTF-8. `fast` skips the fsync (throwaway clusters)."""
    if (data / "PG_VERSION").is_file():
        return False
    bin_dir = pg_bin()
    data.mkdir(parents=True, exist_ok=True, mode=0o700)
    if os.geteuid() == 0:
        shutil.chown(data, *UNPRIVILEGED)
        reach = subprocess.run(["test", "-w", str(data)], **_as_user())  # type: ignore[call-overload]
        if reach.returncode != 0:
            raise StudioError(
                f"PostgreSQL runs as `nobody` when the studio runs as root, and `nobody` cannot reach {data}; "
                "set STUDIO_HOME to a folder every user can reach, or run as a normal user."
            )
    os.chmod(data, 0o700)
    argv = [str(bin_dir / "initdb"), "-D", str(data), "-U", PG_SUPERUSER, "-A", "trust", "-E", "UTF8"]
    done = subprocess.run([*argv, *(["--no-sync"] if fast else [])], capture_output=True, text=True, cwd=data, timeout=180, **_as_user())  # type: ignore[call-overload]
    if done.returncode != 0:
        raise StudioError(f"initdb could not create a PostgreSQL cluster in {data}: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")
    return True


def start_postgres(data: Path, port: int, log: IO[bytes], socket_dir: Path | None = None, fast: bool = False) -> subprocess.Popen:
    """`postgres` on 127.0.0.1:port over the cluster in `data`, in a session of its own (not yet ready:
    see `wait_postgres`). Unix sockets only in `socket_dir`, else none."""
    settings = {
        "listen_addresses": "127.0.0.1",
        "unix_socket_directories": str(socket_dir) if socket_dir else "",
        **({"fsync": "off", "full_page_writes": "off", "synchronous_commit": "off"} if fast else {}),
    }
    argv = [str(pg_bin() / "postgres"), "-D", str(data), "-p", str(port)]
    for key, value in settings.items():
        argv += ["-c", f"{key}={value}"]
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=data, start_new_session=True, **_as_user())  # type: ignore[call-overload]


def postgres_url(port: int, database: str = "postgres") -> str:
    return f"postgresql+psycopg://{PG_SUPERUSER}@127.0.0.1:{port}/{database}"


def wait_postgres(proc: subprocess.Popen, port: int, timeout: float = 60, stopping: threading.Event | None = None) -> None:
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(host="127.0.0.1", port=port, user=PG_SUPERUSER, dbname="postgres", connect_timeout=2):
                return
        except psycopg.OperationalError:
            pass
        _check_waiting(proc, "PostgreSQL", deadline, stopping)
        time.sleep(0.2)


def ensure_database(url: str) -> None:
    """CREATE DATABASE for the database a PostgreSQL SQLAlchemy URL names, unless it exists (its user
    connects to the server's `postgres` database to do it)."""
    import psycopg
    from psycopg import sql
    from sqlalchemy import make_url

    target = make_url(url)
    connect = {"host": target.host or "127.0.0.1", "port": target.port or 5432, "user": target.username, "password": target.password}
    with psycopg.connect(**{k: v for k, v in connect.items() if v is not None}, dbname="postgres", autocommit=True, connect_timeout=10) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (target.database,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(target.database)))


def create_database(port: int, name: str) -> str:
    """The database `name` on the cluster at 127.0.0.1:port, made unless it exists; returns its SQLAlchemy URL."""
    url = postgres_url(port, name)
    ensure_database(url)
    return url


def stop_postgres(proc: subprocess.Popen, immediate: bool = False, timeout: float = 60) -> None:
    """A fast shutdown (SIGINT: sessions end, the cluster is left clean), or an immediate one (SIGQUIT)."""
    _stop(proc, signal.SIGQUIT if immediate else signal.SIGINT, timeout, group=False)


# ---------------------------------------------------------------- MLflow server and HTTP waits


def mlflow_command(backend_store_uri: str, artifacts_destination: str, host: str, port: int) -> list[str]:
    """`mlflow server` with proxied artifacts and one worker."""
    return [sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", backend_store_uri,
            "--artifacts-destination", artifacts_destination,
            "--host", host, "--port", str(port), "--workers", "1"]  # fmt: skip


def mlflow_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The server's environment: no job execution (it would start a Huey consumer), telemetry off."""
    return {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true", **(extra or {})}


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def wait_http(proc: subprocess.Popen, name: str, url: str, timeout: float = 180, stopping: threading.Event | None = None) -> None:
    """Wait until `url` answers 200; a StudioError if `proc` exits first or time runs out."""
    deadline = time.monotonic() + timeout
    while not http_ok(url):
        _check_waiting(proc, name, deadline, stopping)
        time.sleep(0.3)


def _check_waiting(proc: subprocess.Popen, name: str, deadline: float, stopping: threading.Event | None) -> None:
    if stopping is not None and stopping.is_set():
        raise Interrupted
    if proc.poll() is not None:
        raise StudioError(f"{name} exited with status {proc.returncode} while starting.")
    if time.monotonic() > deadline:
        raise StudioError(f"{name} did not become ready in time.")


def _stop(proc: subprocess.Popen, sig: int, timeout: float, group: bool = True) -> None:
    """`sig` to the process (or its whole session), then SIGKILL to the session after `timeout` s."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig) if group else os.kill(proc.pid, sig)
            proc.wait(timeout=timeout)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            pass
    try:  # anything left in its session (workers of a server that died first, or did not stop)
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if proc.poll() is None:
        proc.wait(timeout=30)


# ---------------------------------------------------------------- the stack


def display_host(host: str) -> str:
    """The address this machine reaches a server listening on `host` at."""
    bare = host.strip("[]")
    local = "127.0.0.1" if bare in WILDCARD_ADDRESSES else bare
    return f"[{local}]" if ":" in local else local


@dataclass(frozen=True)
class TeamOptions:
    home: Path
    host: str = "127.0.0.1"
    studio_port: int = 8501
    api_port: int = 8000
    playground_port: int = 7860
    mlflow_port: int = 5000
    postgres_port: int = 5432
    s3_bucket: str | None = None
    s3_prefix: str = ""

    @property
    def folder(self) -> Path:
        return self.home.resolve() / "team"

    @property
    def artifacts_destination(self) -> str:
        if self.s3_bucket:
            prefix = self.s3_prefix.strip("/")
            return f"s3://{self.s3_bucket}/{prefix + '/' if prefix else ''}mlflow"
        return (self.folder / "mlartifacts").as_uri()

    def url(self, port: int) -> str:
        return f"http://{display_host(self.host)}:{port}"

    @property
    def urls(self) -> dict[str, str]:
        return {
            "studio": self.url(self.studio_port),
            "api": self.url(self.api_port),
            "api_docs": self.url(self.api_port) + "/docs",
            "mlflow": self.url(self.mlflow_port),
            "catalog": postgres_url(self.postgres_port, "studio"),
        }


@dataclass
class Child:
    name: str
    proc: subprocess.Popen
    log: Path
    stop: Callable[[subprocess.Popen], None]


@dataclass
class TeamStack:
    """Start with `start()`, then `watch()` until a stop is asked for or a child dies; `stop()` always."""

    options: TeamOptions
    say: Callable[[str], None] = print
    stopping: threading.Event = field(default_factory=threading.Event)
    children: list[Child] = field(default_factory=list)
    _logs: list[IO[bytes]] = field(default_factory=list)

    def _log(self, name: str) -> tuple[IO[bytes], Path]:
        path = self.options.folder / "logs" / f"{name}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        out = open(path, "ab")  # noqa: SIM115  (closed in stop())
        self._logs.append(out)
        return out, path

    def _spawn(self, name: str, log_name: str, argv: list[str], env: dict[str, str], stop: Callable[[subprocess.Popen], None]) -> Child:
        out, path = self._log(log_name)
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        child = Child(name, proc, path, stop)
        self.children.append(child)
        return child

    def start(self) -> dict[str, str]:
        """PostgreSQL (its cluster made once), the two databases, the catalog's migrations, then MLflow,
        the HTTP API and the studio at once; returns the URLs once every one answers."""
        from sqlalchemy import create_engine

        from core.db import migrate

        o = self.options
        data = o.folder / "postgres"
        if init_cluster(data):
            self.say(f"Created a PostgreSQL cluster in {data}.")
        out, path = self._log("postgres")
        pg = start_postgres(data, o.postgres_port, out)
        self.children.append(Child("PostgreSQL", pg, path, stop_postgres))
        self._wait(lambda: wait_postgres(pg, o.postgres_port, stopping=self.stopping), "PostgreSQL", path)
        catalog_url = create_database(o.postgres_port, "studio")
        mlflow_store = create_database(o.postgres_port, "mlflow")
        engine = create_engine(catalog_url)
        try:
            migrate(engine)
        finally:
            engine.dispose()

        studio_env = {
            **os.environ,
            "STUDIO_HOME": str(o.home.resolve()),
            "STUDIO_DATABASE_URL": catalog_url,
            "STUDIO_MLFLOW_URI": f"http://{display_host(o.host)}:{o.mlflow_port}",
            "STUDIO_PLAYGROUND_HOST": o.host,
            "STUDIO_PLAYGROUND_PORT": str(o.playground_port),
        }
        if o.s3_bucket:
            studio_env["STUDIO_S3_BUCKET"] = o.s3_bucket
        term = lambda proc: _stop(proc, signal.SIGTERM, 30)  # noqa: E731
        mlflow = self._spawn("The MLflow server", "mlflow", mlflow_command(mlflow_store, o.artifacts_destination, o.host, o.mlflow_port), mlflow_env(), term)
        api = self._spawn("The HTTP API", "api", [sys.executable, "-m", "app.cli", "serve", "--host", o.host, "--port", str(o.api_port)], studio_env, term)
        studio = self._spawn(
            "The studio",
            "studio",
            [sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.address", o.host, "--server.port", str(o.studio_port),
             "--server.headless", "true", "--browser.serverAddress", display_host(o.host).strip("[]")],
            studio_env,
            term,
        )  # fmt: skip
        for child, url in ((mlflow, o.url(o.mlflow_port) + "/health"), (api, o.url(o.api_port) + "/healthz"), (studio, o.url(o.studio_port) + "/_stcore/health")):
            self._wait(lambda c=child, u=url: wait_http(c.proc, c.name, u, stopping=self.stopping), child.name, child.log)
        return o.urls

    def _wait(self, wait: Callable[[], None], name: str, log: Path) -> None:
        try:
            wait()
        except StudioError as exc:
            raise StudioError(f"{str(exc).rstrip('.')}; see {log}.") from None

    def watch(self, interval: float = 0.5) -> Child | None:
        """Block until a stop is asked for (None) or a child exits (that child)."""
        while not self.stopping.wait(interval):
            for child in self.children:
                if child.proc.poll() is not None:
                    return child
        return None

    def stop(self) -> None:
        """Stop every child, newest first (PostgreSQL, the oldest, with a fast shutdown)."""
        for child in reversed(self.children):
            child.stop(child.proc)
        self.children.clear()
        for out in self._logs:
            out.close()
        self._logs.clear()


def run(options: TeamOptions, say: Callable[[str], None] = print, ready: Callable[[dict[str, str]], None] | None = None) -> None:
    """Start the stack, report it ready, and keep it until SIGINT/SIGTERM (then stop it and return) or
    until a child dies (then stop the rest and raise a StudioError naming it)."""
    stack = TeamStack(options, say)
    previous = {sig: signal.signal(sig, lambda *_: stack.stopping.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    died: Child | None = None
    try:
        try:
            urls = stack.start()
        except Interrupted:
            return
        (ready or (lambda u: None))(urls)
        died = stack.watch()
    finally:
        if stack.children:
            say("Stopping the team stack…")
        stack.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if died is not None:
        code = died.proc.returncode
        how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        raise StudioError(f"{died.name} stopped unexpectedly ({how}), so the rest of the team stack was stopped; see {died.log}.")


if __name__ == "__main__":  # `python -m jobs.team_stack ensure-database URL` (compose.yaml's MLflow service)
    if sys.argv[1:2] != ["ensure-database"] or len(sys.argv) != 3:
        sys.exit("usage: python -m jobs.team_stack ensure-database POSTGRESQL_URL")
    ensure_database(sys.argv[2])
