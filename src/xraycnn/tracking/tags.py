"""The names this project gives things in MLflow, in one place: tags on runs and on model versions, the
MLflow experiments' names, and the artifacts more than one module reads or writes. Free of MLflow itself, so
any layer may import it."""

from __future__ import annotations

TAG_PREFIX = "xraycnn."

# -- on runs ---------------------------------------------------------------------------------------------
TRIAL_ID_TAG = f"{TAG_PREFIX}trial_id"  # on every trial run: which Keras Tuner trial it is an attempt of
BEST_EPOCH_TAG = f"{TAG_PREFIX}best_epoch"  # on a trial or training run: the epoch whose weights it kept
GATE_TAG = f"{TAG_PREFIX}gate"  # on a trial run of a gated search: "pass" or "fail" at its best epoch
GUARD_TAG = f"{TAG_PREFIX}guard"  # on a trial run of a guarded search: the acquisition guard, "pass" or "fail"
RUNG_STOP_TAG = f"{TAG_PREFIX}rung_stop"  # on a trial run stopped at a rung (tuning.rungs): at which, and why
WORKER_TAG = f"{TAG_PREFIX}worker"  # on a trial run: the worker that trained it
ORACLE_TAG = f"{TAG_PREFIX}oracle"  # on a distributed search's parent run: where its chief serves the oracle
ERROR_TAG = f"{TAG_PREFIX}error"  # on a FAILED run: the last line of its error (the whole of it: error.txt)
TRACKING_FAILURES_TAG = f"{TAG_PREFIX}tracking_failures"  # on the parent run: how many MLflow writes failed
SPOOL_KEY_TAG = f"{TAG_PREFIX}spool_key"  # on a run created from the tracking spool: its key there (idempotence)

# -- on model versions ------------------------------------------------------------------------------------
OBJECTIVE_TAG = f"{TAG_PREFIX}objective"
OBJECTIVE_VALUE_TAG = f"{TAG_PREFIX}objective_value"
BORDERS_ONLY_TAG = f"{TAG_PREFIX}val_borders_only_auc"  # the version's borders-only AUC on validation
GATE_LIMIT_TAG = f"{TAG_PREFIX}gate_max_borders_only_auc"  # the shortcut gate it was selected under
# the NORMAL films' specificity under the worst acquisition change on validation, at its threshold
SHIFT_SPECIFICITY_TAG = f"{TAG_PREFIX}val_shift_worst_specificity"
SHIFT_GUARD_TAG = f"{TAG_PREFIX}guard_min_shift_specificity"  # the acquisition guard it was selected under
SITE_TAG_PREFIX = f"{TAG_PREFIX}site."  # + a site's name: its threshold, set from its normal films (JSON)
THRESHOLD_TAG = f"{TAG_PREFIX}threshold"
THRESHOLD_RULE_TAG = f"{TAG_PREFIX}threshold_rule"

# -- MLflow experiments -----------------------------------------------------------------------------------
EXPERIMENT_PREFIX = "xraycnn-"  # one MLflow experiment per experiment file: xraycnn-<file stem>
EVALUATIONS_EXPERIMENT = f"{EXPERIMENT_PREFIX}evaluations"
CALIBRATIONS_EXPERIMENT = f"{EXPERIMENT_PREFIX}site-calibrations"


def search_experiment_name(experiment_file_stem: str) -> str:
    """The MLflow experiment that holds the runs of an experiment file, e.g. `xraycnn-default`."""
    return f"{EXPERIMENT_PREFIX}{experiment_file_stem}"


# -- artifacts --------------------------------------------------------------------------------------------
PREDICTIONS_ARTIFACT = "evaluation/test_predictions.csv"  # per image: label, probability, calls, source ...
METRICS_ARTIFACT = "evaluation/metrics.csv"  # the metrics table the console prints
