"""The search report: one self-contained HTML page and its PNGs, built from what MLflow holds."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure
from mlflow.tracking import MlflowClient

from xraycnn.data.discovery import CLASS_NAMES
from xraycnn.evaluation import THRESHOLD, confusion_counts, plots
from xraycnn.report import figures, page
from xraycnn.report.snapshot import SearchSnapshot, latest_search_run, load_snapshot
from xraycnn.tracking.tags import EXPERIMENT_PREFIX

REPORT_ARTIFACT_DIR = "report"
PAGE_NAME = "report.html"


@dataclass(frozen=True)
class Report:
    folder: Path
    page: Path
    figures: list[Path]
    snapshot: SearchSnapshot


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=110)
    finally:
        plots.close(fig)
    return buffer.getvalue()


def build_figures(snapshot: SearchSnapshot) -> dict[str, tuple[bytes, str]]:
    """PNG bytes and caption of every figure the data allows, in page order."""
    out: dict[str, tuple[bytes, str]] = {}
    objective, trials = snapshot.objective, snapshot.trials
    best = snapshot.best_trial_id
    if best is not None:
        out["parallel_coordinates.png"] = (
            _png(figures.parallel_coordinates(trials, snapshot.hyperparameters, objective, best)),
            f"Each finished trial is one line through its hyperparameter values, coloured by {objective}; the "
            "best trial in red. Only the hyperparameters that differ between trials are shown.",
        )
        out["objective_over_trials.png"] = (
            _png(figures.objective_over_trials(trials, objective, snapshot.direction)),
            f"{objective} of each trial, in the order the tuner proposed them, and the best so far.",
        )
    if snapshot.curves:
        out["top_learning_curves.png"] = (
            _png(figures.top_learning_curves(snapshot.curves, objective)),
            f"Validation curves of the {len(snapshot.curves)} best trials (Hyperband continuations joined to "
            "the epochs they trained on from).",
        )
    predictions = snapshot.predictions
    if predictions is not None and len(predictions):
        labels = (predictions["label"] == CLASS_NAMES[1]).astype(int).to_numpy()
        probabilities = predictions["probability_covid19"].to_numpy(dtype=float)
        title = f"best trial {best}"
        if len(set(labels.tolist())) == 2:
            out["roc_curve.png"] = (
                _png(plots.roc_figure(labels, probabilities, f"{title}: test ROC")),
                "ROC of the search's best model on the test set (COVID19 positive).",
            )
        # the threshold chosen on validation (older searches: 0.5)
        threshold = snapshot.parent.data.metrics.get("test_threshold", THRESHOLD)
        matrix = confusion_counts(labels, probabilities, threshold)
        out["confusion_matrix.png"] = (
            _png(plots.confusion_matrix_figure(matrix, f"{title}: test, threshold {threshold:.3f}")),
            f"Its confusion matrix on the test set at the threshold chosen on validation ({threshold:.3f}).",
        )
    return out


def report_folder(reports_dir: Path, experiment: str) -> Path:
    """`reports_dir`'s folder for an MLflow experiment: its name without the project's prefix, made one safe
    path part (an absolute name, `..` or a `/` in it cannot lead outside `reports_dir`)."""
    part = re.sub(r"[^A-Za-z0-9._-]+", "_", experiment.removeprefix(EXPERIMENT_PREFIX)).lstrip(".") or "experiment"
    return Path(reports_dir) / part


def write_report(client: MlflowClient, parent_run_id: str, reports_dir: Path, log: bool = True) -> Report:
    """Write `reports_dir/<experiment>/report.html` and its PNGs; log them to the parent run under report/."""
    snapshot = load_snapshot(client, parent_run_id)
    folder = report_folder(reports_dir, snapshot.experiment)
    folder.mkdir(parents=True, exist_ok=True)
    rendered = build_figures(snapshot)
    pngs = []
    for name, (png, _) in rendered.items():
        (folder / name).write_bytes(png)
        pngs.append(folder / name)
    html = folder / PAGE_NAME
    html.write_text(page.render(snapshot, rendered), encoding="utf-8")
    if log:
        for path in [html, *pngs]:
            client.log_artifact(parent_run_id, str(path), REPORT_ARTIFACT_DIR)
    return Report(folder, html, pngs, snapshot)


__all__ = [
    "PAGE_NAME",
    "REPORT_ARTIFACT_DIR",
    "Report",
    "build_figures",
    "latest_search_run",
    "report_folder",
    "write_report",
]
