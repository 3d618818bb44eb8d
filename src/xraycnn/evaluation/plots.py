"""Every figure of the project: learning curves, confusion matrix, ROC, precision-recall, reliability, and
Grad-CAM heatmaps (one film, or a grid of TP/FP/FN/TN films).

Figures are built with the object API (`Figure`), never pyplot: no global figure registry to leak into or
to race on, so they can be rendered off the training thread.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from xraycnn.data.discovery import CLASS_NAMES
from xraycnn.evaluation import OUTCOMES
from xraycnn.evaluation.calibration import reliability
from xraycnn.regions import LUNG_BOX

if TYPE_CHECKING:  # gradcam needs TensorFlow; the figures do not
    from xraycnn.evaluation.gradcam import Heatmaps

# Loss and AUC (the objective): every axis costs its tick layout, and this plot is rendered once per trial
# on the CPU the training uses. Accuracy, precision and recall per epoch are in MLflow's own charts.
CURVE_METRICS = ("loss", "auc")


def learning_curves(epochs: Sequence[int], history: Mapping[str, Sequence[float]], title: str) -> Figure:
    """Training vs validation loss and AUC, one panel each, on the true epoch numbers."""
    names = [m for m in CURVE_METRICS if m in history or f"val_{m}" in history]
    fig = Figure(figsize=(3.6 * len(names), 3.0))
    axes = fig.subplots(1, len(names), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        for key, style in ((name, "-o"), (f"val_{name}", "--s")):
            if key in history:
                ax.plot(
                    epochs,
                    history[key],
                    style,
                    markersize=3,
                    label="validation" if key.startswith("val_") else "train",
                )
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    # Fixed margins: tight_layout draws the whole figure once more to measure it, which doubled the cost of
    # this plot (rendered once per trial, on the CPU the training uses).
    fig.subplots_adjust(left=0.09, right=0.98, bottom=0.16, top=0.82, wspace=0.25)
    return fig


def confusion_matrix_figure(matrix: np.ndarray, title: str) -> Figure:
    fig = Figure(figsize=(3.6, 3.2))
    ax = fig.subplots()
    ax.imshow(matrix, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(
            j,
            i,
            str(int(count)),
            ha="center",
            va="center",
            color="white" if count > matrix.max() / 2 else "black",
        )
    ax.set_xticks([0, 1], CLASS_NAMES)
    ax.set_yticks([0, 1], CLASS_NAMES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def roc_figure(labels: np.ndarray, probabilities: np.ndarray, title: str) -> Figure:
    fpr, tpr, _ = roc_curve(labels, probabilities)
    auc = roc_auc_score(labels, probabilities)
    fig = Figure(figsize=(3.6, 3.4))
    ax = fig.subplots()
    ax.plot(fpr, tpr, label=f"AUC = {auc:.4f}")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    return _curve_done(
        fig, ax, "1 - specificity (false-positive rate)", "sensitivity (true-positive rate)", title, "lower right"
    )


def precision_recall_figure(
    labels: np.ndarray, probabilities: np.ndarray, title: str, threshold: float | None = None
) -> Figure:
    precision, recall, cuts = precision_recall_curve(labels, probabilities)
    fig = Figure(figsize=(3.6, 3.4))
    ax = fig.subplots()
    ax.plot(recall, precision, label=f"AP = {average_precision_score(labels, probabilities):.4f}")
    if threshold is not None and len(cuts):
        at = min(int(np.searchsorted(cuts, threshold)), len(cuts) - 1)
        ax.plot(recall[at], precision[at], "o", color="#d62728", label=f"threshold {threshold:.3f}")
    ax.axhline(float(np.mean(labels)), linestyle=":", color="grey")
    return _curve_done(fig, ax, "sensitivity (recall)", "PPV (precision)", title, "lower left", legend_size=8)


def reliability_figure(
    labels: np.ndarray,
    probabilities: np.ndarray,
    title: str,
    ece: float,
    uncalibrated: tuple[np.ndarray, float] | None = None,
) -> Figure:
    """Observed share of COVID19 against the mean predicted probability, per tenth of probability; with
    `uncalibrated` (the network's probabilities before its Platt scaling, and their ECE), that curve too."""
    r = reliability(labels, probabilities)
    used = r.counts > 0
    fig = Figure(figsize=(3.6, 3.4))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfectly calibrated")
    if uncalibrated is not None:
        before = reliability(labels, uncalibrated[0])
        kept = before.counts > 0
        ax.plot(
            before.predicted[kept],
            before.observed[kept],
            "--s",
            markersize=3,
            color="#999999",
            label=f"before calibration (ECE {uncalibrated[1]:.3f})",
        )
    ax.plot(r.predicted[used], r.observed[used], "-o", markersize=4, label=f"model (ECE {ece:.3f})")
    for x, y, n in zip(r.predicted[used], r.observed[used], r.counts[used], strict=True):
        ax.annotate(str(int(n)), (x, y), textcoords="offset points", xytext=(3, -9), fontsize=6, color="grey")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    return _curve_done(
        fig, ax, "mean predicted P(COVID19)", "observed share of COVID19", title, "upper left", legend_size=8
    )


def shift_figure(rows: Sequence[tuple[str, float, float, float]], clean: float, threshold: float, title: str) -> Figure:
    """Per acquisition change (evaluation.acquisition), the share of NORMAL films still called NORMAL at the
    threshold and the share of COVID-19 films still called COVID-19, against the films as given."""
    names = [r[0] for r in rows]
    fig = Figure(figsize=(5.6, 0.32 * len(names) + 1.4))
    ax = fig.subplots()
    y = np.arange(len(names))
    ax.barh(y - 0.2, [r[1] for r in rows], height=0.4, color="#1f77b4", label="NORMAL kept NORMAL (specificity)")
    ax.barh(y + 0.2, [r[2] for r in rows], height=0.4, color="#ff7f0e", label="COVID-19 kept COVID-19 (sensitivity)")
    ax.axvline(clean, color="#1f77b4", linestyle=":", label=f"specificity as given ({clean:.3f})")
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"share of the films at threshold {threshold:.3f}")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="lower left")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return fig


def _curve_done(
    fig: Figure, ax, xlabel: str, ylabel: str, title: str, legend: str, legend_size: float | None = None
) -> Figure:
    """The labels, title, legend and grid every curve of a model's scores carries."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(loc=legend, fontsize=legend_size)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def overlay(ax, image: np.ndarray, heatmap: np.ndarray) -> None:
    """The film in grey, the heatmap over it, and the lung box the shortcut indicator uses."""
    ax.imshow(image[..., 0] if image.shape[-1] == 1 else image.astype(np.uint8), cmap="gray", vmin=0, vmax=255)
    ax.imshow(heatmap, cmap=colormaps["jet"], alpha=0.35, vmin=0, vmax=1)
    height, width = heatmap.shape
    top, bottom, left, right = LUNG_BOX
    ax.add_patch(
        Rectangle(
            (left * width, top * height),
            (right - left) * width,
            (bottom - top) * height,
            fill=False,
            edgecolor="white",
            linewidth=0.8,
            linestyle="--",
        )
    )
    ax.set_axis_off()


def heatmap_grid(
    images: np.ndarray,
    heatmaps: Heatmaps,
    groups: dict[str, np.ndarray],
    probabilities: np.ndarray,
    title: str,
) -> Figure:
    """One row per outcome (TP, FP, FN, TN), one column per sampled image; `groups` holds each outcome's
    indices into `images`, `probabilities` and `heatmaps`."""
    columns = max([len(v) for v in groups.values()] + [1])
    fig = Figure(figsize=(1.9 * columns + 0.6, 2.1 * len(OUTCOMES)))
    axes = fig.subplots(len(OUTCOMES), columns, squeeze=False)
    for row, outcome in enumerate(OUTCOMES):
        for col in range(columns):
            ax = axes[row][col]
            ax.set_axis_off()
            if col < len(groups[outcome]):
                index = groups[outcome][col]
                overlay(ax, images[index], heatmaps.maps[index])
                ax.set_title(f"p={probabilities[index]:.2f}, {heatmaps.outside_share[index]:.0%} outside", fontsize=7)
        axes[row][0].text(-0.08, 0.5, outcome, transform=axes[row][0].transAxes, ha="right", va="center", fontsize=10)
    fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.06, right=0.99, top=0.9, bottom=0.01, wspace=0.05, hspace=0.22)
    return fig


def heatmap_figure(image: np.ndarray, heatmap: np.ndarray, title: str) -> Figure:
    """One film with its heatmap (`xraycnn predict --explain`)."""
    fig = Figure(figsize=(3.2, 3.4))
    ax = fig.subplots()
    overlay(ax, image, heatmap)
    ax.set_title(title, fontsize=8)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.9)
    return fig


def close(fig: Figure) -> None:
    fig.clear()  # drop the artists now rather than at the next garbage collection
