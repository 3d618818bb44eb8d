"""What a search keeps next to Keras Tuner's state so a re-run resumes it: its parent run, the store it
logs to, and the hashes of the experiment file and the data it started with. Plus the lock that keeps two
processes from running the same search at once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from xraycnn.errors import SearchLockedError

STATE_FILE = "xraycnn_search.json"


@dataclass
class SearchState:
    parent_run_id: str
    tracking_uri: str
    experiment_sha256: str
    dataset_digest: str
    registered: dict[str, Any] = field(default_factory=dict)  # trial_id, name, version, alias once done
    # Set while the search waits for an absent tracking store (its writes in the spool, the champion maybe not
    # registered): how `xraycnn sync` finishes it: {"experiment": file, "overrides": [KEY=VALUE], "data": root}.
    unfinished: dict[str, Any] | None = None

    @staticmethod
    def load(project_dir: Path) -> SearchState | None:
        path = project_dir / STATE_FILE
        if not path.is_file():
            return None
        return SearchState(**json.loads(path.read_text()))

    def save(self, project_dir: Path) -> None:
        project_dir.mkdir(parents=True, exist_ok=True)
        tmp = project_dir / f"{STATE_FILE}.tmp"
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(project_dir / STATE_FILE)  # atomic: a crash never leaves half a file


@contextmanager
def search_lock(project_dir: Path, experiment_name: str) -> Iterator[None]:
    """Hold `tuner/<experiment>.lock` for the whole search; refuse at once if another process holds it."""
    project_dir.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(project_dir.parent / f"{project_dir.name}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise SearchLockedError(
            f"another search of experiment {experiment_name!r} is running (it holds {lock.lock_file}); "
            "wait for it to finish or stop it, then run this again to resume"
        ) from None
    try:
        yield
    finally:
        lock.release()
