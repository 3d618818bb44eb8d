"""A final model's assessment written into its MLflow run: metrics, plots, the Grad-CAM grid, predictions and
the metrics table (the same for a search's champion, `xraycnn train` and `xraycnn evaluate`)."""

from __future__ import annotations

from typing import Any

from xraycnn.evaluation import THRESHOLD, plots, ranking_metrics
from xraycnn.evaluation.assessment import GRADCAM_PER_OUTCOME, Assessment, assessment_metrics
from xraycnn.evaluation.clinical import AT_THRESHOLD
from xraycnn.evaluation.gradcam import seeded_sample
from xraycnn.regions import uniform_outside_share
from xraycnn.tracking.runs import RunLogger
from xraycnn.tracking.tags import METRICS_ARTIFACT, PREDICTIONS_ARTIFACT


def log_assessment(
    runs: RunLogger, run_id: str, assessment: Assessment, title: str, prefix: str, model_id: str | None = None
) -> None:
    """Metrics (linked to `model_id`'s logged model when given), plots, Grad-CAM grid, predictions and the
    metrics table into `run_id`."""
    labels, p, threshold = assessment.split.labels, assessment.probabilities, assessment.threshold
    runs.log_metrics(run_id, assessment_metrics(assessment, prefix), model_id=model_id)
    overall = assessment.clinical.overall
    if len(set(labels.tolist())) == 2:
        runs.log_figure(run_id, plots.roc_figure(labels, p, f"{title}: ROC"), "plots/roc_curve.png")
        runs.log_figure(
            run_id,
            plots.precision_recall_figure(labels, p, f"{title}: precision-recall", threshold),
            "plots/precision_recall.png",
        )
    calibration = assessment.calibration
    before = None
    if calibration is not None:
        before = (calibration.uncalibrated, float(ranking_metrics(labels, calibration.uncalibrated)["ece"][0]))
    runs.log_figure(
        run_id,
        plots.reliability_figure(labels, p, f"{title}: calibration", overall.metrics["ece"], before),
        "plots/reliability.png",
    )
    if assessment.shift is not None:
        shift = assessment.shift
        runs.log_figure(
            run_id,
            plots.shift_figure(
                shift.rows(),
                shift.values["shift_clean_specificity"],
                threshold,
                f"{title}: calls under acquisition changes\n(worst specificity {shift.describe()})",
            ),
            "plots/acquisition_shift.png",
        )
    runs.log_figure(
        run_id,
        plots.confusion_matrix_figure(overall.confusion(AT_THRESHOLD), f"{title}: threshold {threshold:.3f}"),
        "plots/confusion_matrix_threshold.png",
    )
    runs.log_figure(
        run_id,
        plots.confusion_matrix_figure(overall.confusion(), f"{title}: threshold {THRESHOLD}"),
        "plots/confusion_matrix.png",
    )
    if assessment.heatmaps is not None:
        runs.log_figure(run_id, _gradcam_grid(assessment, title), "plots/gradcam.png")
    runs.log_dataframe_csv(run_id, assessment.predictions(), PREDICTIONS_ARTIFACT)
    runs.log_dataframe_csv(run_id, assessment.table(), METRICS_ARTIFACT)


def _gradcam_grid(assessment: Assessment, title: str) -> Any:
    """The seeded sample of TP, FP, FN and TN images with their heatmaps."""
    explained = len(assessment.heatmaps.maps) if assessment.heatmaps is not None else 0
    labels, p = assessment.split.labels[:explained], assessment.probabilities[:explained]
    groups = seeded_sample(labels, p, assessment.threshold, GRADCAM_PER_OUTCOME, assessment.seed)
    uniform = uniform_outside_share()
    return plots.heatmap_grid(
        assessment.split.images,
        assessment.heatmaps,
        groups,
        assessment.probabilities,
        f"{title}: Grad-CAM at threshold {assessment.threshold:.3f}\nmean {assessment.outside_share:.0%} of the "
        f"heat outside the dashed lung box (a uniform map: {uniform:.0%})",
    )
