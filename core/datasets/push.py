"""Push a dataset version to S3 under `<STUDIO_S3_PREFIX>/datasets/<name>/<version>/`.

Uploads go through `core.storage.upload`: each image with the sha256 its manifest entry names,
which S3 checks before it stores the object (multipart for large files, each part checked). Objects
already there with the same size are skipped: image keys are content-addressed, so an interrupted
push simply resumes. The manifest goes last, so its presence means the push is whole.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel
from sqlalchemy import update

from core import audit
from core.access import require
from core.aws import aws_errors, client, credentialed_session
from core.datasets.versions import MANIFEST, find_version, materialize, read_manifest, resolve, version_prefix
from core.db import DatasetVersion, session_scope
from core.errors import StudioError
from core.settings import get_settings
from core.storage import upload


class PushResult(BaseModel):
    uri: str
    uploaded: int
    skipped: int
    bytes_uploaded: int


def push_version(
    ref: str,
    bucket: str | None = None,
    prefix: str | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> PushResult:
    require("push")
    settings = get_settings()
    bucket = bucket or settings.s3_bucket
    if not bucket:
        raise StudioError("No S3 bucket is configured; set STUDIO_S3_BUCKET or pass --bucket.")
    prefix = (settings.s3_prefix if prefix is None else prefix).strip("/")
    name, version = resolve(ref)
    base = version_prefix(name, version)
    root = f"{prefix}/{base}" if prefix else base
    source = materialize(name, version)
    shas = {item.file: item.sha256 for item in read_manifest(name, version)}
    files = sorted(shas) + [MANIFEST]
    sizes = {f: (source / f).stat().st_size for f in files}
    total = sum(sizes.values()) or 1
    s3 = client("s3", from_session=credentialed_session())
    done = 0
    lock = threading.Lock()

    def advance(n: int) -> None:
        nonlocal done
        with lock:
            done += n
            if progress:
                progress(min(done / total, 1.0), f"Pushed {done / 1e6:.1f} of {total / 1e6:.1f} MB")

    with aws_errors("S3", bucket):
        present: dict[str, int] = {}
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=root + "/"):
            for obj in page.get("Contents", []):
                present[obj["Key"]] = obj["Size"]
        uploaded = skipped = sent = 0
        for file in files:
            key = f"{root}/{file}"
            if present.get(key) == sizes[file]:
                skipped += 1
                advance(sizes[file])
                continue
            upload(s3, bucket, key, Path(source) / file, shas.get(file), advance)
            uploaded += 1
            sent += sizes[file]
    uri = f"s3://{bucket}/{root}/"
    row = find_version(name, version)
    with session_scope() as session:
        session.execute(update(DatasetVersion).where(DatasetVersion.id == row.id).values(s3_uri=uri))
    audit.record("dataset.push", ref, uri=uri)
    return PushResult(uri=uri, uploaded=uploaded, skipped=skipped, bytes_uploaded=sent)
