"""`xraycnn predict`: P(COVID19) and a label for each image, from a model loaded by name, at the threshold
the model carries (chosen on validation when it was registered; 0.5 for older models) or, with `--site`, at
the threshold that site set on the version; `--explain` writes a Grad-CAM heatmap of each image into a folder of
its own (`jobs.heatmaps`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from xraycnn.data.discovery import CLASS_NAMES
from xraycnn.data.images import UnreadableImageError, input_shape_of, prepare_images
from xraycnn.evaluation import plots
from xraycnn.evaluation.gradcam import gradcam
from xraycnn.jobs.heatmaps import check_images, heatmap_dir, heatmap_paths
from xraycnn.model.input_guard import GuardedNetwork
from xraycnn.registry import load_keras_model_with_card
from xraycnn.tracking.store import resolve_store


@dataclass(frozen=True)
class Prediction:
    path: str
    probability: float | None  # None: the file could not be read, or the input guard refused it
    label: str | None
    error: str | None = None
    heatmap: str | None = None  # with --explain: the Grad-CAM PNG written for it
    outside_share: float | None = None  # with --explain: the share of its heat outside the lung box
    threshold: float | None = None  # the call's
    model_version: str | None = None  # the registry's version, for a registered model

    def as_dict(self) -> dict[str, object]:
        """As `xraycnn predict --json` prints it (the names the model server answers with)."""
        return {
            "image": self.path,
            "probability_covid19": self.probability,
            "call": self.label,
            "threshold": self.threshold,
            "model_version": self.model_version,
            "error": self.error,
            "heatmap": self.heatmap,
            "heat_outside_lungs": self.outside_share,
        }


def _write_heatmap(image: np.ndarray, heatmap: np.ndarray, title: str, path: Path) -> None:
    fig = plots.heatmap_figure(image, heatmap, title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plots.close(fig)


def run_predict(
    model_uri: str,
    images: Sequence[str | Path],
    *,
    tracking_uri: str | None = None,
    explain: bool = False,
    explain_dir: str | Path | None = None,
    site: str | None = None,
    console: Console | None = None,
    table: bool = True,
) -> list[Prediction]:
    """Each image's prediction, in order; with `table`, printed as one."""
    console = console or Console()
    check_images(images)
    targets = heatmap_paths(images, heatmap_dir(images, explain_dir)) if explain else []
    resolve_store(tracking_uri)
    model, card = load_keras_model_with_card(model_uri)
    threshold, source = card.decision(site)
    shape = input_shape_of(model)
    readable: list[tuple[int, np.ndarray]] = []
    results: list[Prediction | None] = [None] * len(images)
    for i, path in enumerate(images):
        try:
            readable.append((i, prepare_images([path], shape)[0]))
        except (UnreadableImageError, OSError) as exc:
            results[i] = Prediction(str(path), None, None, str(exc))
    if readable:
        probabilities, scores = GuardedNetwork(model, card.input_guard)(np.stack([x for _, x in readable]))
        if scores is not None:
            refused = card.input_guard.refused(scores)
            for (i, _), score, out in zip(readable, scores, refused, strict=True):
                if out:
                    results[i] = Prediction(str(images[i]), None, None, card.input_guard.reason(float(score)))
            readable = [r for r, out in zip(readable, refused, strict=True) if not out]
            probabilities = probabilities[~refused]
    if readable:
        batch = np.stack([x for _, x in readable])
        heatmaps = gradcam(model, batch) if explain else None
        for k, ((i, x), p) in enumerate(zip(readable, probabilities, strict=True)):
            label = CLASS_NAMES[int(p >= threshold)]
            written, share = None, None
            if heatmaps is not None:
                share = float(heatmaps.outside_share[k])
                target = targets[i]
                title = f"{Path(images[i]).name}: P(COVID19) {p:.3f} -> {label}; {share:.0%} of the heat outside"
                _write_heatmap(x, heatmaps.maps[k], title, target)
                written = str(target)
            results[i] = Prediction(str(images[i]), float(p), label, None, written, share)
    predictions = [replace(r, threshold=threshold, model_version=card.version) for r in results if r is not None]
    if table:
        _print_table(console, model_uri, threshold, source, explain, predictions)
    return predictions


def _print_table(
    console: Console, model_uri: str, threshold: float, source: str, explain: bool, predictions: list[Prediction]
) -> None:

    table = Table(title=f"{model_uri} (threshold {threshold:.4f}: {source})", header_style="bold")
    table.add_column("image")
    table.add_column("P(COVID19)", justify="right")
    table.add_column("label")
    if explain:
        table.add_column("heat outside lungs", justify="right")
        table.add_column("heatmap")
    for r in predictions:
        extra = [f"{r.outside_share:.0%}" if r.outside_share is not None else "-", r.heatmap or "-"] if explain else []
        if r.probability is None:
            table.add_row(r.path, "-", f"[red]{r.error}[/]", *(["-", "-"] if explain else []))
        else:
            label = f"[bold red]{r.label}[/]" if r.label == "COVID19" else str(r.label)
            table.add_row(r.path, f"{r.probability:.4f}", label, *extra)
    console.print(table)
