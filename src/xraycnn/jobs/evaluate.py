"""`xraycnn evaluate`: any logged or registered model on any labelled folder, as one MLflow evaluation run
linked to the model version: clinical metrics with intervals at the model's threshold (or a site's, `--site`)
and at 0.5, the shortcut audit (evaluation.shortcuts), both per source when a MANIFEST.csv says where the
images come from, the calls under acquisition changes (evaluation.acquisition), plots, Grad-CAM and per-image
predictions."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from xraycnn.data.external import LabeledImages, load_labeled_folder
from xraycnn.data.images import input_shape_of
from xraycnn.evaluation.acquisition import ShiftScores, source_films
from xraycnn.evaluation.assessment import Assessment, assess
from xraycnn.evaluation.clinical import AT_THRESHOLD, REPORTED, THRESHOLD_FREE, Scored
from xraycnn.evaluation.shortcuts import FIGURES
from xraycnn.evaluation.site import SiteThreshold
from xraycnn.jobs.spooling import notice_to
from xraycnn.regions import uniform_outside_share
from xraycnn.registry import ModelCard, load_keras_model_with_card
from xraycnn.tracking.assessment_log import log_assessment
from xraycnn.tracking.service import Tracking
from xraycnn.tracking.store import resolve_store
from xraycnn.tracking.tags import EVALUATIONS_EXPERIMENT, TAG_PREFIX


@dataclass(frozen=True)
class EvaluateResult:
    run_id: str
    card: ModelCard
    data: LabeledImages
    assessment: Assessment


def run_evaluate(
    model_uri: str,
    data_dir: str | Path,
    *,
    tracking_uri: str | None = None,
    resamples: int = 1000,
    seed: int = 0,
    site: str | None = None,
    console: Console | None = None,
) -> EvaluateResult:
    console = console or Console()
    store = resolve_store(tracking_uri)
    model, card = load_keras_model_with_card(model_uri)
    threshold, rule = card.decision(site)
    height, _, channels = input_shape_of(model)
    with console.status(f"Decoding {data_dir} at {height}px ..."):
        data = load_labeled_folder(data_dir, height, channels)
        source = source_films([data.root / f for f in data.split.files], height, channels)
    counts = data.split.class_counts()
    console.print(
        f"{model_uri}{f' (v{card.version})' if card.version else ''}, threshold {threshold:.4f} ({rule}); "
        f"{data.root}: {len(data.split)} images ({', '.join(f'{k} {v}' for k, v in counts.items())})"
        + (f", {len(set(data.sources))} sources" if data.sources else "")
        + (f"; skipped {len(data.skipped)} unreadable file(s)" if data.skipped else "")
    )
    with console.status(f"Scoring, acquisition changes, {resamples} bootstrap resamples, Grad-CAM ..."):
        assessment = assess(
            model,
            data.split,
            threshold,
            rule,
            sources=data.sources,
            resamples=resamples,
            seed=seed,
            source=source,
            guard=card.input_guard,
        )
    run_id = _log(Tracking(store, notice_to(console)), model_uri, card, data, assessment, site)
    _print(console, assessment)
    if site is not None:
        _print_site(console, card, site, assessment)
    console.print(f"Logged as run {run_id} in MLflow experiment {EVALUATIONS_EXPERIMENT!r}.")
    return EvaluateResult(run_id, card, data, assessment)


def _log(
    tracking: Tracking,
    model_uri: str,
    card: ModelCard,
    data: LabeledImages,
    assessment: Assessment,
    site: str | None = None,
) -> str:
    runs = tracking.direct
    model_label = f"{card.name} v{card.version}" if card.version else model_uri
    tags = {
        f"{TAG_PREFIX}kind": "evaluation",
        f"{TAG_PREFIX}model_uri": model_uri,
        f"{TAG_PREFIX}model_name": card.name,
        f"{TAG_PREFIX}model_version": card.version,
        f"{TAG_PREFIX}model_run_id": card.run_id,
        f"{TAG_PREFIX}dataset_root": str(data.root),
        f"{TAG_PREFIX}dataset_digest": data.digest,
        f"{TAG_PREFIX}threshold_rule": assessment.clinical.threshold_rule,
        f"{TAG_PREFIX}site": site,
        "mlflow.note.content": (
            f"{model_label} ({model_uri}) evaluated on {data.root} ({len(data.split)} images, digest {data.digest}) "
            f"at threshold {assessment.threshold:.4f} and at 0.5; 95 % stratified bootstrap intervals "
            f"({assessment.clinical.resamples} resamples, seed {assessment.seed})."
        ),
    }
    name = f"eval {model_label}{f' site {site}' if site else ''} on {data.name} {time.strftime('%Y%m%d-%H%M%S')}"
    with tracking.one_off_run(EVALUATIONS_EXPERIMENT, name, tags) as run_id:
        runs.log_params(
            run_id,
            {
                "threshold": assessment.threshold,
                "bootstrap_resamples": assessment.clinical.resamples,
                "seed": assessment.seed,
            },
        )
        log_assessment(runs, run_id, assessment, f"{model_label} on {data.name}", prefix="", model_id=card.model_id)
        runs.log_skipped_files(run_id, data.skipped)
        if card.version:  # the version points at its latest evaluation on this data
            key = f"{TAG_PREFIX}evaluation.{data.digest[:12]}" + (f".{site}" if site else "")
            tracking.client.set_model_version_tag(card.name, card.version, key, run_id)
    return run_id


def _cell(scored: Scored, key: str) -> str:
    value = scored.metrics.get(key)
    if value is None or value != value:
        return "-"
    interval = scored.intervals.get(key)
    return f"{value:.3f}" + (f" [{interval.low:.3f}, {interval.high:.3f}]" if interval else "")


def _print(console: Console, assessment: Assessment) -> None:
    clinical = assessment.clinical
    sets = {"all": clinical.overall, **clinical.per_source}
    for name, scored in sets.items():
        table = Table(
            title=f"{name}: {scored.n} images, {scored.positives} COVID19 "
            + ("(95 % bootstrap intervals)" if scored.intervals else "(too few of a class for intervals or AUC)"),
            header_style="bold",
        )
        table.add_column("metric")
        table.add_column(f"at threshold {clinical.threshold:.3f}", justify="right")
        table.add_column("at 0.5", justify="right")
        for metric in REPORTED:
            chosen = metric if metric in THRESHOLD_FREE else f"{AT_THRESHOLD}{metric}"
            table.add_row(metric, _cell(scored, chosen), _cell(scored, metric))
        console.print(table)
    audit = assessment.audit
    table = Table(
        title="Shortcut audit (95 % bootstrap intervals): AUC with the lung box blacked out (borders only) and "
        "with all but it blacked out (lungs only); Grad-CAM heat outside the lung box (a uniform map: "
        f"{uniform_outside_share():.0%})",
        header_style="bold",
    )
    table.add_column("set")
    table.add_column("images", justify="right")
    for name in FIGURES:
        table.add_column(name, justify="right")
    for name, figures in {"all": audit.overall, **audit.per_source}.items():
        table.add_row(name, str(figures.n), *(figures.describe(k) for k in FIGURES))
    console.print(table)
    if assessment.shift is not None:
        console.print(shift_table(assessment.shift))
    guard = assessment.guard
    if guard is not None:
        refused = int(guard.refused.sum())
        console.print(
            f"Input guard (limit {guard.limit:.2f}): {guard.describe()}. "
            + (
                f"[yellow]{refused} film(s) here would get no call[/] (predictions.csv: refused_by_input_guard); "
                "the figures above score every film."
                if refused
                else "Every film here passes it."
            ),
            highlight=False,
        )
    else:
        console.print("This model carries no input guard (registered before it): any image gets a call.")


def shift_table(shift: ShiftScores) -> Table:
    """Per acquisition change, worst first: the calls of the NORMAL and the COVID-19 films at the threshold."""
    table = Table(
        title=f"Calls under acquisition changes of the stored films, at threshold {shift.threshold:.3f} (95 % "
        f"bootstrap intervals); NORMAL specificity as given {shift.describe('shift_clean_specificity')}, under the "
        f"worst change {shift.describe()}",
        header_style="bold",
    )
    for column in ("change", "NORMAL specificity", "COVID-19 sensitivity", "AUC"):
        table.add_column(column, justify="left" if column == "change" else "right")
    for name, *_ in shift.rows():
        table.add_row(
            name,
            shift.describe(f"shift_{name}_specificity"),
            shift.describe(f"shift_{name}_sensitivity"),
            shift.describe(f"shift_{name}_auc"),
        )
    return table


def _print_site(console: Console, card: ModelCard, site: str, assessment: Assessment) -> None:
    """The site's promise beside what this folder's NORMAL films show at its threshold."""
    stored = SiteThreshold.from_dict(card.sites[site])
    normals = int((assessment.split.labels == 0).sum())
    if not normals:
        return
    called = int(assessment.clinical.overall.metrics["thr_fp"])
    low, high = stored.predicted_range(normals)
    inside = low <= called / normals <= high
    console.print(
        f"Site {site}: {called} of {normals} NORMAL films called COVID-19 ({called / normals:.3f}) at its threshold "
        f"{stored.threshold:.4f}; its promise ({stored.promise()}) puts that share in [{low:.3f}, {high:.3f}] for "
        f"{normals} new normal films with 95 % probability: "
        + (
            "[green]within it[/]."
            if inside
            else "[red]outside it[/]: this folder's normals are not like the ones it was calibrated on."
        ),
        highlight=False,
    )
