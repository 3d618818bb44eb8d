"""How a job's own MLflow run ends, in one place: FINISHED when its block ends, KILLED on Ctrl-C, FAILED with
the error on anything else. The search's parent run, a training run and an evaluation run all end through
`closed_run`; trial runs, opened and closed from Keras Tuner's hooks, end in `trial_tracker`."""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Iterator

import mlflow
from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException

from xraycnn.errors import InterruptedByUserError, SearchPausedError
from xraycnn.tracking.runs import RunLogger

INTERRUPTED = "interrupted by the user (Ctrl-C)"


def _status_of(exc: BaseException) -> tuple[str, str]:
    """(status, reason) for a run whose block raised `exc`."""
    if isinstance(exc, KeyboardInterrupt | InterruptedByUserError):
        return RunStatus.to_string(RunStatus.KILLED), INTERRUPTED
    return RunStatus.to_string(RunStatus.FAILED), traceback.format_exc()


@contextlib.contextmanager
def closed_run(runs: RunLogger, run_id: str, *, fluent: bool = False) -> Iterator[str]:
    """Run the block for `run_id`, then end the run by how the block ended; exceptions go on.

    `fluent`: the run is MLflow's active run (started with `mlflow.start_run`, for its system metrics), so it
    is ended through `mlflow.end_run`, which also stops the system-metrics thread and pops the run stack.
    On failure the error is written first (tag `xraycnn.error`, `error.txt`); if the store refuses that too
    (it may be what failed), the run is still ended and the original exception is the one raised.
    """
    try:
        yield run_id
    except SearchPausedError:
        # The job is not over, only paused (the store away, a full disk): its run stays RUNNING until the same
        # command (or `xraycnn sync`) resumes and ends it.
        if fluent and mlflow.active_run() is not None:
            with contextlib.suppress(Exception):  # pops MLflow's run stack; the store is away, or takes RUNNING
                mlflow.end_run(RunStatus.to_string(RunStatus.RUNNING))
        raise
    except BaseException as exc:
        status, reason = _status_of(exc)
        with contextlib.suppress(MlflowException, OSError):
            runs.note_error(run_id, reason)
        with contextlib.suppress(MlflowException, OSError):
            _terminate(runs, run_id, status, fluent)
        if fluent and mlflow.active_run() is not None:  # the store refused: leave no run on the fluent stack
            with contextlib.suppress(Exception):
                mlflow.end_run(status)
        raise
    _terminate(runs, run_id, RunStatus.to_string(RunStatus.FINISHED), fluent)


def _terminate(runs: RunLogger, run_id: str, status: str, fluent: bool) -> None:
    active = mlflow.active_run()
    if fluent and active is not None and active.info.run_id == run_id:
        mlflow.end_run(status)
    else:
        runs.end(run_id, status)
