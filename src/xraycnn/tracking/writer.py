"""The one interface every job writes MLflow runs through, by run id: `RunLogger` writes at once through the
store's client, `SpooledRuns` journals the same calls and a sender writes them (a search and its workers). What
is made of other writes (a table as a CSV file, a run's error, a trial's test scores) is made here once."""

from __future__ import annotations

import tempfile
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from xraycnn.data.dataset import PreparedData
from xraycnn.data.images import SkippedFile
from xraycnn.evaluation.clinical import Scored
from xraycnn.tracking.tags import ERROR_TAG

SKIPPED_FILES_ARTIFACT = "data/skipped_files.csv"


class RunWriter(ABC):
    """Writes to runs named by id (a spooled run: by its key until the store has created it)."""

    @abstractmethod
    def log_params(self, run: str, params: Mapping[str, Any]) -> None: ...

    @abstractmethod
    def set_tags(self, run: str, tags: Mapping[str, Any]) -> None: ...

    @abstractmethod
    def log_metrics(self, run: str, metrics: Mapping[str, float], step: int = 0, model_id: str | None = None) -> None:
        """Non-finite values and None are left out (MLflow refuses them)."""

    @abstractmethod
    def log_text(self, run: str, text: str, artifact_file: str) -> None: ...

    @abstractmethod
    def log_file(self, run: str, local: Path, artifact_path: str | None) -> None:
        """A local file as an artifact, under its own name; it may be removed once this returns."""

    @abstractmethod
    def log_dataset(self, run: str, data: PreparedData, context: str = "training") -> None: ...

    @abstractmethod
    def log_confusion_matrix(self, run: str, matrix: np.ndarray, title: str, artifact_file: str) -> None: ...

    @abstractmethod
    def log_learning_curves(
        self, run: str, epochs: Sequence[int], history: Mapping[str, Sequence[float]], title: str
    ) -> None: ...

    @abstractmethod
    def end(self, run: str, status: str = "FINISHED", error: str | None = None) -> None:
        """Close the run with `status`, noting `error` first (`note_error`) when given."""

    # -- made of the writes above ------------------------------------------------------------------------
    def log_dataframe_csv(self, run: str, frame: pd.DataFrame, artifact_file: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / Path(artifact_file).name
            frame.to_csv(local, index=False)
            parent = str(Path(artifact_file).parent)
            self.log_file(run, local, None if parent == "." else parent)

    def log_skipped_files(self, run: str, skipped: Sequence[SkippedFile]) -> None:
        """The files a job could not read, with why, as `data/skipped_files.csv` (nothing when none)."""
        if skipped:
            frame = pd.DataFrame([{"path": s.path, "reason": s.reason} for s in skipped])
            self.log_dataframe_csv(run, frame, SKIPPED_FILES_ARTIFACT)

    def log_scores(self, run: str, scored: Scored, title: str, prefix: str = "test_") -> None:
        """A trial's test metrics (prefixed, never used for selection) and its confusion matrix at 0.5."""
        self.log_metrics(run, scored.flat(prefix))
        self.log_confusion_matrix(
            run, scored.confusion(), f"{title}: test confusion matrix", "plots/confusion_matrix.png"
        )

    def note_error(self, run: str, error: str) -> None:
        """Why a run failed: its last line as the tag `xraycnn.error`, the whole of it as `error.txt`."""
        self.set_tags(run, {ERROR_TAG: error.strip().splitlines()[-1] if error.strip() else error})
        self.log_text(run, error, "error.txt")
