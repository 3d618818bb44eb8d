"""A SQLite store that was moved or copied: its artifact locations made to point into its own folder again.

MLflow records every artifact location absolute (each experiment's, each run's, each logged model's and
model version's): a store folder copied or moved elsewhere would go on reading and writing the artifacts of
the old place, or fail where that place is gone. A project store keeps its artifacts beside its database
(`<folder>/artifacts`, tracking.store.beside_database), so when its database records locations under another
folder's `artifacts`, the store has moved: each such location is rewritten to the same path under this
folder, in one transaction, after a copy of the database is kept beside it. Locations elsewhere (a tracking
server's `mlflow-artifacts:`, a cloud bucket) are left as they are.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ARTIFACTS = "artifacts"
# (table, column) of MLflow's schema that hold artifact locations, as URIs (file://...) or bare paths
LOCATION_COLUMNS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("logged_models", "artifact_location"),
    ("model_versions", "source"),
    ("model_versions", "storage_location"),
)


@dataclass(frozen=True)
class Relocation:
    old_folder: str  # the store folder the database recorded (a path)
    new_folder: str
    locations: int  # how many were rewritten
    backup: Path

    def describe(self) -> str:
        return (
            f"this store was moved or copied from {self.old_folder}: {self.locations} artifact location(s) now point "
            f"into {self.new_folder} (the database before: {self.backup.name})"
        )


def _columns(connection: sqlite3.Connection) -> list[tuple[str, str]]:
    tables = {row[0] for row in connection.execute("select name from sqlite_master where type = 'table'")}
    present = []
    for table, column in LOCATION_COLUMNS:
        if table in tables and column in {row[1] for row in connection.execute(f"pragma table_info({table})")}:
            present.append((table, column))
    return present


def _recorded_folders(connection: sqlite3.Connection) -> set[str]:
    """The store folders the experiments' locations name (`<folder>/artifacts/<experiment>`), as paths."""
    folders = set()
    for (location,) in connection.execute("select artifact_location from experiments"):
        path = str(location or "").removeprefix("file://")
        head, marker, _ = path.rpartition(f"/{ARTIFACTS}/")
        if marker and head.startswith("/"):
            folders.add(head)
    return folders


def relocate_if_moved(db: Path) -> Relocation | None:
    """Rewrite the artifact locations of the SQLite store `db` that point into another store folder's
    `artifacts` to this one's; None when there is nothing to rewrite (a new store, or one in place)."""
    if not db.is_file():
        return None
    new_folder = str(db.parent.resolve())
    connection = sqlite3.connect(db, timeout=60, isolation_level=None)  # transactions as written below
    try:
        if "experiments" not in {r[0] for r in connection.execute("select name from sqlite_master")}:
            return None
        if not _recorded_folders(connection) - {new_folder}:
            return None
        backup = db.with_name(f"{db.name}.before-move-{datetime.now(UTC):%Y%m%dT%H%M%SZ}")
        copy = sqlite3.connect(backup)
        try:
            connection.backup(copy)
        finally:
            copy.close()
        connection.execute("begin immediate")
        old_folders = _recorded_folders(connection) - {new_folder}  # again, now that no one else writes
        rewritten, columns = 0, _columns(connection)
        for old in sorted(old_folders, key=len, reverse=True):
            for prefix_old, prefix_new in ((f"file://{old}/", f"file://{new_folder}/"), (f"{old}/", f"{new_folder}/")):
                for table, column in columns:
                    cursor = connection.execute(
                        f"update {table} set {column} = ? || substr({column}, ?) where substr({column}, 1, ?) = ?",
                        (prefix_new, len(prefix_old) + 1, len(prefix_old), prefix_old),
                    )
                    rewritten += cursor.rowcount
        connection.execute("commit")
    except BaseException:
        if connection.in_transaction:
            connection.execute("rollback")
        raise
    finally:
        connection.close()
    return Relocation(", ".join(sorted(old_folders)), new_folder, rewritten, backup) if old_folders else None
