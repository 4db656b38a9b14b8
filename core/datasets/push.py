"""Push a dataset version to S3 under `<STUDIO_S3_PREFIX>/datasets/<name>/<version>/`.

Uploads go through boto3's managed transfer (multipart for large files, SHA-256 checksums checked
by S3). Objects already there with the same size are skipped: image keys are content-addressed, so
an interrupted push simply resumes. The manifest goes last, so its presence means the push is whole.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel
from sqlalchemy import update

from core.datasets.versions import MANIFEST, find_version, materialize, read_manifest, resolve, version_prefix
from core.db import DatasetVersion, session_scope
from core.errors import StudioError
from core.settings import get_settings

CREDENTIAL_ERRORS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "AuthFailure"}


class PushResult(BaseModel):
    uri: str
    uploaded: int
    skipped: int
    bytes_uploaded: int


def s3_client():  # type: ignore[no-untyped-def]
    import boto3

    session = boto3.session.Session(region_name=get_settings().aws_region)
    if session.get_credentials() is None:
        raise StudioError("No AWS credentials were found; set AWS_PROFILE or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.")
    return session.client("s3")


def explain(exc: Exception, bucket: str) -> StudioError:
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    if isinstance(exc, NoCredentialsError):
        return StudioError("No AWS credentials were found; set AWS_PROFILE or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.")
    if isinstance(exc, EndpointConnectionError):
        return StudioError(f"S3 could not be reached ({exc.kwargs.get('endpoint_url', 'no endpoint')}); check the network or AWS_ENDPOINT_URL.")
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        if code in CREDENTIAL_ERRORS:
            return StudioError("AWS rejected the credentials; check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE).")
        if code in ("AccessDenied", "403"):
            return StudioError(f"These AWS credentials may not write to the bucket {bucket!r}.")
        if code in ("NoSuchBucket", "404"):
            return StudioError(f"The S3 bucket {bucket!r} does not exist.")
        return StudioError(f"S3 refused the push ({code}): {exc.response.get('Error', {}).get('Message', '')}")
    return StudioError(f"The push to S3 failed: {exc}")


def push_version(
    ref: str,
    bucket: str | None = None,
    prefix: str | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> PushResult:
    from boto3.s3.transfer import TransferConfig
    from botocore.exceptions import BotoCoreError, ClientError

    settings = get_settings()
    bucket = bucket or settings.s3_bucket
    if not bucket:
        raise StudioError("No S3 bucket is configured; set STUDIO_S3_BUCKET or pass --bucket.")
    prefix = (settings.s3_prefix if prefix is None else prefix).strip("/")
    name, version = resolve(ref)
    base = version_prefix(name, version)
    root = f"{prefix}/{base}" if prefix else base
    source = materialize(name, version)
    files = sorted({item.file for item in read_manifest(name, version)}) + [MANIFEST]
    sizes = {f: (source / f).stat().st_size for f in files}
    total = sum(sizes.values()) or 1
    client = s3_client()
    config = TransferConfig(multipart_threshold=8 << 20, multipart_chunksize=8 << 20, max_concurrency=4)
    done = 0
    lock = threading.Lock()

    def advance(n: int) -> None:
        nonlocal done
        with lock:
            done += n
            if progress:
                progress(min(done / total, 1.0), f"Pushed {done / 1e6:.1f} of {total / 1e6:.1f} MB")

    try:
        present: dict[str, int] = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=root + "/"):
            for obj in page.get("Contents", []):
                present[obj["Key"]] = obj["Size"]
        uploaded = skipped = sent = 0
        for file in files:
            key = f"{root}/{file}"
            if present.get(key) == sizes[file]:
                skipped += 1
                advance(sizes[file])
                continue
            client.upload_file(
                str(Path(source) / file), bucket, key, ExtraArgs={"ChecksumAlgorithm": "SHA256"}, Config=config, Callback=advance
            )
            uploaded += 1
            sent += sizes[file]
    except (ClientError, BotoCoreError) as exc:
        raise explain(exc, bucket) from None
    except Exception as exc:  # boto3's transfer manager wraps client errors in its own
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, ClientError | BotoCoreError):
            raise explain(cause, bucket) from None
        raise
    uri = f"s3://{bucket}/{root}/"
    row = find_version(name, version)
    with session_scope() as session:
        session.execute(update(DatasetVersion).where(DatasetVersion.id == row.id).values(s3_uri=uri))
    return PushResult(uri=uri, uploaded=uploaded, skipped=skipped, bytes_uploaded=sent)
