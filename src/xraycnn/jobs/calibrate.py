"""`xraycnn calibrate`: a site's own decision threshold, set from its own NORMAL films (evaluation.site), stored
on the registered model version as the tag `xraycnn.site.<NAME>` and used by `predict`, `evaluate` and
`serve` with `--site NAME`. Each calibration is also one MLflow run (experiment `xraycnn-site-calibrations`)
with the films' scores and their histogram, linked to the version."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from rich.console import Console

from xraycnn.data.discovery import discover_films
from xraycnn.data.images import decode_files, input_shape_of
from xraycnn.errors import DataUnusableError, XrayCnnError
from xraycnn.evaluation.site import CONFIDENCE, SiteThreshold, site_threshold
from xraycnn.jobs.spooling import notice_to
from xraycnn.model.predict import predict_probabilities
from xraycnn.registry import ModelCard, load_keras_model_with_card, set_site_threshold
from xraycnn.site_request import SiteCalibrationError, check_request
from xraycnn.tracking.service import Tracking
from xraycnn.tracking.store import resolve_store
from xraycnn.tracking.tags import CALIBRATIONS_EXPERIMENT, TAG_PREFIX

UNREADABLE_LISTED = 20  # unreadable films named in the refusal; the rest are counted


@dataclass(frozen=True)
class CalibrateResult:
    site: SiteThreshold
    card: ModelCard
    run_id: str


def run_calibrate(
    model_uri: str,
    normals_dir: str | Path,
    max_false_positive_rate: float,
    site: str,
    *,
    confidence: float = CONFIDENCE,
    tracking_uri: str | None = None,
    console: Console | None = None,
) -> CalibrateResult:
    console = console or Console()
    check_request(site, max_false_positive_rate, confidence)
    folder, listing = discover_films(normals_dir)
    files = listing.files
    store = resolve_store(tracking_uri)
    model, card = load_keras_model_with_card(model_uri)
    if card.version is None:
        raise XrayCnnError(
            f"{model_uri} is not a registered model version; a site threshold is stored on one: give "
            "models:/NAME@ALIAS or models:/NAME/VERSION"
        )
    height, _, channels = input_shape_of(model)
    with console.status(f"Decoding {len(files)} film(s) of {folder} at {height}px ..."):
        films, kept, skipped = decode_files(list(files), height, channels)
    if skipped:
        listed = "; ".join(f"{Path(s.path).name}: {s.reason}" for s in skipped[:UNREADABLE_LISTED])
        more = f" and {len(skipped) - UNREADABLE_LISTED} more" if len(skipped) > UNREADABLE_LISTED else ""
        raise DataUnusableError(
            f"{folder}: {len(skipped)} of {len(files)} film(s) cannot be read ({listed}{more}); a site's threshold "
            "is set from every film it gives: fix or remove them and run the same command again"
        )
    scores = predict_probabilities(model, films)
    try:
        threshold = site_threshold(site, scores, max_false_positive_rate, confidence)
    except SiteCalibrationError as exc:
        raise SiteCalibrationError(f"{folder}: {exc}") from None
    run_id = _log(
        Tracking(store, notice_to(console)), card, model_uri, folder, [files[i] for i in kept], scores, threshold
    )
    stored = {
        **threshold.as_dict(),
        "calibrated_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "run_id": run_id,
    }
    stored["normals_folder"] = str(folder)
    set_site_threshold(store.client(), card.name, card.version, site, json.dumps(stored))
    console.print(
        f"Site [bold]{site}[/] on {card.name} v{card.version}: threshold {threshold.threshold:.4f} "
        f"(the model's own: {card.threshold if card.threshold is not None else 0.5:.4f}) from {threshold.normals} "
        f"normal films: {threshold.promise()}. Use it with --site {site} (predict, evaluate, serve); stored as the "
        f"version's tag {TAG_PREFIX}site.{site}; calibration run {run_id}.",
        highlight=False,
    )
    return CalibrateResult(threshold, card, run_id)


def _log(
    tracking: Tracking,
    card: ModelCard,
    model_uri: str,
    folder: Path,
    files: list[Path],
    scores: np.ndarray,
    threshold: SiteThreshold,
) -> str:
    runs = tracking.direct
    tags = {
        f"{TAG_PREFIX}kind": "site-calibration",
        f"{TAG_PREFIX}site": threshold.site,
        f"{TAG_PREFIX}model_uri": model_uri,
        f"{TAG_PREFIX}model_name": card.name,
        f"{TAG_PREFIX}model_version": card.version,
        "mlflow.note.content": f"Site {threshold.site}: {threshold.promise()}, from {folder}.",
    }
    name = f"site {threshold.site} {card.name} v{card.version} {time.strftime('%Y%m%d-%H%M%S')}"
    with tracking.one_off_run(CALIBRATIONS_EXPERIMENT, name, tags) as run_id:
        runs.log_params(
            run_id,
            {
                "site": threshold.site,
                "max_false_positive_rate": threshold.max_false_positive_rate,
                "confidence": threshold.confidence,
                "normals": threshold.normals,
                "normals_folder": str(folder),
            },
        )
        runs.log_metrics(
            run_id,
            {
                "threshold": threshold.threshold,
                "observed_false_positive_rate": threshold.observed_rate,
                "expected_false_positive_rate": threshold.expected_rate,
                "false_positive_rate_low": threshold.rate_low,
                "false_positive_rate_high": threshold.rate_high,
                "model_threshold": card.threshold if card.threshold is not None else 0.5,
            },
        )
        runs.log_figure(run_id, _histogram(scores, threshold, card), "plots/site_scores.png")
        frame = pd.DataFrame({"file": [f.name for f in files], "probability_covid19": scores})
        frame["called"] = np.where(scores >= threshold.threshold, "COVID19", "NORMAL")
        runs.log_dataframe_csv(run_id, frame, "calibration/normal_scores.csv")
    return run_id


def _histogram(scores: np.ndarray, threshold: SiteThreshold, card: ModelCard) -> Figure:
    fig = Figure(figsize=(5.0, 3.2))
    ax = fig.subplots()
    ax.hist(scores, bins=40, range=(0, 1), color="#1f77b4")
    ax.axvline(threshold.threshold, color="#d62728", label=f"site threshold {threshold.threshold:.3f}")
    if card.threshold is not None:
        ax.axvline(card.threshold, color="grey", linestyle=":", label=f"model's own {card.threshold:.3f}")
    ax.set_xlabel("P(COVID19) of the site's normal films")
    ax.set_ylabel("films")
    ax.set_title(f"site {threshold.site}: {threshold.normals} normal films", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
