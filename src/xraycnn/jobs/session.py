"""A job's session: its checked inputs decoded into data, the precision chosen, the tracking store and the
MLflow experiment opened (the job writes to it through a tracking.service.Tracking); and what every run of a
job carries to be reproduced (tags, flat params).

Everything that can be wrong with the user's input (experiment file, data layout, unreadable data) is checked
before anything is written to MLflow.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from xraycnn import paths
from xraycnn.config import Experiment
from xraycnn.data.dataset import PreparedData, prepare_data
from xraycnn.jobs.inputs import Inputs
from xraycnn.jobs.spooling import notice_to, store_wait_seconds
from xraycnn.runtime import threads
from xraycnn.runtime.precision import apply_policy
from xraycnn.tracking.store import TrackingStore, ensure_experiment, resolve_store, wait_for_store
from xraycnn.tracking.tags import TAG_PREFIX, search_experiment_name


@dataclass(frozen=True)
class Session:
    experiment: Experiment
    data: PreparedData
    store: TrackingStore
    experiment_id: str
    precision: str
    precision_reason: str


def mlflow_experiment_name(experiment: Experiment) -> str:
    return search_experiment_name(experiment.name)


def ensure_search_experiment(store: TrackingStore, experiment: Experiment) -> str:
    """The id of the MLflow experiment that holds `experiment`'s runs, created if missing."""
    return ensure_experiment(
        store, mlflow_experiment_name(experiment), {f"{TAG_PREFIX}experiment_file": experiment.name}
    )


def open_session(inputs: Inputs, tracking_uri: str | None, console: Console) -> Session:
    """Decode the data (once per process), pick the precision, open the store and the experiment."""
    config = inputs.experiment.config
    precision, reason = apply_policy(config.training.precision)
    with console.status(
        f"Decoding {len(inputs.files.train) + len(inputs.files.test)} images from {inputs.files.root} ..."
    ):
        data = prepare_data(inputs.files, config.data, config.seed)
    counts = {name: getattr(data, name).class_counts() for name in ("train", "val", "test")}
    console.print(
        f"Data {data.root} (digest {data.digest}): "
        + ", ".join(
            f"{name} {sum(c.values())} ({', '.join(f'{k} {v}' for k, v in c.items())})" for name, c in counts.items()
        )
        + f"; {data.image_size}x{data.image_size}x{data.channels}; precision {precision} ({reason})"
    )
    if data.skipped:
        console.print(
            f"[yellow]Skipped {len(data.skipped)} unreadable file(s)[/]; the list is logged as skipped_files.csv"
        )
    store = resolve_store(tracking_uri)
    wait_for_store(store, notice_to(console), store_wait_seconds())  # a server restarting is waited for
    experiment_id = ensure_search_experiment(store, inputs.experiment)
    return Session(inputs.experiment, data, store, experiment_id, precision, reason)


def git_commit(root: Path) -> tuple[str | None, bool]:
    """(commit, dirty) of the checkout at `root`, or (None, False) outside git."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return None, False
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return commit.stdout.strip(), bool(status.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None, False


def run_tags(session: Session, kind: str) -> dict[str, Any]:
    """Tags of a search's parent run or a training run: enough to reproduce it."""
    experiment = session.experiment
    commit, dirty = git_commit(paths.project_root())
    try:
        file_label = str(experiment.path.relative_to(paths.project_root()))
    except ValueError:
        file_label = str(experiment.path)
    return {
        f"{TAG_PREFIX}kind": kind,
        f"{TAG_PREFIX}experiment_file": file_label,
        f"{TAG_PREFIX}experiment_sha256": experiment.sha256,
        f"{TAG_PREFIX}dataset_digest": session.data.digest,
        f"{TAG_PREFIX}dataset_root": session.data.root,
        f"{TAG_PREFIX}tuner": experiment.config.tuner.algorithm,
        f"{TAG_PREFIX}objective": experiment.config.tuner.objective,
        f"{TAG_PREFIX}selection_rule": experiment.config.tuner.selection_rule(),
        f"{TAG_PREFIX}overrides": " ".join(experiment.override_args()[1::2]) or None,
        f"{TAG_PREFIX}seed": experiment.config.seed,
        f"{TAG_PREFIX}precision": session.precision,
        f"{TAG_PREFIX}precision_reason": session.precision_reason,
        f"{TAG_PREFIX}threads": threads.describe(),
        "mlflow.source.git.commit": commit,
        f"{TAG_PREFIX}git_dirty": dirty if commit else None,
        "mlflow.source.name": "xraycnn",
        "mlflow.user": os.environ.get("USER") or os.environ.get("LOGNAME"),
    }


def fixed_params(session: Session) -> dict[str, Any]:
    """Every fixed setting of a run: the experiment's knobs, the data's shape, the resolved precision."""
    return {
        **session.experiment.config.flat(),
        **{f"override.{key}": value for key, value in session.experiment.overrides},
        **session.data.summary(),
        "training.precision_policy": session.precision,
        "model.optimizer": "adam",
        "model.loss": "binary_crossentropy",
    }
