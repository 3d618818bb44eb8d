"""What the researcher sees while searching: trials done of the budget, the current trial's epoch, the best
score so far, elapsed and remaining time; a table of the top trials at the end.

On a terminal it is a live rich display; in a log (CI, `| tee`) one line per trial instead.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from keras_tuner.engine.trial import Trial, TrialStatus
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from xraycnn.config import TunerConfig
from xraycnn.model.space import choice_tokens
from xraycnn.tuning.rungs import RungStop
from xraycnn.tuning.tuners import SearchListener

_SHORT_NAMES = {
    "conv_blocks": "blocks",
    "kernel_size": "k",
    "dropout": "drop",
    "dense_units": "dense",
    "learning_rate": "lr",
    "batch_size": "bs",
}


def describe_hyperparameters(values: Mapping[str, Any]) -> str:
    """A compact one-line summary of a trial's hyperparameters, e.g. 'blocks 2 f 32-64 k 5 drop 0.3 lr 1e-03'."""
    filters = [str(values[k]) for k in sorted(values) if k.startswith("filters_")]
    parts = []
    if "conv_blocks" in values:
        parts.append(f"blocks {values['conv_blocks']}")
    if filters:
        parts.append("f " + "-".join(filters[: int(values.get("conv_blocks", len(filters)))]))
    parts.extend(choice_tokens(values))
    for key in ("kernel_size", "dropout", "dense_units", "learning_rate", "batch_size", "epochs"):
        if key in values:
            v = values[key]
            shown = f"{v:.0e}" if key == "learning_rate" else (f"{v:.2g}" if isinstance(v, float) else str(v))
            parts.append(f"{_SHORT_NAMES.get(key, key)} {shown}")
    return " ".join(parts)


def _fmt_duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class SearchProgress(SearchListener):
    def __init__(
        self,
        console: Console,
        objective: str,
        direction: str,
        planned_trials: int,
        planned_epochs: int,
        tuner: TunerConfig | None = None,
    ) -> None:
        self.console = console
        self.objective = objective
        self.direction = direction
        self.tuner = tuner  # with a shortcut gate, scores are gated: shown as the objective and pass / fail
        self.planned_trials = planned_trials
        self.planned_epochs = max(planned_epochs, 1)
        self.live = console.is_terminal
        self.started = time.monotonic()
        self.trials_done = 0
        self.epochs_done = 0
        self.best: tuple[float, str] | None = None
        self.stops: dict[str, RungStop] = {}  # trial_id -> why it stopped at a rung
        self.trial_epochs = 0
        self._progress: Progress | None = None
        self._search_task: TaskID | None = None
        self._trial_task: TaskID | None = None

    # -- lifecycle --------------------------------------------------------------------------------------
    def start(self, already_done: int = 0, best: tuple[float, str] | None = None) -> None:
        self.trials_done, self.best = already_done, best
        self.started = time.monotonic()
        if not self.live:
            return
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=28),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        self._search_task = self._progress.add_task(
            "[bold]trials",
            total=self.planned_trials or None,
            completed=already_done,
            info=self._search_info(),
        )
        self._trial_task = self._progress.add_task("  epoch ", total=1, completed=0, info="", visible=False)
        self._progress.start()

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    # -- helpers ----------------------------------------------------------------------------------------
    def _better(self, score: float) -> bool:
        if self.best is None:
            return True
        return score > self.best[0] if self.direction == "max" else score < self.best[0]

    def _remaining(self) -> str:
        if self.epochs_done == 0:
            return "remaining: estimating"
        elapsed = time.monotonic() - self.started
        left = elapsed / self.epochs_done * max(self.planned_epochs - self.epochs_done, 0)
        return f"≤{_fmt_duration(left)} left"

    def _shown(self, score: float) -> str:
        """'val_auc 0.9712'; with a failed shortcut gate 'val_auc 0.9712 over the shortcut gate'; under the
        acquisition guard 'under the acquisition guard (worst-change specificity 0.731)'."""
        if self.tuner is None:
            return f"{self.objective} {score:.4f}"
        verdict = self.tuner.verdict(score)
        if verdict.objective is None:
            shown = f"under the acquisition guard (worst-change specificity {verdict.shift_specificity:.3f})"
        else:
            shown = f"{self.objective} {verdict.objective:.4f}"
        return shown + ("" if verdict.borders_passed else " over the shortcut gate")

    def _search_info(self) -> str:
        best = f"best {self._shown(self.best[0])} (trial {self.best[1]})" if self.best else "best: -"
        return f"{best} • {self._remaining()}"

    # -- hooks ------------------------------------------------------------------------------------------
    def trial_begin(self, trial: Trial) -> None:
        values = trial.hyperparameters.values
        first = int(values.get("tuner/initial_epoch", 0))
        last = int(values.get("tuner/epochs", values.get("epochs", 0)))
        self.trial_epochs = max(last - first, 1)
        label = f"  trial {trial.trial_id}"
        if "tuner/trial_id" in values:
            label += f" (continues {values['tuner/trial_id']}, epochs {first + 1}-{last})"
        if self._progress is not None and self._trial_task is not None:
            self._progress.update(
                self._trial_task,
                description=label,
                total=self.trial_epochs,
                completed=0,
                info=describe_hyperparameters(values),
                visible=True,
            )

    def epoch_end(self, trial: Trial, epoch: int, logs: dict[str, float]) -> None:
        self.epochs_done += 1
        if self._progress is not None and self._trial_task is not None and self._search_task is not None:
            score = logs.get(self.objective)
            values = trial.hyperparameters.values
            info = describe_hyperparameters(values)
            if score is not None:
                info += f" • epoch {epoch + 1} {self.objective} {score:.4f}"
            self._progress.update(self._trial_task, advance=1, info=info)
            self._progress.update(self._search_task, info=self._search_info())

    def trial_stopped(self, trial: Trial, stop: RungStop) -> None:
        self.stops[trial.trial_id] = stop

    def trial_end(self, trial: Trial) -> None:
        self.trials_done += 1
        stop = self.stops.pop(trial.trial_id, None)
        completed = trial.status == TrialStatus.COMPLETED
        if completed and trial.score is not None and self._better(trial.score):
            self.best = (float(trial.score), trial.trial_id)
        if self._progress is not None and self._search_task is not None:
            self._progress.update(self._search_task, completed=self.trials_done, info=self._search_info())
            if not completed:
                self._progress.console.print(
                    f"[red]trial {trial.trial_id} {trial.status}[/]: {_last_line(trial.message)}"
                )
            return
        outcome = self._shown(trial.score) if completed else f"[red]{trial.status}[/]: {_last_line(trial.message)}"
        total = f"/{self.planned_trials}" if self.planned_trials else ""
        self.console.print(
            f"trial {trial.trial_id} ({self.trials_done}{total}) "
            f"{describe_hyperparameters(trial.hyperparameters.values)}"
            f" -> {outcome}{'' if stop is None else f' (stopped after epoch {stop.epoch}: behind {stop.bar:.4f})'}"
            f" • {self._search_info()} • elapsed {_fmt_duration(time.monotonic() - self.started)}"
        )


def _last_line(message: str | None) -> str:
    lines = [line for line in (message or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def _number(value: Any) -> str:
    return "-" if value is None or value != value else f"{value:.4f}"


def top_trials_table(rows: Sequence[Mapping[str, Any]], tuner: TunerConfig, limit: int = 10) -> Table:
    """Rows (best first): trial_id, score, hyperparameters (dict), best_epoch, and where logged the objective at
    the best epoch (`best_<objective>`), test_auc, best_val_borders_only_auc, best_val_lungs_only_auc,
    best_val_shift_worst_specificity, gate and guard."""
    objective = tuner.objective
    gated = tuner.max_borders_only_auc is not None
    guarded = tuner.min_shift_specificity is not None
    title = f"Top trials by {objective} (validation)"
    if guarded:
        title += f", under the acquisition guard (worst-change specificity < {tuner.min_shift_specificity:g}) after"
    if gated:
        title += f", over the shortcut gate (borders-only AUC > {tuner.max_borders_only_auc:g}) last"
    table = Table(title=title, header_style="bold")
    columns = ("rank", "trial", objective, "borders-only AUC", "lungs-only AUC", "worst-change spec.", "test_auc")
    for name in (*columns, "best epoch"):
        table.add_column(name, justify="left" if name == "trial" else "right")
    if gated:
        table.add_column("gate")
    if guarded:
        table.add_column("guard")
    table.add_column("hyperparameters")
    for rank, row in enumerate(rows[:limit], start=1):
        value = row.get(f"best_{objective}")
        if value is None and row.get("score") is not None:
            value = tuner.verdict(float(row["score"])).objective
        cells = [
            str(rank),
            str(row["trial_id"]),
            _number(value),
            _number(row.get("best_val_borders_only_auc")),
            _number(row.get("best_val_lungs_only_auc")),
            _number(row.get("best_val_shift_worst_specificity")),
            _number(row.get("test_auc")),
            str(row.get("best_epoch") or "-"),
        ]
        if gated:
            cells.append(str(row.get("gate") or "-"))
        if guarded:
            cells.append(str(row.get("guard") or "-"))
        table.add_row(*cells, describe_hyperparameters(row["hyperparameters"]))
    return table
