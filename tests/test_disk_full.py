"""A full disk in the middle of a search, through the real CLI: at the tracking store (its SQLite file and
artifacts) and at the tuner folder (Keras Tuner's state and the tracking spool). The search stops with one
message naming the path, the store stays consistent (no half-registered version), and the same command
resumes once space is freed: every trial finished once, no run RUNNING, one champion. A full store with the
spool's disk free stops the search between trials, so no trial's training is lost.

As root, the full disk is a real 24 MiB tmpfs filled up by the test; where mounting is not allowed, the
same writes fail with ENOSPC, injected at start-up through sitecustomize while a flag file exists."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.test_reliability import trial_runs, wait_for
from tests.tiny_search import XRAYCNN, random_search, xraycnn

pytestmark = [pytest.mark.slow, pytest.mark.chaos]  # kills, outages, full disks: run first, beside the rest

EPOCHS = 5

# Where mounting is refused: every write under the small file system fails while FLAG exists.
INJECT = """
import errno, os
from pathlib import Path
ROOT, FLAG = os.environ["XRAYCNN_TEST_FULL_ROOT"], os.environ["XRAYCNN_TEST_FULL_FLAG"]

def full(path):
    return os.path.exists(FLAG) and str(Path(path).resolve()).startswith(ROOT)

import xraycnn.tracking.spool as spool  # the spool's records, in the tuner folder
_write = spool.write_durably
def write_durably(path, text):
    if full(path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    return _write(path, text)
spool.write_durably = write_durably

import xraycnn.tracking.replay as replay  # every write to a store whose files are on the small disk
from xraycnn.tracking.store import sqlite_file
_apply = replay.Replayer.apply
def apply(self, record):
    db = sqlite_file(self.spool.tracking_uri)
    if db is not None and full(db):
        raise OSError(errno.ENOSPC, "No space left on device", str(db))
    return _apply(self, record)
replay.Replayer.apply = apply
"""


class SmallDisk:
    """A small file system at `root` that the test fills and frees."""

    def __init__(self, root: Path, tmp: Path) -> None:
        self.root, self.real = root, False
        self.flag = tmp / "disk-is-full"
        self.filler = root / "filler"
        root.mkdir(parents=True)
        if os.geteuid() == 0 and not os.environ.get("XRAYCNN_TEST_NO_MOUNT"):  # set: try the fallback here
            mounted = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(root)], capture_output=True
            )
            self.real = mounted.returncode == 0
        self.env: dict[str, str] = {}
        if not self.real:
            inject = tmp / "inject"
            inject.mkdir()
            (inject / "sitecustomize.py").write_text(INJECT)
            self.env = {
                "PYTHONPATH": f"{inject}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
                "XRAYCNN_TEST_FULL_ROOT": str(root.resolve()),
                "XRAYCNN_TEST_FULL_FLAG": str(self.flag),
            }

    def fill(self) -> None:
        if not self.real:
            self.flag.touch()
            return
        # ENOSPC may come as early as the open: the disk is full either way.
        with contextlib.suppress(OSError), self.filler.open("wb") as handle:
            while True:
                handle.write(b"\0" * (1 << 16))
                handle.flush()
        with contextlib.suppress(OSError):
            os.fsync(os.open(self.root, os.O_RDONLY))

    def free(self) -> None:
        self.flag.unlink(missing_ok=True)
        self.filler.unlink(missing_ok=True)

    def unmount(self) -> None:
        if self.real:
            subprocess.run(["umount", "-l", str(self.root)], capture_output=True)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[SmallDisk]:
    small = SmallDisk(tmp_path / "small", tmp_path)
    yield small
    small.unmount()


def check_resumed(client: MlflowClient, experiment_id: str) -> None:
    everything = client.search_runs([experiment_id])
    assert [r for r in everything if r.info.status == "RUNNING"] == []
    finished = [r for r in trial_runs(client, experiment_id) if r.info.status == "FINISHED"]
    assert sorted(r.data.tags["xraycnn.trial_id"] for r in finished) == ["0", "1"]
    for run in finished:
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val_auc")] == list(range(1, EPOCHS + 1))
    (version,) = client.search_model_versions("name = 'xraycnn-full'")
    assert str(client.get_model_version_by_alias("xraycnn-full", "champion").version) == str(version.version)


@pytest.mark.parametrize("where", ["store", "tuner"])
def test_a_full_disk_stops_the_search_with_one_message_and_it_resumes(
    small_dataset: Path, tmp_path: Path, disk: SmallDisk, where: str
) -> None:
    store_dir = disk.root if where == "store" else tmp_path / "store"
    tuner_dir = disk.root / "tuner" if where == "tuner" else tmp_path / "tuner"
    uri = f"sqlite:///{store_dir / 'mlflow.db'}"
    (tmp_path / "full.toml").write_text(
        random_search(small_dataset, seed=23, trials=2, epochs=EPOCHS, model="xraycnn-full")
    )
    command = ["search", str(tmp_path / "full.toml"), "--tuner-dir", str(tuner_dir), "--reports-dir", str(tmp_path)]
    env = {"MLFLOW_TRACKING_URI": uri, "PYTHONUNBUFFERED": "1", **disk.env}
    search = subprocess.Popen(
        [XRAYCNN, *command], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, **env}
    )
    client = MlflowClient(uri, registry_uri=uri)

    def epochs_in_the_store() -> bool:
        experiment = client.get_experiment_by_name("xraycnn-full")
        runs = trial_runs(client, experiment.experiment_id) if experiment else []
        return any(len(client.get_metric_history(r.info.run_id, "val_auc")) >= 2 for r in runs)

    wait_for(epochs_in_the_store, 300, "a trial's epochs in the store")
    disk.fill()
    output, _ = search.communicate(timeout=600)
    print(output[-5000:])
    assert search.returncode == 2, f"real tmpfs: {disk.real}"
    (line,) = [line for line in output.splitlines() if line.startswith("error:")]
    assert "error: no space left on the file system of " in line and str(disk.root) in line
    assert "then run the same command again" in line
    assert "Traceback" not in output  # no library's or thread's own report of the same error
    experiment_id = client.get_experiment_by_name("xraycnn-full").experiment_id
    assert client.search_model_versions("name = 'xraycnn-full'") == []  # no version half-registered

    disk.free()
    result = xraycnn(*command, env=env)
    assert result.returncode == 0, result.stderr
    check_resumed(client, experiment_id)
    if where == "store":
        # The spool's disk kept room: the trial in progress when the store filled was trained to its end, its
        # writes kept for the next run, so no trial was cut short and trained again.
        attempts = sorted(r.data.tags["xraycnn.trial_id"] for r in trial_runs(client, experiment_id))
        assert attempts == ["0", "1"]
