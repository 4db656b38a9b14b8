"""Every upload to S3 carries a SHA-256 checksum S3 verifies, against moto's server on 127.0.0.1: the
stored ChecksumSHA256 is the content's sha256 (the one the manifest names), and a body that does
not match is refused, said in one sentence, with nothing left behind."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import pytest

from core.errors import StudioError
from tests.servers import moto_bucket

BUCKET = "studio-checksums"


def stored_sha256(s3, key: str) -> str | None:  # type: ignore[no-untyped-def]
    return s3.head_object(Bucket=BUCKET, Key=key, ChecksumMode="ENABLED").get("ChecksumSHA256")


def b64sha(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


@pytest.fixture
def verifying_moto(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto keeps the x-amz-checksum-sha256 a client sends without checking it (a TODO in
    moto/s3/responses.py); S3 checks it and answers 400 BadDigest. The server runs in this process,
    so this teaches it to check the way S3 does."""
    from moto.s3.exceptions import S3ClientError
    from moto.s3.responses import S3Response

    original = S3Response._get_checksum

    def checked(self, response_headers):  # type: ignore[no-untyped-def]
        sent = self.headers.get("x-amz-checksum-sha256")
        if sent and sent != b64sha(self.body or b""):
            raise S3ClientError("BadDigest", "The SHA256 you specified did not match the calculated checksum.")
        return original(self, response_headers)

    monkeypatch.setattr(S3Response, "_get_checksum", checked)


def test_uploads_store_the_sha256_of_their_content(home: Path, moto_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from core.storage import PART_BYTES, S3Store

    s3 = moto_bucket(monkeypatch, moto_url, BUCKET)
    store = S3Store(BUCKET, prefix="team")
    store.put_bytes("a/small.txt", b"hello")
    assert stored_sha256(s3, "team/a/small.txt") == b64sha(b"hello")  # not boto3's default CRC32

    image = tmp_path / "image.png"
    image.write_bytes(os.urandom(3000))
    store.put_file("a/image.png", image, hashlib.sha256(image.read_bytes()).hexdigest())
    assert stored_sha256(s3, "team/a/image.png") == b64sha(image.read_bytes())

    large = tmp_path / "large.bin"
    large.write_bytes(os.urandom(PART_BYTES + 1000))
    store.put_file("a/large.bin", large)  # in parts: each part's SHA-256 checked, the object's is theirs
    assert stored_sha256(s3, "team/a/large.bin")
    assert store.get_bytes("a/large.bin") == large.read_bytes()


def test_a_dataset_version_and_its_push_carry_the_manifest_hashes(home: Path, moto_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from PIL import Image

    from core.datasets.push import push_version
    from core.datasets.versions import NewItem, read_manifest, write_version
    from core.settings import reset_settings

    s3 = moto_bucket(monkeypatch, moto_url, BUCKET)
    monkeypatch.setenv("STUDIO_S3_BUCKET", BUCKET)
    reset_settings()
    items = []
    for i in range(3):
        buf = io.BytesIO()
        Image.new("RGB", (16, 16), (60 * i, 0, 0)).save(buf, "PNG")
        items.append(NewItem(buf.getvalue(), "png", f"square {i}", 16, 16, "train"))
    version = write_version("squares", items)
    pushed = push_version(f"squares@{version}", bucket=BUCKET, prefix="pushed")
    assert pushed.uploaded == 4
    for entry in read_manifest("squares", version):
        expected = base64.b64encode(bytes.fromhex(entry.sha256)).decode()
        assert stored_sha256(s3, f"datasets/squares/{version}/{entry.file}") == expected
        assert stored_sha256(s3, f"pushed/datasets/squares/{version}/{entry.file}") == expected


def test_a_body_that_does_not_match_its_hash_is_refused_and_nothing_is_left(
    home: Path, moto_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, verifying_moto: None
) -> None:
    from core.storage import S3Store

    s3 = moto_bucket(monkeypatch, moto_url, BUCKET)
    image = tmp_path / "image.png"
    image.write_bytes(b"the bytes the manifest hashed")
    manifest_sha = hashlib.sha256(image.read_bytes()).hexdigest()
    image.write_bytes(b"the bytes after the disk rotted")  # what is read now is not what was hashed

    with pytest.raises(StudioError) as caught:
        S3Store(BUCKET).put_file("images/rotten.png", image, manifest_sha)
    message = str(caught.value)
    assert "BadDigest" in message and "\n" not in message and "Traceback" not in message
    assert "images/rotten.png" not in [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]

    S3Store(BUCKET).put_file("images/fine.png", image)  # its hash taken now: accepted
    assert stored_sha256(s3, "images/fine.png") == b64sha(image.read_bytes())
