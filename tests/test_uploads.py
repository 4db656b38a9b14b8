"""Browser uploads streamed to disk: the staging area (core/datasets/staging.py) and the upload route
(app/uploads.py) on a real uvicorn server, whose memory stays flat while a large file arrives."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import time
import zipfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from PIL import Image

from core.access import User, acting_as
from core.datasets import staging
from core.errors import StudioError
from tests.servers import free_port

ALICE = User("alice@example.com", "trainer")
BOB = User("bob@example.com", "trainer")


def png(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), colour).save(buffer, "PNG")
    return buffer.getvalue()


async def chunks_of(data: bytes, size: int = 7) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def send(batch: str, name: str, data: bytes) -> int:
    return asyncio.run(staging.receive_file(batch, name, chunks_of(data, 4096)))


def small_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for i in range(3):
            zf.writestr(f"cats/cat{i}.png", png((40 * i, 90, 200)))
            zf.writestr(f"cats/cat{i}.txt", f"a photo of cat number {i}")
    return buffer.getvalue()


def test_a_zip_and_a_folder_arrive_in_chunks_and_import(home: Path) -> None:
    batch = staging.new_batch()
    assert send(batch, "cats.zip", small_zip()) > 0
    assert staging.ready_batches() == []  # not offered while the browser may still be sending
    with pytest.raises(StudioError, match="still arriving"):
        staging.import_batch("cats", batch)
    [ready] = [staging.complete(batch)]
    assert staging.ready_batches() == [ready] and ready.files == 1 and ready.names == ["cats.zip"]
    report = staging.import_batch("cats", batch)
    assert report.imported == 3 and report.version
    assert staging.ready_batches() == [] and not (staging.uploads_dir() / batch).exists()

    folder = staging.new_batch()
    for i in range(2):
        send(folder, f"dogs/train/dog{i}.png", png((200, 40 * i, 30)))
        send(folder, f"dogs/train/dog{i}.txt", b"a photo of a dog")
    staging.complete(folder)
    report = staging.import_batch("dogs", folder)
    assert report.imported == 2 and report.caption_sources == {".txt sidecar": 2}


def test_a_refused_name_keeps_the_batch_for_another_try(home: Path) -> None:
    batch = staging.new_batch()
    send(batch, "cats.zip", small_zip())
    staging.complete(batch)
    with pytest.raises(StudioError):
        staging.import_batch("Bad Name!", batch)
    assert [b.id for b in staging.ready_batches()] == [batch]
    staging.discard(batch)
    assert staging.ready_batches() == []


@pytest.mark.parametrize("name", ["../escape.png", "/etc/passwd", "C:/x.png", "a/../../b.png"])
def test_names_that_leave_the_batch_are_refused(home: Path, name: str) -> None:
    batch = staging.new_batch()
    with pytest.raises(StudioError):
        send(batch, name, png((1, 2, 3)))
    assert not list((staging.uploads_dir() / batch / staging.FILES).rglob("*"))


def test_limits_hold_while_bytes_arrive_and_leave_no_partial_file(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.settings import reset_settings

    monkeypatch.setenv("STUDIO_IMPORT_MAX_ENTRY_BYTES", "10000")
    monkeypatch.setenv("STUDIO_IMPORT_MAX_BYTES", "30000")
    reset_settings()
    batch = staging.new_batch()
    with pytest.raises(StudioError, match="STUDIO_IMPORT_MAX_ENTRY_BYTES"):
        send(batch, "big.png", b"x" * 10_001)
    send(batch, "archive.zip", b"z" * 25_000)  # a zip may be as large as the whole upload
    with pytest.raises(StudioError, match="STUDIO_IMPORT_MAX_BYTES"):
        send(batch, "more.zip", b"z" * 6_000)
    files = [p.name for p in (staging.uploads_dir() / batch / staging.FILES).iterdir()]
    assert files == ["archive.zip"]  # no temporary of either refused file is left


def test_a_batch_belongs_to_the_user_who_sent_it(home: Path) -> None:
    with acting_as(ALICE):
        batch = staging.new_batch()
        send(batch, "cats.zip", small_zip())
        staging.complete(batch)
    with acting_as(BOB):
        assert staging.ready_batches() == []
        for attempt in (lambda: staging.import_batch("stolen", batch), lambda: staging.discard(batch), lambda: send(batch, "x.png", b"x")):
            with pytest.raises(StudioError, match="another user"):
                attempt()
    with acting_as(User("vera@example.com", "viewer")), pytest.raises(StudioError, match="viewer"):
        staging.new_batch()
    with acting_as(ALICE):
        assert [b.id for b in staging.ready_batches()] == [batch]


def test_abandoned_batches_are_removed_after_a_day(home: Path) -> None:
    batch = staging.new_batch()
    send(batch, "half.zip", b"z" * 100)
    staging.forget_stale(now=time.time() + staging.KEEP_SECONDS - 60)
    assert (staging.uploads_dir() / batch).exists()
    staging.forget_stale(now=time.time() + staging.KEEP_SECONDS + 60)
    assert not (staging.uploads_dir() / batch).exists()


@pytest.fixture
def api_server(home: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """The studio's API (no playground) in its own process, so its memory can be read."""
    port = free_port()
    code = (
        "import uvicorn; from app.api import create_app; "
        f"uvicorn.run(create_app(playground=False, bind_host='127.0.0.1'), host='127.0.0.1', port={port}, log_level='warning')"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "STUDIO_HOME": str(home)})
    from jobs.team_stack import wait_http

    try:
        wait_http(proc, "the API", f"http://127.0.0.1:{port}/healthz", 120)
        yield f"http://127.0.0.1:{port}", proc
    finally:
        proc.terminate()
        proc.wait(30)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_a_large_upload_streams_to_disk_through_the_route(api_server: tuple[str, subprocess.Popen], home: Path) -> None:
    import httpx

    url, proc = api_server
    headers = {"X-Studio-Upload": "1"}
    assert httpx.post(f"{url}/uploads/batches").status_code == 403  # no header: another site's form
    assert "Choose a folder" in httpx.get(f"{url}/uploads/").text
    batch = httpx.post(f"{url}/uploads/batches", headers=headers).json()["id"]
    before = peak_rss_mb(proc.pid)
    size = 400 << 20

    def body() -> Iterator[bytes]:
        block = os.urandom(1 << 20)
        for _ in range(size >> 20):
            yield block

    answer = httpx.put(f"{url}/uploads/batches/{batch}/files", params={"name": "big.zip"}, content=body(), headers=headers, timeout=300)
    assert answer.status_code == 200 and answer.json() == {"bytes": size}
    assert (staging.uploads_dir() / batch / staging.FILES / "big.zip").stat().st_size == size
    # The server held a few chunks at a time, not the file: its peak memory grew by far less than 400 MB.
    assert peak_rss_mb(proc.pid) - before < 64
    refused = httpx.put(f"{url}/uploads/batches/{batch}/files", params={"name": "../x.png"}, content=b"x", headers=headers)
    assert refused.status_code == 400 and "outside the upload" in refused.json()["detail"]
    done = httpx.post(f"{url}/uploads/batches/{batch}/complete", headers=headers).json()
    assert done["files"] == 1 and done["bytes"] == size
