"""The report as one self-contained HTML page: figures inlined as PNG data, a sortable table of all trials,
styles and the sorting script inline. Nothing is fetched from the network, so the page opens anywhere: from
disk, as an MLflow artifact, or attached to an e-mail.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from html import escape
from typing import Any

from xraycnn.regions import uniform_outside_share
from xraycnn.report.snapshot import AUDIT_COLUMNS, SHIFT_COLUMNS, SearchSnapshot, is_source_column
from xraycnn.tracking.tags import TAG_PREFIX

TEST_COLUMNS = ("test_auc", "test_accuracy", "test_sensitivity", "test_specificity")

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;max-width:1180px;
color:#1f2328;padding:0 1rem}
h1{font-size:1.5rem;margin-bottom:.2rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #d0d7de}
.muted{color:#656d76}.facts{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem;margin:1rem 0}
.facts dt{font-weight:600}.facts dd{margin:0}
.figures{display:flex;flex-wrap:wrap;gap:1rem}figure{margin:0}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.85rem;color:#656d76;max-width:36rem}
table{border-collapse:collapse;font-size:.82rem;width:100%}th,td{padding:.25rem .5rem;text-align:right;
border-bottom:1px solid #eaeef2;white-space:nowrap}th{cursor:pointer;background:#f6f8fa;position:sticky;top:0}
th:hover{background:#eaeef2}td.text,th.text{text-align:left}tr.best td{background:#fff1f0;font-weight:600}
tr.failed td{color:#9a6700}th[aria-sort=ascending]::after{content:" \\25B2"}
th[aria-sort=descending]::after{content:" \\25BC"}.scroll{overflow-x:auto;max-height:42rem}
"""

# Click a header to sort by it; click again to reverse. Numbers sort by their value (data-v), blanks last.
_SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  var heads = table.tHead.rows[0].cells;
  Array.prototype.forEach.call(heads, function (th, col) {
    th.addEventListener("click", function () {
      var ascending = th.getAttribute("aria-sort") !== "ascending";
      Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[col].getAttribute("data-v"), y = b.cells[col].getAttribute("data-v");
        if (x === "") return 1;
        if (y === "") return -1;
        var nx = parseFloat(x), ny = parseFloat(y);
        var c = (isNaN(nx) || isNaN(ny)) ? x.localeCompare(y) : nx - ny;
        return ascending ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _cell(value: Any, column: str) -> str:
    if _blank(value):
        return '<td data-v=""></td>'
    if isinstance(value, float):
        spec = ".1f" if column == "minutes" else ".4g" if column.startswith("hp.") else ".4f"
        shown = format(value, spec)
        return f'<td data-v="{value!r}">{shown}</td>'
    if isinstance(value, int):
        return f'<td data-v="{value}">{value}</td>'
    return f'<td class="text" data-v="{escape(str(value))}">{escape(str(value))}</td>'


def trials_table_html(snapshot: SearchSnapshot) -> str:
    frame = snapshot.trials
    if frame.empty:
        return "<p>No trial has started yet.</p>"
    hp = [c for c in frame.columns if c.startswith("hp.")]
    columns = ["trial_id", "run_name", "status", "score", *[c for c in AUDIT_COLUMNS if c in frame.columns]]
    columns += [c for c in SHIFT_COLUMNS if c in frame.columns]
    columns += [c for c in ("gate", "guard") if frame.get(c) is not None and frame[c].notna().any()]
    columns += sorted(c for c in frame.columns if is_source_column(c))
    columns += ["epochs", "best_epoch", "attempts", "minutes", *hp]
    columns += [c for c in TEST_COLUMNS if c in frame.columns]
    names = {
        "score": snapshot.objective,
        "run_name": "run",
        "best_val_borders_only_auc": "borders-only AUC",
        "best_val_lungs_only_auc": "lungs-only AUC",
        "best_val_gradcam_outside_share": "heat outside lungs",
        "best_val_threshold": "threshold",
        "best_val_shift_worst_specificity": "worst-change specificity",
        "best_val_shift_worst_auc": "worst-change AUC",
    }
    for column in columns:
        if is_source_column(column):
            source, figure = column.removeprefix("best_val_source_").rsplit("_thr_", 1)
            names[column] = f"{source}: {figure}"
    text = {"trial_id", "run_name", "status", "gate", "guard"}
    head = "".join(
        f'<th scope="col" class="{"text" if c in text else ""}">{escape(names.get(c, c.removeprefix("hp.")))}</th>'
        for c in columns
    )
    best = snapshot.best_trial_id
    rows = []
    for record in frame.to_dict("records"):
        classes = "best" if str(record["trial_id"]) == best else ("failed" if record["status"] != "FINISHED" else "")
        cells = "".join(_cell(record.get(c), c) for c in columns)
        rows.append(f'<tr class="{classes}" title="MLflow run {escape(str(record["run_id"]))}">{cells}</tr>')
    return (
        '<div class="scroll"><table class="sortable" id="trials"><thead><tr>'
        + head
        + "</tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table></div>"
    )


def _time(ms: int | None) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _with_interval(metrics: dict[str, float], key: str, label: str) -> str | None:
    if key not in metrics:
        return None
    low, high = metrics.get(f"{key}_ci_low"), metrics.get(f"{key}_ci_high")
    return f"{label} {metrics[key]:.4f}" + (f" [{low:.4f}, {high:.4f}]" if low is not None and high is not None else "")


def _test_figures(metrics: dict[str, float]) -> str:
    """The best model's test figures at its threshold (with 95 % intervals), else at 0.5."""
    if "test_threshold" in metrics:
        parts = [f"at threshold {metrics['test_threshold']:.3f} (chosen on validation):"]
        keys = [("test_thr_accuracy", "accuracy"), ("test_thr_sensitivity", "sensitivity")]
        keys += [("test_thr_specificity", "specificity"), ("test_auc", "AUC")]
    else:
        parts, keys = [], [(k, k.removeprefix("test_")) for k in TEST_COLUMNS]
    figures = [f for f in (_with_interval(metrics, k, label) for k, label in keys) if f]
    return " ".join(parts) + " " + ", ".join(figures) if figures else "not evaluated yet"


def _audit_figures(metrics: dict[str, float]) -> str:
    keys = [
        ("test_borders_only_auc", "AUC with the lungs blacked out (borders only)"),
        ("test_lungs_only_auc", "AUC with only the lungs"),
        ("test_gradcam_outside_share", f"Grad-CAM heat outside the lungs (uniform: {uniform_outside_share():.2f})"),
    ]
    figures = [f for f in (_with_interval(metrics, k, label) for k, label in keys) if f]
    return ", ".join(figures) + " (validation, per trial: the table below)" if figures else "not evaluated yet"


def _shift_figures(metrics: dict[str, float], tags: dict[str, str]) -> str:
    if "test_shift_worst_specificity" not in metrics:
        return "not evaluated yet"
    worst = _with_interval(metrics, "test_shift_worst_specificity", "NORMAL specificity under the worst change")
    clean = metrics.get("test_shift_clean_specificity")
    change = tags.get(f"{TAG_PREFIX}test_shift_worst_change") or "?"
    return f"{worst} ({change}; {clean:.4f} as given), " + (
        _with_interval(metrics, "test_shift_mean_auc", "mean AUC under the changes") or ""
    )


def _calibration_figures(metrics: dict[str, float]) -> str:
    if "test_ece" not in metrics:
        return "not evaluated yet"
    ece = _with_interval(metrics, "test_ece", "ECE on test") or ""
    if "test_ece_uncalibrated" not in metrics:
        return ece
    scale, shift = metrics.get("calibration_scale", float("nan")), metrics.get("calibration_shift", float("nan"))
    return (
        f"{ece} ({metrics['test_ece_uncalibrated']:.4f} before the Platt scaling fitted on validation: scale "
        f"{scale:.3f}, shift {shift:+.3f})"
    )


def per_source_html(metrics: dict[str, float]) -> str:
    """The best model's calls per source on test: the specificity of each source's NORMAL films and the
    sensitivity of its COVID-19 films at the threshold, with intervals, and its AUC where it has both."""
    prefix, suffix = "test_source_", "_thr_specificity"
    sources = sorted(
        k.removeprefix(prefix).removesuffix(suffix)
        for k in metrics
        if k.startswith(prefix) and k.endswith(suffix) and "_ci_" not in k
    )
    if not sources:
        return "<p>No source is known for the test films (the dataset has no MANIFEST.csv).</p>"

    def cell(key: str) -> str:
        value = metrics.get(key)
        if value is None or math.isnan(value):
            return '<td data-v="">-</td>'
        low, high = metrics.get(f"{key}_ci_low"), metrics.get(f"{key}_ci_high")
        shown = f"{value:.3f}" + (f" [{low:.3f}, {high:.3f}]" if low is not None and high is not None else "")
        return f'<td data-v="{value!r}">{escape(shown)}</td>'

    rows = "".join(
        f'<tr><td class="text">{escape(s)}</td>{cell(f"{prefix}{s}_thr_specificity")}'
        f"{cell(f'{prefix}{s}_thr_sensitivity')}{cell(f'{prefix}{s}_auc')}</tr>"
        for s in sources
    )
    head = "".join(
        f'<th scope="col" class="{c}">{escape(n)}</th>'
        for c, n in (("text", "source"), ("", "NORMAL specificity"), ("", "COVID-19 sensitivity"), ("", "AUC"))
    )
    return f'<table class="sortable" id="sources"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'


def sites_html(sites: Mapping[str, Mapping[str, Any]]) -> str:
    if not sites:
        return (
            "<p>No site threshold yet: <code>xraycnn calibrate --normals FOLDER --max-false-positive-rate 0.10 "
            "--site NAME</code> sets one from a site's own normal films.</p>"
        )
    rows = []
    for name, site in sites.items():
        promise = (
            f"at most {site['max_false_positive_rate']:g} at {site['confidence']:.0%} confidence; expected "
            f"{site['expected_rate']:.3f}, {2 * site['confidence'] - 1:.0%} interval [{site['rate_low']:.3f}, "
            f"{site['rate_high']:.3f}]"
        )
        rows.append(
            f'<tr><td class="text">{escape(name)}</td><td data-v="{site["threshold"]!r}">{site["threshold"]:.4f}</td>'
            f'<td data-v="{site["normals"]}">{site["normals"]}</td><td class="text">{escape(promise)}</td>'
            f'<td class="text">{escape(str(site.get("calibrated_utc", "")))}</td></tr>'
        )
    head = "".join(
        f'<th scope="col" class="{c}">{escape(n)}</th>'
        for c, n in (
            ("text", "site"),
            ("", "threshold"),
            ("", "normal films"),
            ("text", "false-positive rate promised"),
            ("text", "set"),
        )
    )
    return f'<table class="sortable" id="sites"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _facts(snapshot: SearchSnapshot) -> str:
    parent = snapshot.parent
    info, metrics = parent.info, parent.data.metrics
    finished = int((snapshot.trials["status"] == "FINISHED").sum()) if len(snapshot.trials) else 0
    best = snapshot.best_trial_id
    best_score = snapshot.trials.dropna(subset=["score"])["score"].iloc[0] if best is not None else None
    minutes = f"{(info.end_time - info.start_time) / 60_000:.1f} min" if info.end_time else "still running or stopped"
    facts = {
        "MLflow experiment": snapshot.experiment,
        "search run": f"{info.run_name} ({info.run_id}), {info.status}",
        "started": f"{_time(info.start_time)}; took {minutes}",
        "tuner": f"{parent.data.params.get('tuner.algorithm', '?')} on {snapshot.objective} ({snapshot.direction})",
        "data": f"{parent.data.tags.get('xraycnn.dataset_root', '?')} "
        f"(digest {parent.data.tags.get('xraycnn.dataset_digest', '?')}), "
        f"{parent.data.params.get('data.image_size', '?')}px {parent.data.params.get('data.color_mode', '')}",
        "trials": f"{len(snapshot.trials)} ({finished} finished)",
        "best trial": "-" if best is None else f"{best} with {snapshot.objective} {best_score:.4f}",
        "selection": parent.data.tags.get(f"{TAG_PREFIX}selection_rule", f"{snapshot.objective} on validation"),
        "registered": snapshot.registered or "not yet",
        "best model on test": _test_figures(metrics),
        "shortcut audit of the best model on test": _audit_figures(metrics),
        "best model's calls under acquisition changes (test)": _shift_figures(metrics, parent.data.tags),
        "calibration of the best model": _calibration_figures(metrics),
    }
    items = "".join(f"<dt>{escape(k)}</dt><dd>{escape(str(v))}</dd>" for k, v in facts.items())
    return f'<dl class="facts">{items}</dl>'


def render(snapshot: SearchSnapshot, figures: Mapping[str, tuple[bytes, str]]) -> str:
    """The page; `figures` maps a PNG's file name to (its bytes, its caption), in the order to show them."""
    blocks = []
    for name, (png, caption) in figures.items():
        data = base64.b64encode(png).decode("ascii")
        blocks.append(
            f'<figure id="{escape(name.removesuffix(".png"))}"><img src="data:image/png;base64,{data}" '
            f'alt="{escape(caption)}"><figcaption>{escape(caption)}</figcaption></figure>'
        )
    description = snapshot.parent.data.tags.get("mlflow.note.content", "")
    title = f"Search report: {snapshot.experiment}"
    return (
        "<!doctype html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_STYLE}</style></head><body>'
        f"<h1>{escape(title)}</h1>"
        f'<p class="muted">{escape(description).replace(chr(10), "<br>")}</p>'
        f"{_facts(snapshot)}"
        f'<h2>Figures</h2><div class="figures">{"".join(blocks)}</div>'
        "<h2>The best model per source (test)</h2>"
        '<p class="muted">At its threshold, with 95 % bootstrap intervals. On cxr-covid every NORMAL film comes from '
        "one hospital (NIH Clinical Center), so a source's specificity says little of another hospital's.</p>"
        f"{per_source_html(snapshot.parent.data.metrics)}"
        "<h2>Site thresholds of the registered version</h2>"
        f"{sites_html(snapshot.sites)}"
        "<h2>All trials</h2>"
        '<p class="muted">Best first; click a column to sort. Test metrics are reported only, never used to '
        "select a trial (on cxr-covid the two classes come from different hospitals, so they are optimistic).</p>"
        f"{trials_table_html(snapshot)}"
        f'<p class="muted">Made by xraycnn on {datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}.</p>'
        f"<script>{_SCRIPT}</script></body></html>\n"
    )
