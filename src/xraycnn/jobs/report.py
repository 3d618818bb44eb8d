"""`xraycnn report`: the search report of an experiment's latest search (or of a given search run), made from
the MLflow store alone, written under `reports/` and logged to the search's parent run."""

from __future__ import annotations

from pathlib import Path

from mlflow.exceptions import MlflowException
from rich.console import Console

from xraycnn import paths
from xraycnn.errors import XrayCnnError
from xraycnn.report import REPORT_ARTIFACT_DIR, Report, latest_search_run, write_report
from xraycnn.tracking.store import resolve_store
from xraycnn.tracking.tags import search_experiment_name


def experiment_name(value: str) -> str:
    """`experiments/default.toml`, `default.toml` and `default` all name the experiment `default`."""
    return Path(value).stem if value.endswith(".toml") else value


def run_report(
    experiment: str,
    *,
    run_id: str | None = None,
    tracking_uri: str | None = None,
    reports_dir: str | Path | None = None,
    console: Console | None = None,
) -> Report:
    console = console or Console()
    client = resolve_store(tracking_uri).client()
    if run_id is not None:
        try:
            client.get_run(run_id)
        except MlflowException:
            raise XrayCnnError(f"no run {run_id} in {client.tracking_uri}; give a search's parent run id") from None
    parent_run_id = run_id or latest_search_run(client, search_experiment_name(experiment_name(experiment)))
    report = write_report(client, parent_run_id, Path(reports_dir or paths.reports_root()))
    count = len(report.snapshot.trials)
    console.print(
        f"Report of {report.snapshot.parent.info.run_name} ({count} trial{'' if count == 1 else 's'}): "
        f"{report.page} (also in the run's artifacts under {REPORT_ARTIFACT_DIR}/)"
    )
    return report
