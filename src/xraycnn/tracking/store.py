"""Which MLflow store to use, and the experiment inside it.

The default store is SQLite at `<repo>/mlruns/mlflow.db` with artifacts in `<repo>/mlruns/artifacts`, both
absolute; `MLFLOW_TRACKING_URI` (or `--tracking-uri`) overrides it. For any `sqlite:///DIR/NAME.db` the
artifacts go to `DIR/artifacts`, so a store is one self-contained folder; a tracking server stores
artifacts where it was told to.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import mlflow
from filelock import FileLock
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode
from mlflow.tracking import MlflowClient

from xraycnn import paths
from xraycnn.errors import XrayCnnError


@dataclass(frozen=True)
class TrackingStore:
    uri: str
    artifact_root: Path | None  # None: the tracking server decides

    def client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)


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
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return TrackingStore(uri, artifact_root)


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
    on a new store would otherwise both run MLflow's schema migrations, and one fails half-way."""
    with FileLock(f"{db}.init.lock", timeout=300):
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
