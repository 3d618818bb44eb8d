"""The bench's parts, in the order they run and their rows print. Each is a module with `measure(data_root,
workdir, *extra)` (run in a process of its own, returning what it measured), `summarise(result)` (its flat
figures), `rows(table, result, figures, machine)` (its rows of the table) and, when it runs more than one process
or takes options, `children(options)`: the (row, extra arguments) of each process, a row of None for one result."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from benchmarks.parts import (
    augmentation,
    breakdown,
    decode,
    distributed,
    efficiency,
    inference,
    memory,
    serving,
    shortcuts,
    tracking,
    training,
)
from benchmarks.studies import cuts


@dataclass(frozen=True)
class Part:
    module: ModuleType

    @property
    def summary(self) -> str:
        return (self.module.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")

    def measure(self, data_root: Path, workdir: Path, *extra: str) -> dict[str, Any]:
        return self.module.measure(data_root, workdir, *extra)

    def children(self, options: Any) -> list[tuple[str | None, list[str]]]:
        plan: Callable[[Any], list[tuple[str | None, list[str]]]] | None = getattr(self.module, "children", None)
        return plan(options) if plan is not None else [(None, [])]

    def summarise(self, result: dict[str, Any]) -> dict[str, float]:
        return self.module.summarise(result)

    def rows(self, table: Any, result: dict[str, Any], figures: dict[str, float], machine: dict[str, Any]) -> None:
        self.module.rows(table, result, figures, machine)


PARTS: dict[str, Part] = {
    module.__name__.rsplit(".", 1)[-1]: Part(module)
    for module in (
        training,
        augmentation,
        shortcuts,
        decode,
        inference,
        efficiency,
        cuts,
        breakdown,
        serving,
        tracking,
        memory,
        distributed,
    )
}
# What `make bench` measures by default: training images per second (notebook-style against the project's
# pipeline), the share of the CPU's peak that training reaches, the default search's wall time and memory, serving.
CORE = ("training", "efficiency", "memory", "serving")
STUDIES = ("cuts",)  # one-off comparisons, run only when named
