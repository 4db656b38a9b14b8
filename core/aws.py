"""AWS in one place: the boto3 session the studio uses, and AWS errors said as one sentence.

boto3 is imported inside the functions: a studio that never touches S3 or SageMaker never pays
for its import. The endpoint comes from `AWS_ENDPOINT_URL` (boto3 reads it), so the same calls
reach AWS, an S3-compatible store or moto.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from core.errors import StudioError
from core.settings import get_settings

if TYPE_CHECKING:
    import boto3

NO_CREDENTIALS = "No AWS credentials were found; set AWS_PROFILE or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY."
# Codes that mean the keys themselves are wrong, whichever service answers.
REJECTED_CREDENTIALS = {
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "ExpiredTokenException", "InvalidToken",
    "InvalidClientTokenId", "UnrecognizedClientException", "AuthFailure",
}  # fmt: skip
ACCESS_DENIED = {"AccessDenied", "AccessDeniedException", "403"}
NOT_FOUND = {"404", "NotFound"}  # what HEAD requests say: they carry no error body
# Throttling (SlowDown, Throttling), 5xx answers and dropped connections are retried by botocore
# with exponential backoff and jitter; this many attempts in all unless AWS_MAX_ATTEMPTS says.
MAX_ATTEMPTS = 8


def session(region: str | None = None) -> boto3.Session:
    import boto3

    return boto3.Session(region_name=region or get_settings().aws_region)


def retry_config() -> Any:
    """botocore's client config: the standard retry mode (or AWS_RETRY_MODE), MAX_ATTEMPTS attempts
    (or AWS_MAX_ATTEMPTS; the tests set 1). Given explicitly, it wins over boto3's own defaults."""
    from botocore.config import Config

    attempts = int(os.environ.get("AWS_MAX_ATTEMPTS") or MAX_ATTEMPTS)
    mode = os.environ.get("AWS_RETRY_MODE") or "standard"
    return Config(retries={"mode": mode, "total_max_attempts": max(1, attempts)})


def client(service: str, region: str | None = None, from_session: boto3.Session | None = None) -> Any:
    """The one way the studio makes a boto3 client: retries with backoff (see `retry_config`)."""
    return (from_session or session(region)).client(service, config=retry_config())


def credentialed_session() -> boto3.Session:
    """The session, refused at once when no credentials are configured (before anything is uploaded)."""
    found = session()
    if found.get_credentials() is None:
        raise StudioError(NO_CREDENTIALS)
    return found


def error_code(exc: Exception) -> str:
    """The error code of a botocore ClientError ("" for anything else)."""
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def explain(exc: Exception, service: str = "AWS", bucket: str | None = None, key: str | None = None) -> StudioError:
    """An AWS error as one sentence; `service`, `bucket` and `key` say what the request was about."""
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError, NoCredentialsError, PartialCredentialsError

    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return StudioError(NO_CREDENTIALS)
    if isinstance(exc, ConnectionError):
        where = exc.kwargs.get("endpoint_url") or exc.kwargs.get("proxy_url") or "its endpoint"
        return StudioError(f"{service} could not be reached at {where}; check the network or AWS_ENDPOINT_URL.")
    if isinstance(exc, HTTPClientError):  # dropped or timed out mid-request, after every retry
        where = exc.kwargs.get("endpoint_url") or "its endpoint"
        return StudioError(f"{service} at {where} kept dropping the connection; check the network and try again.")
    if isinstance(exc, ClientError):
        code = error_code(exc)
        message = exc.response.get("Error", {}).get("Message") or "no reason given"
        if code in REJECTED_CREDENTIALS:
            return StudioError("AWS rejected the credentials; check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE).")
        if code == "NoSuchBucket" or (code in NOT_FOUND and bucket and not key):
            return StudioError(f"The S3 bucket {bucket!r} does not exist.")
        if code == "NoSuchKey" or (code in NOT_FOUND and key):
            return StudioError(f"The S3 object s3://{bucket}/{key} does not exist.")
        if code in ACCESS_DENIED:
            return StudioError(f"These AWS credentials may not use {f'the S3 bucket {bucket!r}' if bucket else service}: {message}")
        meta = exc.response.get("ResponseMetadata", {})
        if meta.get("MaxAttemptsReached") and meta.get("RetryAttempts"):
            attempts = meta["RetryAttempts"] + 1
            return StudioError(f"{service} kept failing ({code}: {message}) after {attempts} attempts; try again later.")
        return StudioError(f"{service} refused the request ({code}): {message}")
    return StudioError(f"The {service} request failed: {exc}")


@contextmanager
def aws_errors(service: str = "AWS", bucket: str | None = None, key: str | None = None) -> Iterator[None]:
    """Raise the AWS errors of the block as one sentence (see `explain`)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except StudioError:
        raise
    except Exception as exc:
        # boto3's transfer manager wraps the botocore error in its own (S3UploadFailedError, ...).
        cause = exc if isinstance(exc, ClientError | BotoCoreError) else exc.__cause__ or exc.__context__
        if isinstance(cause, ClientError | BotoCoreError):
            raise explain(cause, service, bucket, key) from None
        raise
