"""RunLogger's writes, spooled: the same calls, journaled on the caller's thread (cheap JSON) and sent by a
`SpoolSender`. A run created here is named by a spool key until the store has created it; every other call
takes that key wherever a run id goes."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from xraycnn.data.dataset import PreparedData
from xraycnn.data.images import SkippedFile
from xraycnn.evaluation.clinical import Scored
from xraycnn.tracking.runs import MAX_TAG_VALUE, param_value
from xraycnn.tracking.sender import SpoolSender
from xraycnn.tracking.spool import new_run_key
from xraycnn.tracking.tags import ERROR_TAG


def _now_ms() -> int:
    return int(time.time() * 1000)


class SpooledRuns:
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

    def log_dataframe_csv(self, run: str, frame: Any, artifact_file: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / Path(artifact_file).name
            frame.to_csv(local, index=False)
            parent = str(Path(artifact_file).parent)
            args = {"run": run, "name": local.name, "artifact_path": None if parent == "." else parent}
            self.sender.submit("log_file", args, files={local.name: local})

    def log_skipped_files(self, run: str, skipped: Sequence[SkippedFile]) -> None:
        if skipped:
            frame = pd.DataFrame([{"path": s.path, "reason": s.reason} for s in skipped])
            self.log_dataframe_csv(run, frame, "data/skipped_files.csv")

    def log_dataset(self, run: str, data: PreparedData, context: str = "training") -> None:
        args = {
            "run": run,
            "root": data.root,
            "digest": data.digest,
            "input_shape": list(data.input_shape),
            "context": context,
        }
        self.sender.submit("log_dataset", args)

    def log_scores(self, run: str, scored: Scored, title: str, prefix: str = "test_") -> None:
        """A trial's test metrics and its confusion matrix at 0.5 (drawn by the sending thread)."""
        self.log_metrics(run, scored.flat(prefix))
        args = {
            "run": run,
            "matrix": scored.confusion().tolist(),
            "title": f"{title}: test confusion matrix",
            "artifact_file": "plots/confusion_matrix.png",
        }
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

    def note_error(self, run: str, error: str) -> None:
        """Why a run failed: its last line as the tag `xraycnn.error`, the whole of it as `error.txt`."""
        self.set_tags(run, {ERROR_TAG: error.strip().splitlines()[-1] if error.strip() else error})
        self.log_text(run, error, "error.txt")

    def end(self, run: str, status: str = "FINISHED", error: str | None = None) -> None:
        if error:
            self.note_error(run, error)
        self.sender.submit("end_run", {"run": run, "status": status, "end_time_ms": _now_ms()})
