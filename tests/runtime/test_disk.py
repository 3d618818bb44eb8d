"""Telling a full disk apart wherever it surfaces (runtime.disk)."""

from __future__ import annotations

import errno
import logging
import sqlite3

from xraycnn.runtime.disk import HideDiskFull, disk_full_error, is_disk_full


def _record(message: str, error: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(error), error, None) if error is not None else None
    return logging.LogRecord("mlflow.store.db.utils", logging.ERROR, __file__, 1, message, None, exc_info)


def test_a_full_disk_is_recognised_through_wrapped_errors() -> None:
    try:
        try:
            raise sqlite3.OperationalError("database or disk is full")
        except sqlite3.OperationalError as inner:
            raise RuntimeError("SQLAlchemy database error") from inner
    except RuntimeError as wrapped:
        assert is_disk_full(wrapped)
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    message = str(disk_full_error(OSError(errno.ENOSPC, "No space left", "/data/x"), "the spool"))
    assert message.startswith("no space left on the file system of /data/x while writing the spool")


def test_a_library_s_log_of_a_full_disk_is_dropped_and_nothing_else() -> None:
    hide = HideDiskFull()
    assert not hide.filter(_record("SQLAlchemy database error.", sqlite3.OperationalError("database or disk is full")))
    assert not hide.filter(_record("(sqlite3.OperationalError) database or disk is full"))
    assert hide.filter(_record("SQLAlchemy database error.", sqlite3.OperationalError("no such table: runs")))
    assert hide.filter(_record("Creating initial MLflow database tables..."))
