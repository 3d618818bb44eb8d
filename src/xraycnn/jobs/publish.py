"""Publishing a final model, the last step of a search and of `xraycnn train`: its threshold chosen on
validation, its assessment on test logged to its run, then the registry (the alias moves last), and the
sentences the console and the version's description give of it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
from mlflow.exceptions import MlflowException
from rich.console import Console

from xraycnn.data.external import read_sources
from xraycnn.data.preprocess import preprocessing_key_of
from xraycnn.errors import RegistryError
from xraycnn.evaluation import ranking_metrics
from xraycnn.evaluation.acquisition import AS_GIVEN, WORST_SPECIFICITY, acquired_files, acquired_mix, source_films
from xraycnn.evaluation.assessment import Assessment, Calibration, assess
from xraycnn.evaluation.calibration import fit_platt
from xraycnn.evaluation.shortcuts import BORDERS_ONLY, LUNGS_ONLY, OUTSIDE_SHARE
from xraycnn.evaluation.threshold import SHIFT_RULES, choose_by
from xraycnn.jobs.session import Session
from xraycnn.model.calibration import fold_platt
from xraycnn.model.input_guard import fit_input_guard
from xraycnn.model.predict import predict_probabilities
from xraycnn.registry import (
    THRESHOLD_RULE_TAG,
    THRESHOLD_TAG,
    Registration,
    Selection,
    current_champion,
    failure_message,
    log_and_register,
)
from xraycnn.tracking.assessment_log import log_assessment
from xraycnn.tracking.service import Tracking
from xraycnn.tracking.tags import TAG_PREFIX


def final_assessment(session: Session, model: keras.Model) -> Assessment:
    """The final model judged as every champion is. First calibrated: a Platt scaling fitted on validation is
    folded into its output layer (in place), so every way of using it gives probabilities that mean what they
    say. Then its threshold is chosen on validation (never on test) by the experiment's rule, and the test set is
    scored at it and at 0.5, with intervals, Grad-CAM and the calls under acquisition changes. Last, its input
    guard is fitted (on the training films, its limit on validation) and measured on test and on non-films."""
    config = session.experiment.config
    val, test = session.data.val, session.data.test
    raw_val = predict_probabilities(model, val.images)
    raw_test = predict_probabilities(model, test.images)
    platt = fit_platt(val.labels, raw_val)
    fold_platt(model, platt.scale, platt.shift)
    val_p = predict_probabilities(model, val.images)
    root, size, channels = Path(session.data.root), session.data.image_size, session.data.channels
    changed, changed_films = None, {}
    share = config.evaluation.input_guard_reject_share
    if config.evaluation.threshold in SHIFT_RULES or share:
        acquired = acquired_files([root / f for f in val.files], size, channels, config.seed)
        changed_films = {k: v for k, v in acquired.items() if k != AS_GIVEN}
    if config.evaluation.threshold in SHIFT_RULES:
        changed = {name: predict_probabilities(model, x) for name, x in changed_films.items()}
    chosen = choose_by(config.evaluation, val.labels, val_p, changed)
    guard = None
    if share:
        train = session.data.train
        mix = acquired_mix(source_films([root / f for f in train.files], size, channels), size, config.seed)
        guard = fit_input_guard(model, np.concatenate([train.images, mix]), val.images, share, changed_films)
    calibration = Calibration(
        platt,
        val_ece_before=float(ranking_metrics(val.labels, raw_val)["ece"][0]),
        val_ece_after=float(ranking_metrics(val.labels, val_p)["ece"][0]),
        uncalibrated=raw_test,
    )
    test_paths = [root / f for f in test.files]
    return assess(
        model,
        test,
        chosen.value,
        chosen.describe(),
        sources=read_sources(root, test_paths),  # per source, given a manifest
        resamples=config.evaluation.bootstrap_resamples,
        seed=config.seed,
        calibration=calibration,
        source=source_films(test_paths, size, channels),
        guard=guard,
    )


def publish_model(
    session: Session,
    tracking: Tracking,
    run_id: str,
    model: keras.Model,
    assessment: Assessment,
    selection: Selection,
    title: str,
    version_tags: dict[str, Any],
    description: str,
) -> Registration:
    """Log the final model's assessment (metrics with intervals, plots, Grad-CAM, predictions) to `run_id`,
    which must be the active run, then register it carrying its threshold; the alias moves last. Written at
    once (`tracking.direct`): a write the store refuses stops the publishing before anything is registered."""
    runs, config = tracking.direct, session.experiment.config
    try:
        log_assessment(runs, run_id, assessment, f"{title}, test", prefix="test_")
    except (MlflowException, OSError) as exc:
        champion = current_champion(runs.client, config.registry.model_name)
        raise RegistryError(failure_message(f"logging the test evaluation of {title}", exc, champion)) from exc
    overall = assessment.clinical.overall
    preprocess = preprocessing_key_of(model)
    tags = {
        **version_tags,
        f"{TAG_PREFIX}preprocess": preprocess,
        f"{TAG_PREFIX}dataset_digest": session.data.digest,
        f"{TAG_PREFIX}image_size": session.data.image_size,
        f"{TAG_PREFIX}color_mode": config.data.color_mode,
        f"{TAG_PREFIX}source_run_id": run_id,
        THRESHOLD_TAG: repr(assessment.threshold),
        THRESHOLD_RULE_TAG: assessment.clinical.threshold_rule,
        **{
            f"{TAG_PREFIX}test_{k}": f"{overall.metrics[k]:.4f}"
            for k in ("auc", "accuracy", "sensitivity", "specificity")
        },
        **{
            f"{TAG_PREFIX}test_{k}": f"{v:.4f}"
            for k, v in assessment.audit.overall.values.items()
            if v == v  # NaN: undefined on this set
        },
        **{
            f"{TAG_PREFIX}test_thr_{k}": f"{overall.metrics[f'thr_{k}']:.4f}"
            for k in ("accuracy", "sensitivity", "specificity")
        },
        f"{TAG_PREFIX}test_ece": f"{overall.metrics['ece']:.4f}",
    }
    if assessment.shift is not None:
        tags[f"{TAG_PREFIX}test_{WORST_SPECIFICITY}"] = f"{assessment.shift.worst_specificity:.4f}"
        tags[f"{TAG_PREFIX}test_shift_worst_change"] = str(assessment.shift.worst_change)
    metadata = {
        "threshold": assessment.threshold,
        "threshold_rule": assessment.clinical.threshold_rule,
        "threshold_chosen_on": "validation",
        "preprocess": preprocess,
    }
    if assessment.calibration is not None:
        platt = assessment.calibration.platt
        tags[f"{TAG_PREFIX}calibration"] = f"platt scale={platt.scale:.6g} shift={platt.shift:.6g} (validation)"
        metadata["calibration"] = {
            "method": "platt",
            "scale": platt.scale,
            "shift": platt.shift,
            "fitted_on": "validation",
            "folded_into": "the output layer: the network's output is the calibrated probability",
        }
    guard = assessment.guard
    if guard is not None:
        metadata["input_guard"] = guard.guard.describe()
        tags[f"{TAG_PREFIX}input_guard_limit"] = f"{guard.limit:.4f}"
        tags[f"{TAG_PREFIX}test_guard_refused"] = f"{guard.films:.4f}"
        tags[f"{TAG_PREFIX}guard_refused_not_films"] = f"{guard.not_films_overall:.4f}"
    registration = log_and_register(
        model,
        model_name=config.registry.model_name,
        objective=config.tuner.objective,
        selection=selection,
        direction=config.tuner.direction,
        tags=tags,
        description=description,
        metadata=metadata,
        input_guard=None if guard is None else guard.guard,
    )
    runs.set_tags(
        run_id,
        {
            f"{TAG_PREFIX}registered_model": registration.name,
            f"{TAG_PREFIX}registered_version": registration.version,
            f"{TAG_PREFIX}registered_alias": registration.alias,
        },
    )
    return registration


def describe_assessment(assessment: Assessment) -> str:
    """One sentence of test figures with their 95 % intervals, for descriptions and the console."""
    overall = assessment.clinical.overall

    def figure(key: str, label: str) -> str:
        interval = overall.intervals.get(key)
        return f"{label} {overall.metrics[key]:.4f}" + (f" {interval}" if interval else "")

    audit = assessment.audit.overall
    shift = assessment.shift
    under_shift = (
        ""
        if shift is None
        else f"; NORMAL specificity under the worst acquisition change ({shift.worst_change}) {shift.describe()}"
    )
    return (
        f"at threshold {assessment.threshold:.3f}: {figure('thr_accuracy', 'accuracy')}, "
        f"{figure('thr_sensitivity', 'sensitivity')}, {figure('thr_specificity', 'specificity')}; "
        f"{figure('auc', 'AUC')}; ECE {overall.metrics['ece']:.3f}; at 0.5: {figure('accuracy', 'accuracy')}"
        f"{under_shift}; shortcut audit: borders-only AUC "
        f"{audit.describe(BORDERS_ONLY)}, lungs-only AUC {audit.describe(LUNGS_ONLY)}, Grad-CAM heat outside "
        f"the lungs {audit.describe(OUTSIDE_SHARE)} (95 % bootstrap intervals)"
        + (f"; input guard: {assessment.guard.describe()}" if assessment.guard is not None else "")
    )


def report_registration(console: Console, registration: Registration, assessment: Assessment) -> None:
    colour = "green" if registration.alias == "champion" else "yellow"
    console.print(
        f"Registered [bold]{registration.name}[/] v{registration.version} as [{colour}]{registration.alias}[/] "
        f"({registration.reason}). Test {describe_assessment(assessment)}.",
        highlight=False,
    )
    console.print(
        f"Load it with mlflow.keras.load_model('models:/{registration.name}@{registration.alias}')"
        + (" after `import xraycnn.model` (it has this project's layers)." if registration.own_layers else ".")
    )
