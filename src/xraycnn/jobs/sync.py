"""`xraycnn sync [EXPERIMENT]`: send what searches left in their tracking spools, and finish the searches
that stopped only because the store was away (their champion registered, their parent run ended).

Without EXPERIMENT, every search under the tuner directory. A search that is running holds its spool and
its lock: it is left alone (it sends its own writes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from xraycnn import paths
from xraycnn.errors import SearchLockedError, TrackingIncompleteError, XrayCnnError
from xraycnn.jobs.spooling import send_leftovers, store_wait_seconds
from xraycnn.tracking.spool import pending_writes
from xraycnn.tuning.state import SearchState, search_lock


@dataclass(frozen=True)
class Synced:
    experiment: str
    writes_sent: int
    finished: bool  # an unfinished search was finished (champion registered, parent run ended)


def run_sync(
    experiment: str | None = None,
    *,
    tuner_dir: str | Path | None = None,
    reports_dir: str | Path | None = None,
    console: Console | None = None,
) -> list[Synced]:
    console = console or Console()
    root = Path(tuner_dir or paths.tuner_root()).resolve()
    if experiment is not None:
        projects = [root / Path(experiment).stem]
        if not projects[0].is_dir():
            raise XrayCnnError(f"no search of {Path(experiment).stem!r} in {root}: nothing to sync")
    else:
        projects = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    done: list[Synced] = []
    refused: list[str] = []
    for project in projects:
        state = SearchState.load(project)
        waiting = pending_writes(project)
        if not waiting and not (state and state.unfinished):
            continue
        try:
            with search_lock(project, project.name):
                failures = send_leftovers(project, console, store_wait_seconds())
        except SearchLockedError:
            console.print(f"{project.name}: a search is running; it sends its own writes.")
            continue
        console.print(f"{project.name}: {waiting} write(s) sent.")
        finished = False
        if state is not None and state.unfinished:
            console.print(f"{project.name}: finishing the search (its trials are done; the store was away) ...")
            _finish(state, tuner_dir, reports_dir, console)
            finished = True
        done.append(Synced(project.name, waiting, finished))
        refused += failures
    if not done:
        console.print(f"Nothing to sync under {root}.")
    if refused:
        first = refused[0].strip().splitlines()
        raise TrackingIncompleteError(
            f"sync done, but the store refused {len(refused)} write(s), kept with why under the spools' rejected/ "
            f"folders. First: {first[0]} ... {first[-1]}"
        )
    return done


def _finish(state: SearchState, tuner_dir: str | Path | None, reports_dir: str | Path | None, console: Console) -> None:
    from xraycnn.jobs.search import run_search  # TensorFlow: only when a search is to be finished

    unfinished = state.unfinished or {}
    run_search(
        unfinished["experiment"],
        data_dir=unfinished.get("data"),
        tracking_uri=state.tracking_uri,
        tuner_dir=tuner_dir,
        reports_dir=reports_dir,
        console=console,
        overrides=unfinished.get("overrides", []),
    )
