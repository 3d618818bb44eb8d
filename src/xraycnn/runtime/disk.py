"""Telling a full file system apart from other failures, wherever it surfaces: an OSError (ENOSPC, EDQUOT)
from our own writes or Keras Tuner's, SQLite's "database or disk is full" wrapped by MLflow and SQLAlchemy,
and the same errors chained under others."""

from __future__ import annotations

import errno
import logging
from pathlib import Path

from xraycnn.errors import DiskFullError

_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_FULL_WORDS = ("database or disk is full", "no space left on device", "disk quota exceeded")


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def is_disk_full(exc: BaseException) -> bool:
    return any(
        (isinstance(e, OSError) and e.errno in _FULL_ERRNOS) or any(w in str(e).lower() for w in _FULL_WORDS)
        for e in _chain(exc)
    )


def full_path(exc: BaseException) -> str | None:
    """The file a disk-full OSError names, if any."""
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno in _FULL_ERRNOS and e.filename:
            return str(e.filename)
    return None


def disk_full_error(exc: BaseException, what: str, path: Path | str | None = None) -> DiskFullError:
    """One message that names the full file system and what to do: `what` was being written, at `path` when
    the error itself does not say where."""
    where = full_path(exc) or (str(path) if path is not None else "an unknown path")
    return DiskFullError(
        f"no space left on the file system of {where} while writing {what}. Free some space there (a search "
        "needs a few MB for its state and tracking, more for its models), then run the same command again: it "
        "resumes, and the writes not yet in the store wait in the search's tracking spool"
    )


class HideDiskFull(logging.Filter):
    """Drops a library's log record of a full disk (MLflow logs SQLite's "database or disk is full" with its
    whole traceback before raising it): the job turns that error into its own one-line message."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if error is not None and is_disk_full(error):
            return False
        return not any(w in record.getMessage().lower() for w in _FULL_WORDS)
