"""`xraycnn predict`: P(COVID19) and a label for each image, from a model loaded by name."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from xraycnn.data.discovery import CLASS_NAMES
from xraycnn.data.images import UnreadableImageError, input_shape_of, prepare_images
from xraycnn.evaluation import THRESHOLD, predict_probabilities
from xraycnn.registry import load_keras_model
from xraycnn.tracking.store import resolve_store


@dataclass(frozen=True)
class Prediction:
    path: str
    probability: float | None  # None: the file could not be read
    label: str | None
    error: str | None = None


def run_predict(
    model_uri: str,
    images: Sequence[str | Path],
    *,
    tracking_uri: str | None = None,
    console: Console | None = None,
) -> list[Prediction]:
    console = console or Console()
    resolve_store(tracking_uri)
    model = load_keras_model(model_uri)
    shape = input_shape_of(model)
    readable: list[tuple[int, np.ndarray]] = []
    results: list[Prediction | None] = [None] * len(images)
    for i, path in enumerate(images):
        try:
            readable.append((i, prepare_images([path], shape)[0]))
        except (UnreadableImageError, OSError) as exc:
            results[i] = Prediction(str(path), None, None, str(exc))
    if readable:
        probabilities = predict_probabilities(model, np.stack([x for _, x in readable]))
        for (i, _), p in zip(readable, probabilities, strict=True):
            results[i] = Prediction(str(images[i]), float(p), CLASS_NAMES[int(p >= THRESHOLD)])
    predictions = [r for r in results if r is not None]

    table = Table(title=f"{model_uri} (threshold {THRESHOLD})", header_style="bold")
    table.add_column("image")
    table.add_column("P(COVID19)", justify="right")
    table.add_column("label")
    for r in predictions:
        if r.probability is None:
            table.add_row(r.path, "-", f"[red]unreadable: {r.error}[/]")
        else:
            table.add_row(
                r.path, f"{r.probability:.4f}", f"[bold red]{r.label}[/]" if r.label == "COVID19" else r.label
            )
    console.print(table)
    return predictions
