"""Where the project keeps its state: the repo root, the tuner state, the MLflow store and the reports.

Everything is absolute and independent of the working directory, so `make search` run from anywhere
writes to the same store.
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "XRAYCNN_HOME"
DATA_ENV = "XRAYCNN_DATA"


def project_root() -> Path:
    """The repo that holds `experiments/`, `tuner/` and `mlruns/`.

    `$XRAYCNN_HOME` wins; otherwise the checkout this package was installed from (editable install);
    otherwise the working directory.
    """
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV]).expanduser().resolve()
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file() and (checkout / "experiments").is_dir():
        return checkout
    return Path.cwd().resolve()


def tuner_root() -> Path:
    return project_root() / "tuner"


def reports_root() -> Path:
    return project_root() / "reports"


def mlruns_dir() -> Path:
    return project_root() / "mlruns"


def default_tracking_uri() -> str:
    return f"sqlite:///{mlruns_dir() / 'mlflow.db'}"


def default_data_candidates() -> list[Path]:
    """Where to look for the dataset when neither the CLI, `$XRAYCNN_DATA` nor the experiment names one."""
    root = project_root()
    return [root / "data", root.parent / "shared" / "data" / "cxr-covid"]


# Files xraycnn writes that may sit beside films (Grad-CAM heatmaps of older versions, written next to the image):
# never taken for films by discovery.
DERIVED_SUFFIXES: tuple[str, ...] = (".gradcam.png",)


def is_derived(path: Path) -> bool:
    """Whether `path` is a file xraycnn writes (a heatmap), not a film."""
    return path.name.lower().endswith(DERIVED_SUFFIXES)


def new_heatmap_dir() -> Path:
    """A folder for `predict --explain`'s heatmaps that does not exist yet, in the working directory: never the
    folder of the films."""
    base = Path.cwd() / "heatmaps"
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"heatmaps-{n}")
    return candidate


CACHE_ENV = "XRAYCNN_CACHE"


def cache_dir() -> Path:
    """Decoded datasets, shared by every checkout on this machine: `$XRAYCNN_CACHE`, else the XDG cache."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "xraycnn"
