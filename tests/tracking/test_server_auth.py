"""The tracking server a distributed search starts, behind MLflow's basic-auth app when the MLflow client's
credentials are set: a request without them is refused, one with them answered, and the password is never
on the server's command line."""

from __future__ import annotations

import base64
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from xraycnn.errors import XrayCnnError
from xraycnn.tracking.server import BasicAuth, TrackingServer

pytestmark = pytest.mark.slow  # a real `mlflow server`

PASSWORD = "s3cret-pass-for-test"


def _status(url: str, authorization: str | None = None) -> int:
    request = urllib.request.Request(f"{url}/api/2.0/mlflow/experiments/search?max_results=1")
    if authorization:
        request.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_basic_auth_refuses_a_request_without_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "searcher")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    auth = BasicAuth.from_environment()
    assert auth is not None and PASSWORD not in repr(auth)
    server = TrackingServer(
        f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts", tmp_path / "logs" / "server.log", auth=auth
    )
    server.start()
    try:
        assert PASSWORD not in " ".join(map(str, server.process.args))
        assert _status(server.url) == 401
        wrong = base64.b64encode(b"searcher:wrong").decode()
        assert _status(server.url, f"Basic {wrong}") == 401
        right = base64.b64encode(f"searcher:{PASSWORD}".encode()).decode()
        assert _status(server.url, f"Basic {right}") == 200
        # MLflow's own client sends the credentials from the environment, as every process of a search does
        client = MlflowClient(server.url)
        experiment_id = client.create_experiment("behind-auth")
        assert client.get_experiment(experiment_id).name == "behind-auth"
    finally:
        server.stop()
    assert (tmp_path / "logs" / "auth" / "basic_auth.ini").stat().st_mode & 0o077 == 0  # the owner's only


def test_half_the_credentials_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "searcher")
    with pytest.raises(XrayCnnError, match="MLFLOW_TRACKING_PASSWORD is not"):
        BasicAuth.from_environment()
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")
    assert BasicAuth.from_environment() is None
