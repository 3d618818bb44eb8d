"""The search report's own figures: hyperparameters against the objective, the objective over trials, and
the top trials' learning curves. (The best model's ROC and confusion matrix are the run plots of `plots`.)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from xraycnn.report.snapshot import Curve

_BEST = "#d62728"


def _axis(values: pd.Series, extremes_only: bool = False) -> tuple[np.ndarray, list[tuple[float, str]]]:
    """Values mapped to [0, 1] for one parallel axis, and the ticks to label it with.

    Numbers spanning more than a decade (learning rates) go on a log scale; categories are spaced evenly; a
    hyperparameter a trial does not use (the filters of a block its network does not have) sits at 0, marked
    'unused', below the values that are.
    """
    numeric = pd.to_numeric(values, errors="coerce")
    missing = values.isna()
    if numeric[~missing].notna().all() and not missing.all():
        present = numeric[~missing].to_numpy(dtype=float)
        log = bool((present > 0).all() and present.max() / present.min() > 10)
        low, high = (np.log10(present) if log else present).min(), (np.log10(present) if log else present).max()
        span = (high - low) or 1.0
        bottom = 0.15 if missing.any() else 0.0  # room for 'unused'

        def place(v: float) -> float:
            return bottom + (1 - bottom) * (((np.log10(v) if log else v) - low) / span)

        distinct = np.unique(present)
        shown = distinct if len(distinct) <= 6 and not extremes_only else np.array([present.min(), present.max()])
        ticks = [(place(v), f"{v:.3g}") for v in shown]
        if missing.any():
            ticks.append((0.0, "unused"))
        return np.array([0.0 if pd.isna(v) else place(float(v)) for v in numeric]), ticks
    categories = sorted(values.fillna("unused").astype(str).unique())
    span = max(len(categories) - 1, 1)
    index = {c: i / span for i, c in enumerate(categories)}
    return values.fillna("unused").astype(str).map(index).to_numpy(dtype=float), [(index[c], c) for c in categories]


def parallel_coordinates(
    trials: pd.DataFrame, hyperparameters: Sequence[str], objective: str, best_trial_id: str | None
) -> Figure:
    """One line per finished trial across its hyperparameters, coloured by the objective (best in red)."""
    scored = trials.dropna(subset=["score"])
    columns = [*(f"hp.{h}" for h in hyperparameters), "score"]
    labels = [*hyperparameters, objective]
    fig = Figure(figsize=(max(6.0, 1.25 * len(columns) + 1.5), 4.0))
    ax = fig.subplots()
    norm = Normalize(scored["score"].min(), scored["score"].max()) if len(scored) else Normalize(0, 1)
    cmap = colormaps["viridis"]
    positions = np.arange(len(columns))
    axes = [_axis(scored[c], extremes_only=c == "score") for c in columns]
    ys = np.array([a[0] for a in axes]).T if len(scored) else np.empty((0, len(columns)))
    for row, y in zip(scored.itertuples(), ys, strict=True):
        best = str(row.trial_id) == best_trial_id
        ax.plot(
            positions,
            y,
            color=_BEST if best else cmap(norm(row.score)),
            linewidth=2.6 if best else 1.2,
            alpha=1.0 if best else 0.75,
            zorder=3 if best else 2,
        )
    for x, (_, ticks) in zip(positions, axes, strict=True):
        ax.axvline(x, color="black", linewidth=0.8, zorder=1)
        for y, text in ticks:
            ax.text(x + 0.04, y, text, fontsize=7, va="center", ha="left")
    ax.set_xticks(positions, labels, rotation=20, ha="right", fontsize=8)
    ax.set_yticks([])
    ax.set_xlim(-0.2, len(columns) - 0.5)
    ax.set_ylim(-0.06, 1.06)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    fig.colorbar(ScalarMappable(norm, cmap), ax=ax, label=objective, fraction=0.04, pad=0.02)
    ax.set_title(f"hyperparameters vs {objective} ({len(scored)} finished trials; best in red)", fontsize=10)
    fig.subplots_adjust(left=0.07, right=0.94, bottom=0.22, top=0.9)
    return fig


def objective_over_trials(trials: pd.DataFrame, objective: str, direction: str) -> Figure:
    """Each finished trial's objective in the order the trials were created, and the best so far."""
    ordered = trials.assign(_n=pd.to_numeric(trials["trial_id"], errors="coerce")).sort_values("_n")
    scored = ordered.dropna(subset=["score"])
    fig = Figure(figsize=(6.0, 3.4))
    ax = fig.subplots()
    if len(scored):
        best = scored["score"].cummax() if direction == "max" else scored["score"].cummin()
        ax.plot(scored["_n"], scored["score"], "o", markersize=4, label="trial")
        ax.step(scored["_n"], best, where="post", color=_BEST, label="best so far")
    failed = len(ordered) - len(scored)
    ax.set_xlabel("trial")
    ax.set_ylabel(objective)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right" if direction == "max" else "upper right", fontsize=8)
    ax.set_title(f"{objective} over trials" + (f" ({failed} unfinished not shown)" if failed else ""), fontsize=10)
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.15, top=0.9)
    return fig


def top_learning_curves(curves: Sequence[Curve], objective: str) -> Figure:
    """Validation objective and loss per epoch of the best trials, overlaid (best first, in red)."""
    panels = [m for m in (objective, "val_loss") if any(m in c.series for c in curves)] or [objective]
    fig = Figure(figsize=(4.2 * len(panels), 3.4))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    others = [colormaps["tab10"](i) for i in (0, 2, 1, 4, 6, 8, 9, 5, 7)]  # tab10 without its red
    for ax, metric in zip(axes, panels, strict=True):
        for i, curve in enumerate(curves):
            if metric in curve.series:
                ax.plot(
                    curve.epochs,
                    curve.series[metric],
                    "-o",
                    markersize=3,
                    color=_BEST if i == 0 else others[(i - 1) % len(others)],
                    linewidth=2.2 if i == 0 else 1.2,
                    zorder=3 if i == 0 else 2,
                    label=curve.run_name,
                )
        ax.set_title(metric, fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="best")
    fig.suptitle(f"learning curves of the top {len(curves)} trials", fontsize=10)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.15, top=0.84, wspace=0.22)
    return fig
