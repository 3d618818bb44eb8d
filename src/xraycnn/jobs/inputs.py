"""The input of a job, checked: the experiment file parsed and validated, the dataset's layout listed.

Kept free of TensorFlow, Keras and MLflow so the CLI can check a user's input in half a second, before the
heavy imports, and nothing is written anywhere when it is wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from xraycnn.config import Experiment, load_experiment, parse_overrides
from xraycnn.data.discovery import DatasetFiles, discover, resolve_data_root


@dataclass(frozen=True)
class Inputs:
    experiment: Experiment
    files: DatasetFiles


def check_inputs(
    experiment_path: str | Path, data_dir: str | Path | None = None, overrides: Sequence[str] = ()
) -> Inputs:
    """Load the experiment file (with `overrides`, `--set KEY=VALUE` pairs, over it) and list the dataset;
    raises `ConfigError` or `DataLayoutError`."""
    experiment = load_experiment(experiment_path, parse_overrides(overrides))
    root_in_file = experiment.resolve(experiment.config.data.root) if experiment.config.data.root else None
    files = discover(resolve_data_root(data_dir, root_in_file))
    return Inputs(experiment, files)
