"""The search's parent run: opened new, or found again to resume (only when the experiment file, its
overrides and the data are unchanged and the store still holds it), and ended by how the search ends."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode
from rich.console import Console

from xraycnn.errors import XrayCnnError
from xraycnn.jobs.session import Session, fixed_params, run_tags
from xraycnn.jobs.trials import close_orphans
from xraycnn.tracking.service import Tracking
from xraycnn.tuning.state import SearchState
from xraycnn.tuning.tuners import planned_budget


@contextlib.contextmanager
def parent_run(
    session: Session, tracking: Tracking, project_dir: Path, console: Console, *, resume: bool
) -> Iterator[SearchState]:
    """The search's state with its parent run open as MLflow's active run (the champion is logged to it) for
    the block; its writes and system metrics go through the spool (`tracking.runs`); the run ends FINISHED,
    KILLED or FAILED with the block (tracking.lifecycle), or stays RUNNING while the store is away at the end."""
    state = SearchState.load(project_dir) if resume else None
    if state is not None:
        check_resumable(state, session, project_dir)
        if not run_exists(session, state.parent_run_id):
            console.print(
                "[yellow]The previous search's parent run is not in this store; starting a new parent run.[/]"
            )
            state = None
    new = state is None
    if state is None:
        experiment = session.experiment
        run_id = tracking.new_run(
            session.experiment_id,
            f"search-{experiment.name}-{time.strftime('%Y%m%d-%H%M%S')}",
            run_tags(session, "search"),
            _description(session),
        )
        state = SearchState(run_id, session.store.uri, experiment.sha256, session.data.digest)
    with tracking.job_run(state.parent_run_id, active=True, resume=not new):
        if new:
            tracking.runs.log_params(state.parent_run_id, fixed_params(session))
            tracking.runs.log_dataset(state.parent_run_id, session.data)
            tracking.runs.log_skipped_files(state.parent_run_id, session.data.skipped)
            state.save(project_dir)
        else:
            close_orphans(session, tracking, state.parent_run_id)
        yield state


def check_resumable(state: SearchState, session: Session, project_dir: Path) -> None:
    """Refuse to resume a search whose experiment file, overrides or data changed since it started."""
    changed = []
    if state.experiment_sha256 != session.experiment.sha256:
        changed.append(f"the experiment file {session.experiment.path} (or its --set overrides)")
    if state.dataset_digest != session.data.digest:
        changed.append(f"the dataset (digest {state.dataset_digest} -> {session.data.digest})")
    if changed:
        raise XrayCnnError(
            f"{' and '.join(changed)} changed since the search in {project_dir} started, so it cannot be resumed: "
            "run with --fresh to start over, or restore what changed"
        )


def run_exists(session: Session, run_id: str) -> bool:
    """Whether the store holds the search's parent run. Only the store's "not found" means no: any other
    failure (a tracking server restarting, a locked database) stops the resume instead of silently opening a
    second parent run."""
    try:
        run = session.store.client().get_run(run_id)
    except MlflowException as exc:
        if exc.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            return False
        raise XrayCnnError(
            f"cannot tell whether the search's parent run {run_id} is in {session.store.uri} "
            f"({exc.error_code}: {str(exc.message).splitlines()[0]}); check that the tracking store is reachable "
            "and run the same command again to resume"
        ) from None
    return run.info.lifecycle_stage == "active" and run.info.experiment_id == session.experiment_id


def _description(session: Session) -> str:
    config = session.experiment.config
    trials, epochs = planned_budget(config)
    return (
        f"{config.description}\n\nExperiment `{session.experiment.name}`: {config.tuner.algorithm} search on "
        f"{config.tuner.objective}, seed {config.seed}, budget {trials} trials / {epochs} epochs at most. Data "
        f"`{session.data.root}` (digest {session.data.digest}), {session.data.image_size}px {config.data.color_mode}."
    ).strip()
