"""The object store: a local folder by default, S3 (any endpoint) when a bucket is configured.

Keys are `/`-separated paths such as `datasets/<name>/<version>/manifest.jsonl`. Writes go to a
temporary name first and are renamed into place, so a reader never sees half a file. Every upload
to S3 goes through `upload`, which sends a SHA-256 checksum that S3 verifies before it stores
anything.
"""

from __future__ import annotations

import base64
import hashlib
import io
import shutil
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

from core.aws import aws_errors, client
from core.errors import StudioError
from core.files import atomic_copy, atomic_write_bytes, is_temp
from core.settings import Settings, get_settings


# Up to this size an object goes in one PutObject carrying the SHA-256 of the whole object; larger
# ones go in parts of this size, each with its own SHA-256.
PART_BYTES = 8 << 20


def sha256_base64(hexdigest: str) -> str:
    """A sha256 as S3 writes it (x-amz-checksum-sha256, ChecksumSHA256): base64 of the 32 bytes."""
    return base64.b64encode(bytes.fromhex(hexdigest)).decode()


def upload(
    s3: Any, bucket: str, key: str, source: bytes | Path, sha256: str | None = None, callback: Callable[[int], None] | None = None
) -> None:
    """Upload bytes or a file to s3://bucket/key with a SHA-256 checksum S3 verifies; the one way the studio uploads.

    Up to PART_BYTES, one PutObject carries the SHA-256 of the whole object: `sha256` when the caller
    knows what the content must hash to (content-addressed images, from the manifest), else the hash
    of the bytes read here. S3 refuses a body that does not match (BadDigest) and stores nothing, and
    the stored ChecksumSHA256 is the content's sha256, the one the manifest holds. Larger objects go
    in parts, each checked by S3 against its own SHA-256 (the object's checksum is then S3's checksum
    of the parts'); a refused part aborts the multipart upload. boto3's default would be CRC32.
    """
    from boto3.s3.transfer import TransferConfig

    size = len(source) if isinstance(source, bytes) else source.stat().st_size
    with aws_errors("S3", bucket, key):
        if size <= PART_BYTES:
            body = source if isinstance(source, bytes) else source.read_bytes()
            checksum = sha256_base64(sha256 or hashlib.sha256(body).hexdigest())
            s3.put_object(Bucket=bucket, Key=key, Body=body, ChecksumAlgorithm="SHA256", ChecksumSHA256=checksum)
            if callback:
                callback(size)
            return
        config = TransferConfig(multipart_threshold=PART_BYTES, multipart_chunksize=PART_BYTES, max_concurrency=4)
        args = {"ExtraArgs": {"ChecksumAlgorithm": "SHA256"}, "Config": config, "Callback": callback}
        if isinstance(source, bytes):
            s3.upload_fileobj(io.BytesIO(source), bucket, key, **args)
        else:
            s3.upload_file(str(source), bucket, key, **args)


class ObjectStore(Protocol):
    def put_bytes(self, key: str, data: bytes) -> None: ...
    def put_file(self, key: str, path: Path, sha256: str | None = None) -> None: ...
    def get_bytes(self, key: str) -> bytes: ...
    def download(self, key: str, dest: Path) -> None: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str) -> Iterator[str]: ...
    def delete_prefix(self, prefix: str) -> None: ...
    def uri(self, key: str) -> str: ...


class LocalStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise StudioError(f"The object key {key!r} points outside the store.")
        return path

    def put_bytes(self, key: str, data: bytes) -> None:
        atomic_write_bytes(self.path(key), data)

    def put_file(self, key: str, path: Path, sha256: str | None = None) -> None:
        atomic_copy(path, self.path(key))

    def get_bytes(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            raise StudioError(f"The object {key!r} does not exist in the store.") from None

    def download(self, key: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.path(key), dest)

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def list(self, prefix: str) -> Iterator[str]:
        base = self.path(prefix) if prefix else self.root
        if base.is_file():
            yield prefix
            return
        for path in sorted(base.rglob("*")):
            rel = path.relative_to(self.root)
            if path.is_file() and not is_temp(rel):
                yield rel.as_posix()

    def delete_prefix(self, prefix: str) -> None:
        path = self.path(prefix)
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()

    def uri(self, key: str) -> str:
        return self.path(key).as_uri()


class S3Store:
    def __init__(self, bucket: str, prefix: str = "", region: str = "us-east-1") -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client("s3", region)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _errors(self, key: str | None = None) -> AbstractContextManager[None]:
        return aws_errors("S3", self.bucket, self._key(key) if key is not None else None)

    def put_bytes(self, key: str, data: bytes) -> None:
        upload(self.client, self.bucket, self._key(key), data)

    def put_file(self, key: str, path: Path, sha256: str | None = None) -> None:
        """`sha256`: what the file must hash to (S3 refuses it otherwise); default its hash now."""
        upload(self.client, self.bucket, self._key(key), path, sha256)

    def get_bytes(self, key: str) -> bytes:
        with self._errors(key):
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()

    def download(self, key: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with self._errors(key):
            self.client.download_file(self.bucket, self._key(key), str(dest))

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError:
            return False

    def list(self, prefix: str) -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        strip = len(self.prefix) + 1 if self.prefix else 0
        with self._errors():
            pages = list(paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)))
        for page in pages:
            for obj in page.get("Contents", []):
                yield obj["Key"][strip:]

    def delete_prefix(self, prefix: str) -> None:
        for key in list(self.list(prefix)):
            with self._errors(key):
                self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"


def get_store(settings: Settings | None = None) -> ObjectStore:
    settings = settings or get_settings()
    if settings.s3_bucket:
        return S3Store(settings.s3_bucket, settings.s3_prefix, settings.aws_region)
    return LocalStore(settings.objects_dir)
