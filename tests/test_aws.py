"""AWS errors as one sentence (core.aws): real errors from moto's server on 127.0.0.1 and from
botocore itself (no credentials, nothing listening), and botocore's Stubber for the codes moto
does not send (rejected keys, access denied)."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import StudioError
from tests.servers import free_port, use_moto

BUCKET = "studio-aws"


@pytest.fixture
def moto(home: Path, moto_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    from core.aws import client

    use_moto(monkeypatch, moto_url)
    s3 = client("s3")
    if BUCKET not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
        s3.create_bucket(Bucket=BUCKET)
    return moto_url


def sentence(call, service: str = "AWS", bucket: str | None = None, key: str | None = None) -> str:  # type: ignore[no-untyped-def]
    """What `aws_errors` makes of the error `call` raises."""
    from core.aws import aws_errors

    with pytest.raises(StudioError) as raised, aws_errors(service, bucket, key):
        call()
    return str(raised.value)


def test_moto_errors_become_one_sentence(moto: str, tmp_path: Path) -> None:
    from core.aws import client

    s3, sagemaker, iam = client("s3"), client("sagemaker"), client("iam")
    assert sentence(lambda: s3.list_objects_v2(Bucket="no-such-bucket"), "S3", "no-such-bucket") == "The S3 bucket 'no-such-bucket' does not exist."
    # HEAD answers carry no error body: a bare 404, told apart by what was asked for.
    assert sentence(lambda: s3.head_bucket(Bucket="no-such-bucket"), "S3", "no-such-bucket") == "The S3 bucket 'no-such-bucket' does not exist."
    assert sentence(lambda: s3.head_object(Bucket=BUCKET, Key="a/b"), "S3", BUCKET, "a/b") == f"The S3 object s3://{BUCKET}/a/b does not exist."
    assert sentence(lambda: s3.get_object(Bucket=BUCKET, Key="a/b"), "S3", BUCKET, "a/b") == f"The S3 object s3://{BUCKET}/a/b does not exist."
    missing = sentence(lambda: sagemaker.describe_training_job(TrainingJobName="studio-nope"), "SageMaker")
    assert missing.startswith("SageMaker refused the request (ValidationException): ") and "studio-nope" in missing
    assert sentence(lambda: iam.get_role(RoleName="nobody"), "IAM").startswith("IAM refused the request (NoSuchEntity): ")

    # boto3's transfer manager wraps the botocore error in its own; the sentence is the same.
    (tmp_path / "f.txt").write_text("x")
    upload = sentence(lambda: s3.upload_file(str(tmp_path / "f.txt"), "no-such-bucket", "f.txt"), "S3", "no-such-bucket", "f.txt")
    assert upload == "The S3 bucket 'no-such-bucket' does not exist."


def test_the_object_store_speaks_the_same_sentences(moto: str) -> None:
    from core.storage import S3Store

    store = S3Store(BUCKET, prefix="team")
    store.put_bytes("x/y.txt", b"hello")
    assert store.get_bytes("x/y.txt") == b"hello" and list(store.list("x")) == ["x/y.txt"]
    with pytest.raises(StudioError, match=rf"^The S3 object s3://{BUCKET}/team/x/z.txt does not exist\.$"):
        store.get_bytes("x/z.txt")
    with pytest.raises(StudioError, match=r"^The S3 bucket 'no-such-bucket' does not exist\.$"):
        S3Store("no-such-bucket").put_bytes("k", b"")


def test_no_credentials_and_no_endpoint(moto: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.aws import NO_CREDENTIALS, client, credentialed_session

    port = free_port()  # closed again: nothing listens there
    with monkeypatch.context() as env:
        env.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
        reason = sentence(lambda: client("s3").list_buckets(), "S3")
    assert reason == f"S3 could not be reached at http://127.0.0.1:{port}/; check the network or AWS_ENDPOINT_URL."

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    assert sentence(lambda: client("s3").list_buckets(), "S3") == NO_CREDENTIALS
    with pytest.raises(StudioError, match="^No AWS credentials were found"):
        credentialed_session()


def test_codes_moto_does_not_send(moto: str) -> None:
    from botocore.stub import Stubber

    from core.aws import client

    s3 = client("s3")
    with Stubber(s3) as stub:
        stub.add_client_error("list_buckets", service_error_code="InvalidAccessKeyId", service_message="The key is not known.", http_status_code=403)
        stub.add_client_error("get_object", service_error_code="AccessDenied", service_message="Access Denied", http_status_code=403)
        stub.add_client_error("list_buckets", service_error_code="SlowDown", service_message="Reduce your request rate.", http_status_code=503)
        assert sentence(lambda: s3.list_buckets(), "S3").startswith("AWS rejected the credentials; check AWS_ACCESS_KEY_ID")
        assert sentence(lambda: s3.get_object(Bucket=BUCKET, Key="k"), "S3", BUCKET) == f"These AWS credentials may not use the S3 bucket '{BUCKET}': Access Denied"
        assert sentence(lambda: s3.list_buckets(), "S3") == "S3 refused the request (SlowDown): Reduce your request rate."


def test_a_sentence_raised_inside_passes_unchanged(moto: str) -> None:
    from botocore.exceptions import ClientError

    from core.aws import aws_errors, client

    with pytest.raises(StudioError, match="^The role is missing.$"), aws_errors("IAM"):
        try:
            client("iam").get_role(RoleName="nobody")
        except ClientError:
            raise StudioError("The role is missing.") from None
