"""What goes into MLflow runs: params, per-epoch metrics, test metrics, plots, dataset inputs, run status.

All writes name their run explicitly through one `MlflowClient`, so trial runs can be opened and closed
from Keras Tuner's hooks (no fluent run stack, no autolog) and a crash never logs into the wrong run.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient
from mlflow.types import Schema, TensorSpec
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT, MLFLOW_PARENT_RUN_ID

from xraycnn.data.dataset import PreparedData
from xraycnn.evaluation import plots
from xraycnn.tracking.writer import RunWriter

MAX_TAG_VALUE = 5000  # MLflow's limit is 8000 on SQL stores; error messages are cut to stay well inside it
_BATCH = 100  # log_batch accepts at most 100 params and 1000 metrics per call


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def param_value(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def dataset_input(data: PreparedData, context: str = "training") -> DatasetInput:
    """The dataset as an MLflow input: its folder, name and our digest of every file's bytes."""
    return dataset_input_of(data.root, data.digest, data.input_shape, context)


def dataset_input_of(root: str, digest: str, input_shape: Sequence[int], context: str = "training") -> DatasetInput:
    with warnings.catch_warnings():  # "can be interpreted in multiple ways": both readings are 'local'
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(root)
    schema = Schema(
        [
            TensorSpec(np.dtype(np.uint8), (-1, *input_shape), "image"),
            TensorSpec(np.dtype(np.int32), (-1,), "label"),
        ]
    )
    dataset = MetaDataset(source, name=Path(root).name, digest=digest, schema=schema)
    return DatasetInput(Dataset(**dataset.to_dict()), tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])


class RunLogger(RunWriter):
    """Writes to runs by id, at once, through one client of the store."""

    def __init__(self, client: MlflowClient) -> None:
        self.client = client

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        items = [Param(k, param_value(v)) for k, v in params.items() if v is not None]
        for chunk in _chunks(items, _BATCH):
            self.client.log_batch(run_id, params=list(chunk), synchronous=True)

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        items = [RunTag(k, str(v)[:MAX_TAG_VALUE]) for k, v in tags.items() if v is not None]
        for chunk in _chunks(items, _BATCH):
            self.client.log_batch(run_id, tags=list(chunk), synchronous=True)

    def log_metrics(
        self,
        run_id: str,
        metrics: Mapping[str, float],
        step: int = 0,
        model_id: str | None = None,
        timestamp_ms: int | None = None,
    ) -> None:
        """`model_id` (a registered version's logged model) links the metrics to that model in the UI.
        `timestamp_ms`: when the values were measured (a replayed write keeps its own, so that sending it twice
        stores it once: MLflow drops a metric equal to one it has in key, value, step and timestamp)."""
        now = timestamp_ms if timestamp_ms is not None else int(time.time() * 1000)
        items = [
            Metric(k, float(v), now, step, model_id=model_id)
            for k, v in metrics.items()
            if v is not None and np.isfinite(v)
        ]
        for chunk in _chunks(items, 1000):
            self.client.log_batch(run_id, metrics=list(chunk), synchronous=True)

    def log_figure(self, run_id: str, fig: Figure, artifact_file: str) -> None:
        try:
            self.client.log_figure(run_id, fig, artifact_file)
        finally:
            plots.close(fig)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self.client.log_text(run_id, text, artifact_file)

    def log_file(self, run_id: str, local: Path, artifact_path: str | None) -> None:
        self.client.log_artifact(run_id, str(local), artifact_path)

    def log_dataset(self, run_id: str, data: PreparedData, context: str = "training") -> None:
        self.client.log_inputs(run_id, datasets=[dataset_input(data, context)])

    def log_confusion_matrix(self, run_id: str, matrix: np.ndarray, title: str, artifact_file: str) -> None:
        self.log_figure(run_id, plots.confusion_matrix_figure(np.asarray(matrix), title), artifact_file)

    def log_learning_curves(
        self, run_id: str, epochs: Sequence[int], history: Mapping[str, Sequence[float]], title: str
    ) -> None:
        if epochs:
            self.log_figure(run_id, plots.learning_curves(epochs, history, title), "plots/learning_curves.png")

    def create_child(self, experiment_id: str, parent_run_id: str, run_name: str, tags: Mapping[str, Any]) -> str:
        run = self.client.create_run(
            experiment_id,
            run_name=run_name,
            tags={MLFLOW_PARENT_RUN_ID: parent_run_id, **{k: str(v) for k, v in tags.items()}},
        )
        return run.info.run_id

    def end(
        self, run_id: str, status: str = "FINISHED", error: str | None = None, end_time_ms: int | None = None
    ) -> None:
        if error:
            self.note_error(run_id, error)
        status = RunStatus.to_string(RunStatus.from_string(status))
        self.client.set_terminated(run_id, status=status, end_time=end_time_ms)
