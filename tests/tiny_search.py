"""The real entry point on a tiny budget, shared by the tests that need a finished search: `xraycnn search`
(3 Hyperband trials, one a continuation) on a small real subset of 64x64 films, cropped to the lungs and
CLAHE-equalised by the model's own preprocessing, against a temporary SQLite store."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mlflow.tracking import MlflowClient

XRAYCNN = str(Path(sys.executable).with_name("xraycnn"))
MODEL = "xraycnn-it"
EXPERIMENT = f"""
description = "integration test"
seed = 7
[data]
root = "{{root}}"
image_size = 64
[data.preprocess]
crop = true
equalize = "clahe"
[data.augmentation]
zoom = 0.0
horizontal_flip = false
translate = 0.05
erase = 0.5
[space]
conv_blocks = {{{{ min = 1, max = 2 }}}}
filters = {{{{ values = [4, 8] }}}}
kernel_size = 3
dropout = {{{{ min = 0.1, max = 0.3, step = 0.1 }}}}
dense_units = 16
learning_rate = {{{{ min = 1e-3, max = 3e-3, sampling = "log" }}}}
batch_size = 16
[budget]
max_epochs = 2
hyperband_factor = 2
max_trials = 3
[registry]
model_name = "{MODEL}"
"""
EPOCH_METRICS = {"loss", "accuracy", "auc", "precision", "recall"}
TEST_METRICS = {
    "test_accuracy",
    "test_auc",
    "test_sensitivity",
    "test_specificity",
    "test_precision",
    "test_f1",
    "test_loss",
}


def random_search(root: Path | str, *, seed: int, trials: int, epochs: int, model: str) -> str:
    """An experiment file: a random search of small 2-block networks on 64px films, each trial trained all its
    epochs (no early stopping), so that the same seed gives the same trials and the same metric steps."""
    return f"""
seed = {seed}
[data]
root = "{root}"
image_size = 64
[space]
conv_blocks = 2
filters = [8, 16]
kernel_size = 3
dropout = {{ values = [0.1, 0.2] }}
dense_units = 16
learning_rate = {{ min = 1e-3, max = 2e-3 }}
batch_size = 8
epochs = {epochs}
[tuner]
algorithm = "random"
[budget]
max_trials = {trials}
max_epochs = {epochs}
[training]
early_stopping_patience = {epochs}
[registry]
model_name = "{model}"
"""


def xraycnn(
    *args: str, env: dict[str, str], timeout: int = 600, cwd: Path | None = None, isolated: bool = False
) -> subprocess.CompletedProcess[str]:
    """The command line `xraycnn ARGS` with `env` added to the environment: its exit status and what it printed.
    In this process (`cli.main`, what the `xraycnn` script calls) unless `isolated`: a process of its own pays the
    import of TensorFlow again; the tests of what only a process shows (kills, Ctrl-C, locks held by another
    process, a full disk ending the interpreter, nothing but our line on stderr) ask for one."""
    if isolated:
        result = subprocess.run(
            [XRAYCNN, *args], capture_output=True, text=True, env={**os.environ, **env}, timeout=timeout, cwd=cwd
        )
    else:
        result = _in_this_process(list(args), env, cwd)
    print(result.stdout[-4000:], result.stderr[-4000:])
    return result


@functools.cache
def _empty_store() -> Path:
    """An empty SQLite store as MLflow makes it (every schema migration run), made once per test process."""
    db = Path(tempfile.mkdtemp(prefix="xraycnn-empty-store-")) / "mlflow.db"
    uri = f"sqlite:///{db}"
    client = MlflowClient(uri, registry_uri=uri)
    client.search_experiments(max_results=1)  # the tracking tables
    client.search_registered_models(max_results=1)  # and the registry's
    return db


def seed_store(uri: str) -> None:
    """Where `uri` names a SQLite store that does not exist yet, put a copy of an empty one there: the same
    database MLflow would make, without running its migrations again for every test (the tests of making a
    store, of not making one for bad input, and of two processes making one at once start theirs without this)."""
    if not uri.startswith("sqlite:///"):
        return
    db = Path(uri.removeprefix("sqlite:///"))
    if not db.exists():
        db.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_empty_store(), db)


def _in_this_process(args: list[str], env: dict[str, str], cwd: Path | None) -> subprocess.CompletedProcess[str]:
    """`cli.main(args)` with its output captured, leaving this process as it found it: the environment, the
    working directory, MLflow's current store and active runs, Keras' precision policy, the SIGTERM handler."""
    import contextlib
    import io
    import signal

    import keras
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_uris
    from mlflow.tracking._tracking_service import utils as tracking_uris

    from xraycnn import cli

    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    saved_uris = (tracking_uris._tracking_uri, registry_uris._registry_uri)
    saved_sigterm = signal.getsignal(signal.SIGTERM)
    out, err = io.StringIO(), io.StringIO()
    os.environ.update(env)
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main(args)
            except SystemExit as exit_:  # argparse's usage errors
                code = exit_.code if isinstance(exit_.code, int) else 2
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        while mlflow.active_run() is not None:
            mlflow.end_run()
        tracking_uris._tracking_uri, registry_uris._registry_uri = saved_uris
        signal.signal(signal.SIGTERM, saved_sigterm)
        keras.mixed_precision.set_global_policy("float32")
        keras.backend.clear_session()
    return subprocess.CompletedProcess([XRAYCNN, *args], code, out.getvalue(), err.getvalue())


@dataclass
class Search:
    root: Path
    tmp: Path
    env: dict[str, str]
    client: MlflowClient
    experiment_id: str
    output: str

    def run(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return xraycnn(*args, env=self.env, cwd=cwd)

    def runs(self) -> list:
        return self.client.search_runs([self.experiment_id], order_by=["attributes.start_time ASC"])

    def accepted_test_films(self, per_class: int) -> list[Path]:
        """The first `per_class` test films of each class (COVID19 first) that the champion's input guard lets
        through, as its final assessment scored them: the tiny search's guard, fitted on 58 films, refuses
        some real ones (the test films come from other ends of the dataset's name order than the training
        films), and the tests that compare answers across paths need answers."""
        import pandas as pd

        parent = next(r for r in self.runs() if "mlflow.parentRunId" not in r.data.tags)
        local = self.client.download_artifacts(parent.info.run_id, "evaluation/test_predictions.csv", str(self.tmp))
        table = pd.read_csv(local)
        accepted = table[~table["refused_by_input_guard"]]
        return [
            self.root / f
            for label in ("COVID19", "NORMAL")
            for f in sorted(accepted[accepted["label"] == label]["file"])[:per_class]
        ]


def run_tiny_search(dataset: Path, tmp: Path) -> Search:
    (tmp / "tiny.toml").write_text(EXPERIMENT.format(root=dataset))
    uri = f"sqlite:///{tmp / 'store' / 'mlflow.db'}"
    seed_store(uri)
    env = {"MLFLOW_TRACKING_URI": uri, "PYTHONUNBUFFERED": "1"}
    result = xraycnn(
        "search",
        str(tmp / "tiny.toml"),
        "--tuner-dir",
        str(tmp / "tuner"),
        "--reports-dir",
        str(tmp / "reports"),
        env=env,
    )
    assert result.returncode == 0, result.stderr
    client = MlflowClient(uri, registry_uri=uri)  # not the process-wide registry an earlier test set
    experiment = client.get_experiment_by_name("xraycnn-tiny")
    assert experiment is not None
    return Search(dataset, tmp, env, client, experiment.experiment_id, result.stdout)


def shared_tiny_search(make_dataset: Callable[[Path], Path], shared: Path, tmp: Path) -> Search:
    """The tiny search made once for all the suite's test processes (pytest-xdist), each given a copy of its own:
    the first process to ask makes the dataset and the search in `shared`, under a lock, while the others wait;
    each then copies the search's folder to `tmp` and points the copied store at its own artifacts
    (tracking.relocate, as for any moved store), so that no two processes write to one store or tuner folder."""
    from filelock import FileLock

    from xraycnn.tracking.relocate import relocate_if_moved

    made = shared / "made"
    with FileLock(shared.with_name(shared.name + ".lock")):
        if not made.exists():
            (shared / "search").mkdir(parents=True, exist_ok=True)
            dataset = make_dataset(shared / "data")
            search = run_tiny_search(dataset, shared / "search")
            (shared / "output.txt").write_text(search.output)
            (shared / "dataset.txt").write_text(str(dataset))
            made.touch()
    shutil.copytree(shared / "search", tmp, dirs_exist_ok=True)
    uri = f"sqlite:///{tmp / 'store' / 'mlflow.db'}"
    relocate_if_moved(tmp / "store" / "mlflow.db")
    client = MlflowClient(uri, registry_uri=uri)
    experiment = client.get_experiment_by_name("xraycnn-tiny")
    assert experiment is not None
    env = {"MLFLOW_TRACKING_URI": uri, "PYTHONUNBUFFERED": "1"}
    dataset = Path((shared / "dataset.txt").read_text())
    return Search(dataset, tmp, env, client, experiment.experiment_id, (shared / "output.txt").read_text())
