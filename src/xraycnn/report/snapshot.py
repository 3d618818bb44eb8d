"""Everything a search report shows, read back from MLflow: the parent run, one row per trial (its last
finished attempt), the top trials' learning curves and the best model's test predictions.

The report is built from the store alone (no tuner state, no TensorFlow), so it can be made for any search
in any store, finished or interrupted, by the search itself or later by `xraycnn report`.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from xraycnn.config import OBJECTIVE_DIRECTIONS, TunerConfig
from xraycnn.errors import XrayCnnError
from xraycnn.tracking.tags import (
    BEST_EPOCH_TAG,
    EXPERIMENT_PREFIX,
    GATE_TAG,
    GUARD_TAG,
    PREDICTIONS_ARTIFACT,
    SITE_TAG_PREFIX,
    TAG_PREFIX,
    TRIAL_ID_TAG,
)

TOP_CURVES = 5


@dataclass(frozen=True)
class Curve:
    """One trial's per-epoch series, continuations joined to the epochs of the trial they trained on from."""

    trial_id: str
    run_name: str
    epochs: list[int]
    series: dict[str, list[float]]  # metric -> values, aligned with epochs


@dataclass(frozen=True)
class SearchSnapshot:
    experiment: str  # the MLflow experiment's name
    parent: Run
    objective: str
    direction: str
    trials: pd.DataFrame  # one row per trial: trial_id, run_name, status, score, hp columns, test_* ...
    hyperparameters: list[str]  # the hp columns that vary between trials
    curves: list[Curve]  # best first
    predictions: pd.DataFrame | None  # file, label, probability_covid19, predicted; None before the end
    sites: dict[str, dict[str, Any]] = field(default_factory=dict)  # the registered version's site thresholds

    @property
    def best_trial_id(self) -> str | None:
        scored = self.trials.dropna(subset=["score"])
        return None if scored.empty else str(scored.iloc[0]["trial_id"])

    @property
    def registered(self) -> str | None:
        tags = self.parent.data.tags
        name = tags.get(f"{TAG_PREFIX}registered_model")
        if not name:
            return None
        return f"{name} v{tags.get(f'{TAG_PREFIX}registered_version')} ({tags.get(f'{TAG_PREFIX}registered_alias')})"


def _search_runs(client: MlflowClient, experiment_id: str) -> list[Any]:
    """The experiment's latest search parent run, as a list of at most one."""
    return client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{TAG_PREFIX}kind` = 'search'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )


def latest_search_run(client: MlflowClient, experiment_name: str) -> str:
    """The id of the most recent search's parent run in MLflow experiment `experiment_name`."""
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None or experiment.lifecycle_stage != "active":
        known = sorted(
            e.name
            for e in client.search_experiments()
            if e.name.startswith(EXPERIMENT_PREFIX) and _search_runs(client, e.experiment_id)
        )
        raise XrayCnnError(
            f"no MLflow experiment {experiment_name!r} in this store; experiments with searches: "
            f"{', '.join(known) or 'none'} (give the experiment file or its name, e.g. `xraycnn report default`)"
        )
    runs = _search_runs(client, experiment.experiment_id)
    if not runs:
        raise XrayCnnError(f"MLflow experiment {experiment_name!r} holds no search run; run `xraycnn search` first")
    return runs[0].info.run_id


def _number(value: str) -> Any:
    try:
        number = float(value)
    except ValueError:
        return value
    return int(number) if number.is_integer() and "." not in value and "e" not in value.lower() else number


def _trial_key(trial_id: str) -> tuple[int, str]:
    return (int(trial_id), "") if trial_id.isdigit() else (1 << 30, trial_id)


def last_attempts(children: list[Run]) -> dict[str, tuple[Run, int]]:
    """trial_id -> (the run that counts for it, how many attempts it took): its last FINISHED attempt, else its
    latest attempt. The one rule for the trials table of a search (trials.csv) and of its report."""
    attempts: dict[str, list[Run]] = {}
    for run in sorted(children, key=lambda r: r.info.start_time or 0):
        trial_id = run.data.tags.get(TRIAL_ID_TAG)
        if trial_id is not None:
            attempts.setdefault(trial_id, []).append(run)
    picked = {}
    for trial_id, runs in attempts.items():
        finished = [r for r in runs if r.info.status == "FINISHED"]
        picked[trial_id] = ((finished or runs)[-1], len(runs))
    return picked


AUDIT_COLUMNS = ("best_val_borders_only_auc", "best_val_lungs_only_auc", "best_val_gradcam_outside_share")
SHIFT_COLUMNS = ("best_val_threshold", "best_val_shift_worst_specificity", "best_val_shift_worst_auc")


def is_source_column(name: str) -> bool:
    """A trial's validation figure of one source: `best_val_source_<name>_thr_specificity` or `_thr_sensitivity`."""
    return name.startswith("best_val_source_") and name.endswith(("_thr_specificity", "_thr_sensitivity"))


def trials_frame(
    children: list[Run], fixed: set[str], objective: str, direction: str, selection: str | None = None
) -> tuple[pd.DataFrame, list[str]]:
    """One row per trial, best first by `selection` (the gated objective of a gated search, else the
    objective itself); `score` is the objective. And the hyperparameters that vary (the parallel-coordinates
    axes)."""
    selection = selection or objective
    rows = []
    for trial_id, (run, attempts) in last_attempts(children).items():
        hp = {k: _number(v) for k, v in run.data.params.items() if k not in fixed and not k.startswith("tuner/")}
        metrics = run.data.metrics
        end = run.info.end_time or run.info.start_time
        rows.append(
            {
                "trial_id": trial_id,
                "run_name": run.info.run_name,
                "run_id": run.info.run_id,
                "status": run.info.status,
                "score": metrics.get(f"best_{objective}") if run.info.status == "FINISHED" else None,
                "_rank": metrics.get(f"best_{selection}") if run.info.status == "FINISHED" else None,
                "epochs": _number(run.data.params["tuner/epochs"]) if "tuner/epochs" in run.data.params else None,
                "best_epoch": _number(run.data.tags[BEST_EPOCH_TAG]) if BEST_EPOCH_TAG in run.data.tags else None,
                "attempts": attempts,
                "minutes": round((end - run.info.start_time) / 60_000, 2) if end else None,
                "gate": run.data.tags.get(GATE_TAG),
                "guard": run.data.tags.get(GUARD_TAG),
                **{f"hp.{k}": v for k, v in hp.items()},
                **{
                    k: v
                    for k, v in metrics.items()
                    if k.startswith("test_") or k in AUDIT_COLUMNS or k in SHIFT_COLUMNS or is_source_column(k)
                },
            }
        )
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame, []
    frame["_order"] = frame["trial_id"].map(_trial_key)
    frame = frame.sort_values(["_rank", "_order"], ascending=[direction == "min", True], na_position="last")
    frame = frame.drop(columns=["_order", "_rank"]).reset_index(drop=True)
    varying = [c for c in frame.columns if c.startswith("hp.") and frame[c].nunique(dropna=True) > 1]
    return frame, [c.removeprefix("hp.") for c in varying]


def _history(client: MlflowClient, run_id: str, metric: str) -> dict[int, float]:
    return {m.step: m.value for m in client.get_metric_history(run_id, metric)}


def curve_of(client: MlflowClient, run: Run, trial_id: str, metrics: tuple[str, ...]) -> Curve:
    """The trial's series, preceded by the epochs of the trials it continues (Hyperband trains on)."""
    chain = [run.info.run_id]
    seen = set(chain)
    tags = run.data.tags
    while (previous := tags.get(f"{TAG_PREFIX}continues_run_id")) and previous not in seen:
        chain.append(previous)
        seen.add(previous)
        try:
            tags = client.get_run(previous).data.tags
        except MlflowException:
            break
    per_metric: dict[str, dict[int, float]] = {m: {} for m in metrics}
    for run_id in reversed(chain):  # oldest first: a continuation's own epochs win
        for metric in metrics:
            per_metric[metric].update(_history(client, run_id, metric))
    epochs = sorted(set().union(*(set(v) for v in per_metric.values())))
    series = {m: [per_metric[m].get(e, float("nan")) for e in epochs] for m in metrics if per_metric[m]}
    return Curve(trial_id, run.info.run_name, epochs, series)


def _predictions(client: MlflowClient, run_id: str) -> pd.DataFrame | None:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, PREDICTIONS_ARTIFACT, tmp)
        except (MlflowException, OSError):
            return None
        return pd.read_csv(path)


def search_tuner(parent: Run) -> TunerConfig:
    """The ranking a search's parent run logged (objective, shortcut gate, acquisition guard), as its config:
    what the tuner ranked trials and epochs by is its `selection_metric`."""
    params = parent.data.params
    gate = params.get("tuner.max_borders_only_auc")
    guard = params.get("tuner.min_shift_specificity")
    return TunerConfig(
        objective=params.get("tuner.objective", "val_auc"),
        max_borders_only_auc=None if gate in (None, "None") else float(gate),
        min_shift_specificity=None if guard in (None, "None") else float(guard),
    )


def load_snapshot(client: MlflowClient, parent_run_id: str, top: int = TOP_CURVES) -> SearchSnapshot:
    parent = client.get_run(parent_run_id)
    experiment = client.get_experiment(parent.info.experiment_id)
    tuner = search_tuner(parent)
    objective = tuner.objective
    direction = OBJECTIVE_DIRECTIONS.get(objective, "max")
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
        max_results=10_000,
    )
    trials, hyperparameters = trials_frame(
        children, set(parent.data.params), objective, direction, tuner.selection_metric
    )
    by_id = {r.info.run_id: r for r in children}
    metric = objective.removeprefix("val_")
    curves = []
    if not trials.empty:
        for row in trials.dropna(subset=["score"]).head(top).itertuples():
            curves.append(curve_of(client, by_id[row.run_id], row.trial_id, (f"val_{metric}", "val_loss", metric)))
    return SearchSnapshot(
        experiment.name,
        parent,
        objective,
        direction,
        trials,
        hyperparameters,
        curves,
        _predictions(client, parent_run_id),
        _sites(client, parent),
    )


def _sites(client: MlflowClient, parent: Run) -> dict[str, dict[str, Any]]:
    """The site thresholds (`xraycnn calibrate`) of the version this search registered, as stored on it."""
    tags = parent.data.tags
    name, version = tags.get(f"{TAG_PREFIX}registered_model"), tags.get(f"{TAG_PREFIX}registered_version")
    if not name or not version:
        return {}
    try:
        version_tags = client.get_model_version(name, version).tags or {}
    except MlflowException:
        return {}
    sites = {}
    for key, raw in version_tags.items():
        if key.startswith(SITE_TAG_PREFIX):
            try:
                sites[key.removeprefix(SITE_TAG_PREFIX)] = json.loads(raw)
            except ValueError:
                continue
    return dict(sorted(sites.items()))
