"""Sending one spooled write to the store, so that sending it again changes nothing.

Each operation is idempotent by construction: a run is created once per spool key (found again by its tag
`xraycnn.spool_key` when the store created it but the answer was lost), params and tags are set to the same
values, metrics carry the timestamp they were measured at (MLflow stores an identical metric once), artifacts
overwrite the same path, a dataset input is stored once per digest, and a run ends at its recorded end time.
Figures travel as their data and are drawn here, on the sending thread, never on the training thread.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from mlflow.entities import RunStatus
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from xraycnn.tracking.runs import RunLogger, dataset_input_of
from xraycnn.tracking.spool import Record, Spool
from xraycnn.tracking.tags import SPOOL_KEY_TAG, TAG_PREFIX, TRIAL_ID_TAG


class UnknownRunError(Exception):
    """A write names a run key whose creation is not in this spool: it can never be sent."""


class Replayer:
    def __init__(self, runs: RunLogger, spool: Spool) -> None:
        self.runs = runs
        self.spool = spool

    def apply(self, record: Record) -> None:
        handler = getattr(self, f"_op_{record.op}", None)
        if handler is None:
            raise ValueError(f"unknown spooled operation {record.op!r} (written by another xraycnn version?)")
        handler(record, **record.args)

    def _run(self, key: str) -> str:
        run_id = self.spool.run_id(key)
        if run_id is None:
            raise UnknownRunError(f"run {key} was never created in {self.spool.tracking_uri}")
        return run_id

    # -- runs -------------------------------------------------------------------------------------------
    def _op_create_run(
        self,
        record: Record,
        key: str,
        experiment_id: str,
        parent: str | None,
        name: str,
        tags: dict[str, str],
        trial_id: str | None = None,
        continues: str | None = None,
    ) -> None:
        """A run, once: a trial's attempt number and the run it continues are read from the store here,
        where the earlier attempts are known to be in it."""
        client = self.runs.client
        found = client.search_runs([experiment_id], filter_string=f"tags.`{SPOOL_KEY_TAG}` = '{key}'", max_results=1)
        if found:
            self.spool.bind(key, found[0].info.run_id)
            return
        tags = {**tags, SPOOL_KEY_TAG: key}
        if parent is not None:
            parent_id = self._run(parent)
            tags[MLFLOW_PARENT_RUN_ID] = parent_id
            if trial_id is not None:
                attempts = self._attempts(experiment_id, parent_id, trial_id)
                tags[f"{TAG_PREFIX}attempt"] = str(len(attempts) + 1)
            if continues is not None:  # a Hyperband continuation: trains on from that trial's best checkpoint
                tags[f"{TAG_PREFIX}continues_trial"] = continues
                earlier = self._attempts(experiment_id, parent_id, continues)
                finished = [r for r in earlier if r.info.status == "FINISHED"]
                if finished:
                    tags[f"{TAG_PREFIX}continues_run_id"] = finished[0].info.run_id
        run = client.create_run(experiment_id, run_name=name, tags=tags)
        self.spool.bind(key, run.info.run_id)

    def _attempts(self, experiment_id: str, parent_id: str, trial_id: str) -> list[Any]:
        return self.runs.client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_id}' and tags.`{TRIAL_ID_TAG}` = '{trial_id}'",
            order_by=["attributes.start_time DESC"],
        )

    def _op_end_run(self, record: Record, run: str, status: str, end_time_ms: int) -> None:
        self.runs.end(self._run(run), RunStatus.to_string(RunStatus.from_string(status)), end_time_ms=end_time_ms)

    # -- values -----------------------------------------------------------------------------------------
    def _op_log_params(self, record: Record, run: str, params: dict[str, str]) -> None:
        self.runs.log_params(self._run(run), params)

    def _op_set_tags(self, record: Record, run: str, tags: dict[str, str]) -> None:
        self.runs.set_tags(self._run(run), tags)

    def _op_log_metrics(
        self, record: Record, run: str, metrics: dict[str, float], step: int, timestamp_ms: int, model_id: str | None
    ) -> None:
        self.runs.log_metrics(self._run(run), metrics, step=step, model_id=model_id, timestamp_ms=timestamp_ms)

    def _op_log_dataset(
        self, record: Record, run: str, root: str, digest: str, input_shape: list[int], context: str
    ) -> None:
        self.runs.client.log_inputs(self._run(run), datasets=[dataset_input_of(root, digest, input_shape, context)])

    # -- artifacts --------------------------------------------------------------------------------------
    def _op_log_text(self, record: Record, run: str, text: str, artifact_file: str) -> None:
        self.runs.log_text(self._run(run), text, artifact_file)

    def _op_log_file(self, record: Record, run: str, name: str, artifact_path: str | None) -> None:
        """A file attached to the record (a CSV, a PNG drawn by the caller), under its own name."""
        self.runs.log_file(self._run(run), Path(record.files) / name, artifact_path)

    def _op_log_confusion_matrix(
        self, record: Record, run: str, matrix: list[list[int]], title: str, artifact_file: str
    ) -> None:
        self.runs.log_confusion_matrix(self._run(run), np.asarray(matrix), title, artifact_file)

    def _op_log_learning_curves(
        self, record: Record, run: str, epochs: list[int], history: dict[str, list[float]], title: str
    ) -> None:
        self.runs.log_learning_curves(self._run(run), epochs, history, title)
