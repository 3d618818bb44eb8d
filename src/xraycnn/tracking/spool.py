"""A durable, ordered journal of one process's MLflow writes, on local disk.

Every write is a record `ops/<seq>.json` (the operation's name and its arguments, plain data), written and
fsynced before anything is sent, and deleted once the store has acknowledged it. A process that dies, or a
store that stays away, leaves the records behind; `xraycnn sync` (or the next run of the same search) sends
them in order. Runs are named by keys the spool hands out (`spool-<hex>`) so a run can be written to before
the store has created it; `runs.json` maps each key to the store's run id once the store has answered.

A directory holds one process's writes (`tuner/<experiment>/spool/<process>/`) and the tracking URI they are
for (`manifest.json`): sending them to another store would mix two searches.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from xraycnn.errors import XrayCnnError
from xraycnn.runtime.disk import disk_full_error, is_disk_full

KEY_PREFIX = "spool-"
_SEQ_DIGITS = 10


@dataclass(frozen=True)
class Record:
    seq: int
    op: str
    args: dict[str, Any]
    path: Path  # the record's file; attached files are in `path.with_suffix(".files")`

    @property
    def files(self) -> Path:
        return self.path.with_suffix(".files")


def new_run_key() -> str:
    return f"{KEY_PREFIX}{uuid.uuid4().hex}"


def is_run_key(value: str) -> bool:
    return value.startswith(KEY_PREFIX)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: Path, text: str) -> None:
    """Write `text` to `path` so that a crash leaves either the old file or the whole new one."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class SpoolInUseError(Exception):
    """Another live process holds the spool (its owner, or a sync sending it)."""


class Spool:
    """The journal in `directory`, held by one process at a time (`<directory>.lock`); appends from any
    thread, one sending thread."""

    def __init__(self, directory: Path, tracking_uri: str, wait_for_owner: float = 0) -> None:
        self.directory = directory
        self.ops = directory / "ops"
        self.rejected = directory / "rejected"
        self._lock = threading.Lock()
        self.ops.mkdir(parents=True, exist_ok=True)
        self._owner = FileLock(str(directory.parent / f"{directory.name}.lock"))
        try:
            self._owner.acquire(timeout=wait_for_owner)
        except Timeout:
            raise SpoolInUseError(f"{directory} is in use by another process") from None
        manifest = directory / "manifest.json"
        if manifest.is_file():
            recorded = json.loads(manifest.read_text())["tracking_uri"]
            if recorded != tracking_uri and any(self.ops.glob("*.json")):
                raise XrayCnnError(
                    f"the tracking spool {directory} holds writes for {recorded}, not {tracking_uri}: replay them "
                    f"with `xraycnn sync` against that store first (or delete {directory} to drop them)"
                )
        write_durably(manifest, json.dumps({"tracking_uri": tracking_uri}))
        self.tracking_uri = tracking_uri
        self.records_written = 0  # by this process: what the spool costs, for the bench
        self.bytes_written = 0
        existing = self._seqs()
        self._next = (existing[-1] + 1) if existing else 1
        runs = directory / "runs.json"
        self._runs: dict[str, str] = json.loads(runs.read_text()) if runs.is_file() else {}

    def release(self) -> None:
        self._owner.release()

    @classmethod
    def open_existing(cls, directory: Path) -> Spool:
        """A spool left on disk, for the store it was written for."""
        return cls(directory, json.loads((directory / "manifest.json").read_text())["tracking_uri"])

    # -- appending --------------------------------------------------------------------------------------
    def append(self, op: str, args: dict[str, Any], files: dict[str, Path] | None = None) -> int:
        """Journal one write; its attached `files` (name -> local file) are copied in first. Returns its seq."""
        with self._lock:  # held while writing: the sender never sees seq n+1 before n is on disk
            seq = self._next
            self._next += 1
            path = self.ops / f"{seq:0{_SEQ_DIGITS}d}.json"
            text = json.dumps({"seq": seq, "op": op, "args": args})
            try:
                if files:
                    attached = path.with_suffix(".files")
                    attached.mkdir()
                    for name, source in files.items():
                        shutil.copyfile(source, attached / name)
                        self.bytes_written += source.stat().st_size
                write_durably(path, text)
            except OSError as exc:
                self._forget(path)  # no half record: the write is not journaled, and says so
                if is_disk_full(exc):
                    raise disk_full_error(exc, "the tracking spool", self.directory) from exc
                raise
            self.records_written += 1
            self.bytes_written += len(text.encode())
        return seq

    @staticmethod
    def _forget(path: Path) -> None:
        with contextlib.suppress(OSError):
            shutil.rmtree(path.with_suffix(".files"), ignore_errors=True)
            path.with_name(f".{path.name}.tmp").unlink(missing_ok=True)
            path.unlink(missing_ok=True)

    # -- sending ----------------------------------------------------------------------------------------
    def _seqs(self) -> list[int]:
        return sorted(int(p.stem) for p in self.ops.glob("*.json") if p.stem.isdigit())

    def pending(self) -> Iterator[Record]:
        """The records not yet acknowledged, oldest first (a snapshot: later appends are not included)."""
        for seq in self._seqs():
            path = self.ops / f"{seq:0{_SEQ_DIGITS}d}.json"
            data = json.loads(path.read_text())
            yield Record(seq, data["op"], data["args"], path)

    def count(self) -> int:
        return len(self._seqs())

    def ack(self, record: Record) -> None:
        """The store has it: forget it (attached files first, so a crash never leaves a record without them)."""
        if record.files.exists():
            shutil.rmtree(record.files)
        record.path.unlink(missing_ok=True)

    def reject(self, record: Record, error: str) -> Path:
        """The store refused it for good: keep it, with why, under rejected/ (never silently dropped)."""
        self.rejected.mkdir(exist_ok=True)
        target = self.rejected / record.path.name
        write_durably(target, json.dumps({"seq": record.seq, "op": record.op, "args": record.args, "error": error}))
        if record.files.exists():
            shutil.move(record.files, target.with_suffix(".files"))
        record.path.unlink(missing_ok=True)
        return target

    # -- run keys ---------------------------------------------------------------------------------------
    def run_id(self, key_or_id: str) -> str | None:
        """The store's run id for a key (None while the store has not created it); a run id as it is."""
        if not is_run_key(key_or_id):
            return key_or_id
        return self._runs.get(key_or_id)

    def bind(self, key: str, run_id: str) -> None:
        self._runs[key] = run_id
        write_durably(self.directory / "runs.json", json.dumps(self._runs))


def spool_dirs(project_dir: Path) -> list[Path]:
    """The process spools of a search (`<project_dir>/spool/<process>/`)."""
    root = project_dir / "spool"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / "manifest.json").is_file())


def pending_writes(project_dir: Path) -> int:
    """How many writes the search's spools still hold."""
    return sum(len(list((d / "ops").glob("*.json"))) for d in spool_dirs(project_dir))


def remove_if_empty(directory: Path) -> None:
    """Drop a spool that holds nothing (no waiting write, no rejected one): a clean search leaves no spool."""
    with contextlib.suppress(OSError):
        if not any((directory / "ops").glob("*.json")) and not (directory / "rejected").exists():
            shutil.rmtree(directory)
            (directory.parent / f"{directory.name}.lock").unlink(missing_ok=True)
