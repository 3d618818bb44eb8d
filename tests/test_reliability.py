"""A search killed with SIGKILL in the middle of a trial, a second search of the same experiment started
meanwhile, then the same command again: the real CLI, a small real subset, a temporary SQLite store."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.tiny_search import XRAYCNN, random_search, seed_store, xraycnn

pytestmark = [pytest.mark.slow, pytest.mark.chaos]  # kills, outages, full disks: run first, beside the rest


# Random search, 2 trials of 20 epochs each: long enough to be killed in the middle of one, also on a fast
# machine (~0.1 s an epoch with AVX-512 BF16, ~0.5 s on an AVX2-only 2-core one); the tests strike as soon
# as the trial has logged its first epoch (polled every 0.5 s).
EPOCHS = 20


def kill_experiment(root: Path) -> str:
    return random_search(root, seed=11, trials=2, epochs=EPOCHS, model="xraycnn-kill")


def trial_runs(client: MlflowClient, experiment_id: str) -> list:
    runs = client.search_runs([experiment_id], order_by=["attributes.start_time ASC"])
    return [r for r in runs if "mlflow.parentRunId" in r.data.tags]


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}")


def test_sigkill_mid_trial_then_resume(small_dataset: Path, tmp_path: Path) -> None:
    experiment = tmp_path / "kill.toml"
    experiment.write_text(kill_experiment(small_dataset))
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    seed_store(uri)  # an empty store as MLflow makes it, made once
    env = {"MLFLOW_TRACKING_URI": uri, "PYTHONUNBUFFERED": "1"}
    args = ["search", str(experiment), "--tuner-dir", str(tmp_path / "tuner"), "--reports-dir", str(tmp_path / "r")]
    first = subprocess.Popen(
        [XRAYCNN, *args], env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    client = MlflowClient(uri, registry_uri=uri)
    try:

        def trial_is_training(index: int) -> bool:
            found = client.get_experiment_by_name("xraycnn-kill")
            if found is None:
                return False
            runs = trial_runs(client, found.experiment_id)
            return (
                len(runs) == index + 1
                and runs[index].info.status == "RUNNING"
                and len(client.get_metric_history(runs[index].info.run_id, "val_auc")) >= 1
            )

        wait_for(lambda: trial_is_training(0), 240, "the first trial to train")
        # Meanwhile a second search of the same experiment refuses, without touching the runs.
        locked = xraycnn(*args, env=env)
        assert locked.returncode == 2
        assert "another search of experiment 'kill' is running" in locked.stderr
        assert "Traceback" not in locked.stderr

        wait_for(lambda: trial_is_training(1), 240, "the second trial to train")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    experiment_id = client.get_experiment_by_name("xraycnn-kill").experiment_id
    before = trial_runs(client, experiment_id)
    assert [r.info.status for r in before] == ["FINISHED", "RUNNING"]  # what SIGKILL leaves behind
    killed_run, killed_trial = before[1].info.run_id, before[1].data.tags["xraycnn.trial_id"]

    resumed = xraycnn(*args, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert "1 trial(s) already done, not run again" in resumed.stdout

    after = trial_runs(client, experiment_id)
    by_id = {r.info.run_id: r for r in after}
    assert by_id[killed_run].info.status == "KILLED"
    assert all(r.info.status != "RUNNING" for r in after)
    parents = {r.data.tags["mlflow.parentRunId"] for r in after}
    assert parents == {before[0].data.tags["mlflow.parentRunId"]}  # the new attempt joins the same parent
    finished = [r for r in after if r.info.status == "FINISHED"]
    assert sorted(r.data.tags["xraycnn.trial_id"] for r in finished) == sorted(
        {r.data.tags["xraycnn.trial_id"] for r in after}
    )  # every trial finished exactly once: no duplicates
    assert len(finished) == 2
    again = [r for r in finished if r.data.tags["xraycnn.trial_id"] == killed_trial]
    assert again and again[0].data.tags["xraycnn.attempt"] == "2"
    assert [m.step for m in client.get_metric_history(again[0].info.run_id, "val_auc")] == list(range(1, EPOCHS + 1))
    assert str(client.get_model_version_by_alias("xraycnn-kill", "champion").version) == "1"


def test_ctrl_c_closes_the_runs_and_says_how_to_resume(small_dataset: Path, tmp_path: Path) -> None:
    experiment = tmp_path / "sigint.toml"
    experiment.write_text(
        kill_experiment(small_dataset)
        .replace("max_trials = 2", "max_trials = 1")
        .replace(f"= {EPOCHS}", "= 30")  # epochs, max_epochs, patience: one trial, and a wide window to interrupt it
        .replace("xraycnn-kill", "xraycnn-sigint")
    )
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    seed_store(uri)  # an empty store as MLflow makes it, made once
    env = {"MLFLOW_TRACKING_URI": uri, "PYTHONUNBUFFERED": "1"}
    args = ["search", str(experiment), "--tuner-dir", str(tmp_path / "tuner"), "--reports-dir", str(tmp_path / "r")]
    # Ctrl-C in a terminal: SIGINT with its default disposition, which the child gets back even where this
    # test runs as a background job (a non-interactive shell starts those with SIGINT ignored, and an ignored
    # signal stays ignored across exec: Python would then never raise KeyboardInterrupt).
    first = subprocess.Popen(
        [XRAYCNN, *args],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    client = MlflowClient(uri, registry_uri=uri)
    try:

        def training() -> bool:
            found = client.get_experiment_by_name("xraycnn-sigint")
            runs = trial_runs(client, found.experiment_id) if found else []
            return bool(runs) and len(client.get_metric_history(runs[0].info.run_id, "val_auc")) >= 1

        wait_for(training, 240, "the trial to train")
        first.send_signal(signal.SIGINT)
        _, stderr = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 130, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith("interrupted: the search of sigint stopped; its open runs are closed as KILLED.")
    assert "Run the same command again to resume" in lines[0]

    experiment_id = client.get_experiment_by_name("xraycnn-sigint").experiment_id
    (parent,) = [r for r in client.search_runs([experiment_id]) if "mlflow.parentRunId" not in r.data.tags]
    (trial,) = trial_runs(client, experiment_id)
    assert (parent.info.status, trial.info.status) == ("KILLED", "KILLED")
    assert not client.search_registered_models()  # nothing half-registered

    resumed = xraycnn(*args, env=env)
    assert resumed.returncode == 0, resumed.stderr
    runs = trial_runs(client, experiment_id)
    assert [r.info.status for r in runs] == ["KILLED", "FINISHED"]
    assert runs[1].data.tags["xraycnn.attempt"] == "2"
    assert runs[1].data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"


SHARED_MODEL = "xraycnn-shared"


def test_two_experiments_at_once_on_one_store(small_dataset: Path, tmp_path: Path) -> None:
    """Different experiments may run side by side on one store and even one registered model: each gets its
    own runs, and whichever finishes first the champion is one the other does not beat."""
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONUNBUFFERED": "1"}
    processes = {}
    for name, dropout in (("alpha", "0.1"), ("beta", "0.3")):
        text = (
            kill_experiment(small_dataset)
            .replace("dropout = { values = [0.1, 0.2] }", f"dropout = {dropout}")
            .replace(f"epochs = {EPOCHS}", "epochs = 3")
            .replace(f"max_epochs = {EPOCHS}", "max_epochs = 3")
            .replace("xraycnn-kill", SHARED_MODEL)
        )
        (tmp_path / f"{name}.toml").write_text(text)
        processes[name] = subprocess.Popen(
            [
                XRAYCNN,
                "search",
                str(tmp_path / f"{name}.toml"),
                "--tuner-dir",
                str(tmp_path / "tuner"),
                "--reports-dir",
                str(tmp_path / "r"),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    outputs = {name: p.communicate(timeout=600) for name, p in processes.items()}
    for name, p in processes.items():
        assert p.returncode == 0, outputs[name][1]

    client = MlflowClient(uri, registry_uri=uri)
    for name in processes:
        experiment = client.get_experiment_by_name(f"xraycnn-{name}")
        runs = client.search_runs([experiment.experiment_id])
        (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
        children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
        assert parent.info.status == "FINISHED" and parent.data.tags["xraycnn.experiment_file"].endswith(f"{name}.toml")
        assert len(children) == 2 and {c.info.status for c in children} == {"FINISHED"}
        assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
        assert {c.data.params["dropout"] for c in children} == {"0.1" if name == "alpha" else "0.3"}
    versions = client.search_model_versions(f"name = '{SHARED_MODEL}'")
    assert sorted(int(v.version) for v in versions) == [1, 2]
    # whichever finished first, no other version beats the champion: none has a better objective without a lower
    # worst-change specificity (the registry never promotes a better val_auc whose calls move more; a tie keeps
    # the first)
    values = {str(v.version): float(v.tags["xraycnn.objective_value"]) for v in versions}
    specificity = {str(v.version): float(v.tags["xraycnn.val_shift_worst_specificity"]) for v in versions}
    champion = str(client.get_model_version_by_alias(SHARED_MODEL, "champion").version)
    for other in set(values) - {champion}:
        assert not (values[other] > values[champion] and specificity[other] >= specificity[champion]), (
            values,
            specificity,
        )
    assert {v.tags["xraycnn.experiment"] for v in versions} == {"alpha", "beta"}
