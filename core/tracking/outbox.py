"""What a run's writer could not send to MLflow yet, kept on disk beside `metrics.jsonl` and sent later.

A training appends every metric row to `metrics.jsonl` anyway (the Train page reads it), so the
file itself is the queue of metrics; the outbox folder next to it holds the rest:

    mlflow-outbox/metrics.sent   byte offset in metrics.jsonl up to which MLflow has every row
    mlflow-outbox/calls.jsonl    params, tags, texts, images and artifact folders not sent yet, in order
    mlflow-outbox/images/        the PNGs of the image calls in calls.jsonl

`deliver` sends what is pending and moves the offset (and the calls file) past what MLflow took,
so whoever delivers — the training when the server answers again, the supervisor when the job
ends, the relay for a cloud job's copy — goes on where the last one stopped. A row sent twice
(delivered, but the answer lost) is the same metric, which the store keeps once.

A finished job's leftovers are retried by `retry` (the local backend's refresh calls it), at most
once per backoff window recorded on disk in `mlflow-outbox/next_attempt` (10 s, doubling up to an
hour, cleared once MLflow took everything), with MLflow's HTTP retries off and a short timeout, so
a page refreshing every two seconds waits on a dead server once per window at most.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from PIL import Image

from core.files import atomic_write_text
from core.tracking.writes import log_artifacts, log_image, log_params, log_rows, log_text, parse_rows, set_tags

log = logging.getLogger(__name__)
ROWS_PER_DELIVERY = 5000  # a long backlog goes in slices, each one recorded as sent
NEXT_ATTEMPT = "next_attempt"  # {"at": epoch seconds, "wait": seconds}: when `retry` may try again
FIRST_WAIT_S, MAX_WAIT_S = 10.0, 3600.0
# One quick try: MLflow's own defaults retry a request for minutes, the backoff above is the retry.
QUICK_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}


@contextlib.contextmanager
def quick_http() -> Iterator[None]:
    """MLflow's HTTP settings for one quick try (MLflow reads them from the environment per request)."""
    before = {key: os.environ.get(key) for key in QUICK_HTTP}
    os.environ.update(QUICK_HTTP)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _gone(path: Path) -> bool:
    """A file or folder removed since it was queued: nothing is left to send, and it must not block the calls after it."""
    if not path.exists():
        log.warning("%s is gone; it is not sent to MLflow.", path)
    return not path.exists()


def _send_image(run_id: str, call: dict[str, Any], folder: Path) -> None:
    path = folder / "images" / call["file"]
    if not _gone(path):
        with Image.open(path) as image:
            log_image(run_id, image, call["key"], call["step"])


def _send_artifacts(run_id: str, call: dict[str, Any], _folder: Path) -> None:
    source = Path(call["folder"])
    if not _gone(source):
        log_artifacts(run_id, source, call["path"])


SENDERS: dict[str, Callable[[str, dict[str, Any], Path], None]] = {
    "params": lambda run_id, call, _: log_params(run_id, call["params"]),
    "tags": lambda run_id, call, _: set_tags(run_id, call["tags"]),
    "text": lambda run_id, call, _: log_text(run_id, call["text"], call["name"]),
    "image": _send_image,
    "artifacts": _send_artifacts,
}


class Outbox:
    def __init__(self, metrics_file: Path) -> None:
        self.metrics_file = metrics_file
        self.folder = metrics_file.parent / "mlflow-outbox"
        self.offset_file = self.folder / "metrics.sent"
        self.calls_file = self.folder / "calls.jsonl"

    # ---- queueing ---------------------------------------------------------------------------------
    def add(self, call: str, **args: Any) -> None:
        """Queue one call of SENDERS (metrics need no queueing: they are in metrics.jsonl)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with self.calls_file.open("a") as f:
            f.write(json.dumps({"call": call, **args}) + "\n")

    def add_image(self, image: Image.Image, key: str, step: int) -> None:
        name = f"{uuid.uuid4().hex}.png"
        (self.folder / "images").mkdir(parents=True, exist_ok=True)
        image.save(self.folder / "images" / name)
        self.add("image", file=name, key=key, step=step)

    # ---- delivery -----------------------------------------------------------------------------------
    def pending(self) -> bool:
        """Whether anything waits: a queued call, or a complete metric row past what MLflow took."""
        if self.calls_file.is_file():
            return True
        offset = self._offset()
        if not self.metrics_file.is_file() or offset >= self.metrics_file.stat().st_size:
            return False
        with self.metrics_file.open("rb") as f:
            f.seek(offset)
            return b"\n" in f.read(1 << 20)

    def retry(self, run_id: str, now: float | None = None) -> bool | None:
        """Deliver what waits if its backoff window has passed: True when MLflow took it all, False when
        it failed (the next window, twice as long, is on disk), None when nothing was due or waiting."""
        backoff = self.folder / NEXT_ATTEMPT
        if not self.folder.is_dir():
            return None
        with open(self.folder / ".retry.lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return None  # another page or process is trying right now
            if not self.pending():
                backoff.unlink(missing_ok=True)
                return None
            try:
                last = json.loads(backoff.read_text())
                at, wait = float(last["at"]), float(last["wait"])
            except (OSError, ValueError, KeyError, TypeError):
                at, wait = 0.0, 0.0
            now = time.time() if now is None else now
            if now < at:
                return None
            wait = min(MAX_WAIT_S, wait * 2) if wait else FIRST_WAIT_S
            atomic_write_text(backoff, json.dumps({"at": now + wait, "wait": wait}))  # before trying: a slow try counts
            try:
                with quick_http():
                    self.deliver(run_id)
            except Exception as exc:  # down, slow or refusing: try again after `wait`
                log.warning(
                    "MLflow still does not take the leftovers in %s (%s); next try in %.0f s.", self.folder, exc, wait
                )
                return False
            backoff.unlink(missing_ok=True)
            return True

    def deliver(self, run_id: str) -> int:
        """Send every pending metric row and call to the run; returns the rows sent. Raises when
        MLflow refuses or cannot be reached, keeping what was not sent for the next delivery."""
        rows = self._deliver_rows(run_id)
        self._deliver_calls(run_id)
        return rows

    def _offset(self) -> int:
        offset = int(self.offset_file.read_text() or 0) if self.offset_file.is_file() else 0
        size = self.metrics_file.stat().st_size if self.metrics_file.is_file() else 0
        return offset if offset <= size else 0  # a new, shorter file: send it all again

    def _deliver_rows(self, run_id: str) -> int:
        offset, sent = self._offset(), 0
        if not self.metrics_file.is_file() or offset == self.metrics_file.stat().st_size:
            return 0
        with self.metrics_file.open("rb") as f:
            f.seek(offset)
            while True:
                lines = [line for line in (f.readline() for _ in range(ROWS_PER_DELIVERY)) if line.endswith(b"\n")]
                if not lines:  # a last line without its newline is still being written
                    return sent
                log_rows(run_id, parse_rows(line.decode("utf-8", "replace") for line in lines))
                offset += sum(len(line) for line in lines)
                sent += len(lines)
                self.folder.mkdir(parents=True, exist_ok=True)
                atomic_write_text(self.offset_file, str(offset))
                f.seek(offset)

    def _deliver_calls(self, run_id: str) -> None:
        if not self.calls_file.is_file():
            return
        calls = []
        for line in self.calls_file.read_text().splitlines():
            try:
                calls.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # cut short by a killed process: nothing to send
        while calls:
            SENDERS[calls[0]["call"]](run_id, calls[0], self.folder)
            done = calls.pop(0)
            atomic_write_text(self.calls_file, "".join(json.dumps(c) + "\n" for c in calls))
            if done["call"] == "image":
                (self.folder / "images" / done["file"]).unlink(missing_ok=True)
        self.calls_file.unlink()
