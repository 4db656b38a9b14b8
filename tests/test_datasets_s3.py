"""Pushing a dataset version to S3: moto's real HTTP server on 127.0.0.1, resume, credentials."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.datasets.push import push_version
from core.datasets.versions import find_version
from core.errors import StudioError
from tests.servers import moto_bucket
from tests.test_datasets import import_dataset, sidecar_folder

BUCKET = "studio-datasets"


@pytest.fixture
def s3(home: Path, moto_url: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    return moto_bucket(monkeypatch, moto_url, BUCKET)


def test_push_resumes_and_records_the_uri(s3, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    version = import_dataset("cats", folder=sidecar_folder(tmp_path / "src", 5)).version
    seen: list[float] = []
    first = push_version(f"cats@{version}", bucket=BUCKET, prefix="team", progress=lambda f, _t: seen.append(f))
    assert first.uploaded == 6 and first.skipped == 0 and seen[-1] == pytest.approx(1.0)
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="team/datasets/cats/")["Contents"])
    assert f"team/datasets/cats/{version}/manifest.jsonl" in keys and len(keys) == 6
    assert find_version("cats", version).s3_uri == f"s3://{BUCKET}/team/datasets/cats/{version}/"

    # an interrupted push: two images and the manifest never arrived
    for key in [k for k in keys if k.endswith(".png")][:2] + [f"team/datasets/cats/{version}/manifest.jsonl"]:
        s3.delete_object(Bucket=BUCKET, Key=key)
    again = push_version("cats", bucket=BUCKET, prefix="team")
    assert (again.uploaded, again.skipped) == (3, 3)
    head = s3.head_object(Bucket=BUCKET, Key=f"team/datasets/cats/{version}/manifest.jsonl", ChecksumMode="ENABLED")
    assert head.get("ChecksumSHA256")


def test_push_without_credentials_or_bucket(s3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    import_dataset("cats", folder=sidecar_folder(tmp_path / "src", 1))
    with pytest.raises(StudioError, match="No S3 bucket"):
        push_version("cats")
    with pytest.raises(StudioError, match="does not exist"):
        push_version("cats", bucket="no-such-bucket")
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(StudioError, match="No AWS credentials"):
        push_version("cats", bucket=BUCKET)
