"""Which MLflow store to use, and the experiment inside it.

The default store is SQLite at `<repo>/mlruns/mlflow.db` with artifacts in `<repo>/mlruns/artifacts`;
`MLFLOW_TRACKING_URI` (or `--tracking-uri`) overrides it. For any `sqlite:///DIR/NAME.db` the artifacts go to
`DIR/artifacts`, so a store is one self-contained folder, which may be moved or copied (MLflow records the
locations absolute; tracking.relocate points them into the folder again); a tracking server stores
artifacts where it was told to.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import mlflow
from filelock import FileLock
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode
from mlflow.tracking import MlflowClient

from xraycnn import paths
from xraycnn.errors import TrackingStoreUnavailableError, XrayCnnError
from xraycnn.tracking.relocate import relocate_if_moved


@dataclass(frozen=True)
class TrackingStore:
    uri: str
    artifact_root: Path | None  # None: the tracking server decides
    _client: list[MlflowClient] = field(default_factory=list, init=False, repr=False, compare=False)

    def client(self) -> MlflowClient:
        """The store's one client in this process (made on first use)."""
        if not self._client:
            self._client.append(MlflowClient(tracking_uri=self.uri, registry_uri=self.uri))
        return self._client[0]


def resolve_store(uri: str | None = None) -> TrackingStore:
    """The store named by `uri`, else `$MLFLOW_TRACKING_URI`, else the project's SQLite store; made current."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or paths.default_tracking_uri()
    artifact_root: Path | None = None
    db = sqlite_file(uri)
    if db is not None:
        uri = f"sqlite:///{db}"
        db.parent.mkdir(parents=True, exist_ok=True)
        artifact_root = beside_database(db)
        _open_sqlite_once(uri, db)
    elif "://" not in uri or uri.startswith("file:"):
        raise XrayCnnError(
            f"tracking URI {uri!r} is a file store, which MLflow no longer opens; use a database, e.g. "
            f"sqlite:///{Path(uri.removeprefix('file://')).expanduser().resolve() / 'mlflow.db'}, or a server URL"
        )
    elif uri.startswith(("http://", "https://")):
        fail_fast_over_http()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return TrackingStore(uri, artifact_root)


def fail_fast_over_http() -> None:
    """MLflow's client retries a request to a server that is down for about 4 minutes before it fails; the
    tracking spool retries writes itself, for as long as an outage lasts, and must know the store is away to
    say so. A user's own settings win."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")


def first_line(exc: BaseException) -> str:
    """An error in one short line: for a request that never reached the server, what the socket said."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    socket_error = re.search(r"\[Errno -?\d+\] [^'\")]+", line)
    if socket_error and " failed with exception " in line:
        line = f"{line.split(' failed with exception ')[0]} failed: {socket_error.group(0)}"
    return f"{type(exc).__name__}: {line}"[:300]


def store_answers(client: MlflowClient) -> bool:
    """Whether the store answers a query at all (a cheap one); a write it refuses is another matter."""
    try:
        client.search_experiments(max_results=1)
    except Exception:
        return False
    return True


FIRST_BACKOFF_S = 0.5
# How late the end of an outage may be noticed: a store that is away costs one refused connection per try.
MAX_BACKOFF_S = 4.0


def wait_for_store(store: TrackingStore, notice: Callable[[str], None], timeout: float) -> None:
    """Return once the store answers; one line when it does not, one when it does; give up after `timeout`."""
    started = time.monotonic()
    waited, backoff = False, FIRST_BACKOFF_S
    client = store.client()
    while True:
        try:
            client.search_experiments(max_results=1)
            break
        except Exception as exc:
            if time.monotonic() - started > timeout:
                raise TrackingStoreUnavailableError(
                    f"the tracking store {store.uri} did not answer for {timeout:.0f} s ({first_line(exc)}); start "
                    "it (or check --tracking-uri / MLFLOW_TRACKING_URI) and run the same command again"
                ) from None
            if not waited:
                notice(
                    f"Tracking store {store.uri} unreachable ({first_line(exc)}); waiting for it (up to "
                    f"{timeout:.0f} s; Ctrl-C stops)."
                )
                waited = True
            time.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)
    if waited:
        notice(f"Tracking store {store.uri} answers after {time.monotonic() - started:.0f} s.")


def sqlite_file(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI, absolute; None for any other URI."""
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri.removeprefix("sqlite:///")).expanduser()
    return db if db.is_absolute() else db.resolve()


def beside_database(db: Path) -> Path:
    """Where a SQLite store keeps its artifacts: next to the file, so the store is one self-contained folder."""
    return db.parent / "artifacts"


def _open_sqlite_once(uri: str, db: Path) -> None:
    """Open (and on first use create and migrate) a SQLite store under a lock: two searches started at once
    on a new store would otherwise both run MLflow's schema migrations, and one fails half-way. A store
    moved or copied from elsewhere first has its artifact locations pointed into its own folder
    (tracking.relocate)."""
    with FileLock(f"{db}.init.lock", timeout=300):
        moved = relocate_if_moved(db)
        if moved is not None:
            print(f"note: {moved.describe()}", file=sys.stderr)
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        client.search_experiments(max_results=1)  # the tracking store, cached per process from here on
        client.search_registered_models(max_results=1)  # and the registry's, on the same file


def _safe_folder(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def ensure_experiment(store: TrackingStore, name: str, tags: dict[str, str] | None = None) -> str:
    """The id of MLflow experiment `name`, created (artifacts under the store's root) if missing."""
    client = store.client()
    existing = client.get_experiment_by_name(name)
    if existing is None:
        location = None
        if store.artifact_root is not None:
            location = (store.artifact_root / _safe_folder(name)).as_uri()
        try:
            return client.create_experiment(name, artifact_location=location, tags=tags)
        except MlflowException as exc:  # created by a concurrent search between the lookup and here
            if exc.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                raise
            existing = client.get_experiment_by_name(name)
            assert existing is not None
    if existing.lifecycle_stage == "deleted":
        raise XrayCnnError(
            f"MLflow experiment {name!r} is deleted but still holds its name; restore it in the MLflow UI "
            f"(or `mlflow experiments restore --experiment-id {existing.experiment_id}`), or purge it with `mlflow gc`"
        )
    return existing.experiment_id


_SECRET_QUERY_KEYS = re.compile(r"pass|pwd|secret|token|key|credential", re.IGNORECASE)


def redact(uri: str) -> str:
    """`uri` fit to print: the password of its user part and the values of secret-looking query parameters
    (`password=`, `sslpassword=`, `token=` ...) replaced by `***`."""
    parts = urlsplit(uri)
    if not parts.scheme or (not parts.netloc and not parts.query):
        return uri
    netloc = parts.netloc
    if "@" in netloc:
        user, host = netloc.rsplit("@", 1)
        netloc = f"{user.split(':', 1)[0]}:***@{host}" if ":" in user else netloc
    query = "&".join(
        f"{key}=***" if _SECRET_QUERY_KEYS.search(key) else (f"{key}={value}" if sep else key)
        for key, sep, value in (pair.partition("=") for pair in parts.query.split("&") if pair)
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
