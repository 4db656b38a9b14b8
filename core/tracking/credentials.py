"""Credentials for the MLflow server: passed on to whoever talks to it, never shown.

MLflow itself reads them from the environment on every request: MLFLOW_TRACKING_USERNAME and
MLFLOW_TRACKING_PASSWORD (MLflow's basic-auth app) or MLFLOW_TRACKING_TOKEN (a bearer token). A
`user:password@` in STUDIO_MLFLOW_URI is moved into the first two before MLflow, a log line or a job
sees the URI (`adopt`), so the URI the studio shows and hands on never holds a password.

A local job inherits the variables from the studio. A SageMaker job never gets them in its
environment: it gets the name of an AWS Secrets Manager secret (STUDIO_MLFLOW_CREDENTIALS_SECRET)
and reads it with its role when it starts (`load_secret`), setting the variables in its own process.
"""

from __future__ import annotations

import json
import os
import re
from urllib.parse import unquote, urlsplit, urlunsplit

from core.aws import aws_errors, client
from core.errors import StudioError

USERNAME, PASSWORD, TOKEN = "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"
# The secret's JSON keys and the variables they become.
SECRET_KEYS = {"username": USERNAME, "password": PASSWORD, "token": TOKEN}
SECRET_FORMAT = '{"username": ..., "password": ...} or {"token": ...}'
_USERINFO = re.compile(r"(\b[a-z][\w+.-]*://)[^/@\s]+@", re.IGNORECASE)


def split_uri(uri: str) -> tuple[str, str | None, str | None]:
    """`http://user:pw@host/x` -> (`http://host/x`, user, pw); a URI without them comes back as is."""
    parts = urlsplit(uri)
    if not parts.scheme.startswith("http") or parts.username is None:
        return uri, None, None
    host = parts.netloc.rsplit("@", 1)[1]
    password = unquote(parts.password) if parts.password is not None else None
    return urlunsplit(parts._replace(netloc=host)), unquote(parts.username), password


def adopt(uri: str) -> str:
    """The URI without its `user:password@`, which become MLflow's variables unless those are set."""
    clean, username, password = split_uri(uri)
    if username is not None and not os.environ.get(USERNAME) and not os.environ.get(TOKEN):
        os.environ[USERNAME] = username
        os.environ[PASSWORD] = password or ""
    return clean


def present(uri: str = "") -> bool:
    """Whether the studio holds credentials for MLflow (in the environment or in `uri`)."""
    return any(os.environ.get(k) for k in (USERNAME, TOKEN)) or split_uri(uri)[1] is not None


def redact(text: str) -> str:
    """`text` with every URL's `user:password@` and the password or token in the environment masked."""
    text = _USERINFO.sub(r"\1***@", text)
    for key in (PASSWORD, TOKEN):
        value = os.environ.get(key) or ""
        if len(value) >= 4:
            text = text.replace(value, "***")
    return text


def load_secret(name: str) -> None:
    """Set MLflow's variables from the Secrets Manager secret `name` (its JSON: SECRET_FORMAT).

    Nothing is fetched when the variables are set already (a local job inherits the studio's)."""
    if present():
        return
    with aws_errors("Secrets Manager"):
        text = client("secretsmanager").get_secret_value(SecretId=name).get("SecretString") or ""
    try:
        found = json.loads(text)
    except ValueError:
        found = None
    values = {SECRET_KEYS[k]: str(v) for k, v in found.items() if k in SECRET_KEYS and v} if isinstance(found, dict) else {}
    if not (values.get(TOKEN) or (values.get(USERNAME) and values.get(PASSWORD))):
        raise StudioError(f"The secret {name} holds no MLflow credentials; store them in it as JSON: {SECRET_FORMAT}.")
    os.environ.update(values)
