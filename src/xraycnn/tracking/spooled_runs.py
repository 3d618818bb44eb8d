"""RunLogger's writes, spooled: the same calls (tracking.writer.RunWriter), journaled on the caller's thread
(cheap JSON) and sent by a `SpoolSender`. A run created here is named by a spool key until the store has
created it; every other call takes that key wherever a run id goes."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xraycnn.data.dataset import PreparedData
from xraycnn.tracking.runs import MAX_TAG_VALUE, param_value
from xraycnn.tracking.sender import SpoolSender
from xraycnn.tracking.spool import new_run_key
from xraycnn.tracking.writer import RunWriter


def _now_ms() -> int:
    return int(time.time() * 1000)


class SpooledRuns(RunWriter):
    def __init__(self, sender: SpoolSender) -> None:
        self.sender = sender

    def create_child(
        self,
        experiment_id: str,
        parent: str | None,
        run_name: str,
        tags: Mapping[str, Any],
        *,
        trial_id: str | None = None,
        continues: str | None = None,
    ) -> str:
        """A run, child of `parent` (a run id or key) when given; returns its key. With `trial_id`, the store
        numbers the attempt; with `continues`, it links the finished run of the trial a Hyperband continuation
        starts from."""
        key = new_run_key()
        self.sender.submit(
            "create_run",
            {
                "key": key,
                "experiment_id": experiment_id,
                "parent": parent,
                "name": run_name,
                "tags": {k: str(v) for k, v in tags.items() if v is not None},
                "trial_id": trial_id,
                "continues": continues,
            },
        )
        return key

    def log_params(self, run: str, params: Mapping[str, Any]) -> None:
        values = {k: param_value(v) for k, v in params.items() if v is not None}
        if values:
            self.sender.submit("log_params", {"run": run, "params": values})

    def set_tags(self, run: str, tags: Mapping[str, Any]) -> None:
        values = {k: str(v)[:MAX_TAG_VALUE] for k, v in tags.items() if v is not None}
        if values:
            self.sender.submit("set_tags", {"run": run, "tags": values})

    def log_metrics(self, run: str, metrics: Mapping[str, float], step: int = 0, model_id: str | None = None) -> None:
        values = {k: float(v) for k, v in metrics.items() if v is not None}
        if values:
            args = {"run": run, "metrics": values, "step": step, "timestamp_ms": _now_ms(), "model_id": model_id}
            self.sender.submit("log_metrics", args)

    def log_text(self, run: str, text: str, artifact_file: str) -> None:
        self.sender.submit("log_text", {"run": run, "text": text, "artifact_file": artifact_file})

    def log_file(self, run: str, local: Path, artifact_path: str | None) -> None:
        args = {"run": run, "name": local.name, "artifact_path": artifact_path}
        self.sender.submit("log_file", args, files={local.name: local})

    def log_dataset(self, run: str, data: PreparedData, context: str = "training") -> None:
        args = {
            "run": run,
            "root": data.root,
            "digest": data.digest,
            "input_shape": list(data.input_shape),
            "context": context,
        }
        self.sender.submit("log_dataset", args)

    def log_confusion_matrix(self, run: str, matrix: np.ndarray, title: str, artifact_file: str) -> None:
        """Drawn by the sending thread."""
        args = {"run": run, "matrix": np.asarray(matrix).tolist(), "title": title, "artifact_file": artifact_file}
        self.sender.submit("log_confusion_matrix", args)

    def log_learning_curves(
        self, run: str, epochs: Sequence[int], history: Mapping[str, Sequence[float]], title: str
    ) -> None:
        if epochs:
            args = {
                "run": run,
                "epochs": list(epochs),
                "history": {k: list(v) for k, v in history.items()},
                "title": title,
            }
            self.sender.submit("log_learning_curves", args)

    def end(self, run: str, status: str = "FINISHED", error: str | None = None) -> None:
        if error:
            self.note_error(run, error)
        self.sender.submit("end_run", {"run": run, "status": status, "end_time_ms": _now_ms()})
