"""A store folder moved or copied elsewhere keeps working: its runs' artifacts are read from, and new ones
written into, the folder where it is now, and the copy it came from is left alone."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from xraycnn.tracking.relocate import relocate_if_moved
from xraycnn.tracking.store import ensure_experiment, resolve_store


def _store(folder: Path) -> str:
    return f"sqlite:///{folder / 'mlflow.db'}"


def _fill(folder: Path) -> tuple[str, str]:
    """A store with one experiment, one run with an artifact and a model version from it."""
    store = resolve_store(_store(folder))
    client = store.client()
    experiment_id = ensure_experiment(store, "xraycnn-moved")
    run = client.create_run(experiment_id)
    client.log_text(run.info.run_id, "before the move", "notes/a.txt")
    client.set_terminated(run.info.run_id)
    client.create_registered_model("moved")
    client.create_model_version("moved", f"{run.info.artifact_uri}/notes", run.info.run_id)
    return experiment_id, run.info.run_id


def test_a_moved_store_reads_and_writes_in_its_new_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    experiment_id, run_id = _fill(tmp_path / "a" / "mlruns")
    shutil.move(tmp_path / "a" / "mlruns", tmp_path / "b")
    store = resolve_store(_store(tmp_path / "b"))
    assert "this store was moved or copied from" in capsys.readouterr().err
    client = store.client()
    new = (tmp_path / "b").resolve()
    assert client.get_experiment(experiment_id).artifact_location == (new / "artifacts" / "xraycnn-moved").as_uri()
    read = client.download_artifacts(run_id, "notes/a.txt", str(tmp_path / "out"))
    assert Path(read).read_text() == "before the move"
    after = client.create_run(experiment_id)
    client.log_text(after.info.run_id, "after the move", "notes/b.txt")
    assert (new / "artifacts").exists() and list((new / "artifacts").rglob("b.txt"))
    assert not (tmp_path / "a" / "mlruns").exists()  # nothing written where it was
    version = client.get_model_version("moved", "1")
    assert str(new) in version.source and str(tmp_path / "a") not in version.source
    # once in place, opening it again rewrites nothing; the database before the move was kept beside it
    assert relocate_if_moved(new / "mlflow.db") is None
    assert list(new.glob("mlflow.db.before-move-*"))


def test_a_copied_store_leaves_the_original_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    experiment_id, run_id = _fill(tmp_path / "original")
    shutil.copytree(tmp_path / "original", tmp_path / "copy")
    copy = resolve_store(_store(tmp_path / "copy")).client()
    assert copy.get_run(run_id).info.artifact_uri.startswith((tmp_path / "copy").as_uri())
    new_run = copy.create_run(experiment_id)  # (MLflow caches an old run's artifact place per process)
    copy.log_text(new_run.info.run_id, "only in the copy", "notes/c.txt")
    assert list((tmp_path / "copy").rglob("c.txt")) and not list((tmp_path / "original").rglob("c.txt"))
    original = resolve_store(_store(tmp_path / "original")).client()
    assert original.get_experiment(experiment_id).artifact_location.startswith((tmp_path / "original").as_uri())
