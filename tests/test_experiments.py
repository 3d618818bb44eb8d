"""Every shipped experiment file through the real CLI on a tiny budget (`--set` overrides): the searches with
`xraycnn search`, the notebook's fixed network with `xraycnn train`. The overrides are recorded on the run,
and a search with other overrides does not resume this one."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.tiny_search import seed_store, xraycnn

pytestmark = pytest.mark.slow  # the real CLI end to end (make test-fast leaves it out)

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p.name for p in (REPO / "experiments").glob("*.toml"))
TINY = ["--set", "data.image_size=32"]
SEARCH_TINY = [
    *TINY,
    "--set",
    "budget.max_trials=1",
    "--set",
    "budget.max_epochs=2",
    "--set",
    "budget.hyperband_factor=2",
    "--set",
    "budget.rungs=[]",  # the shipped rungs lie beyond the tiny budget's 2 epochs
]
TRAIN_TINY = [*TINY, "--set", "space.epochs=1", "--set", "budget.max_epochs=1"]


def test_every_experiment_file_is_run_by_the_test_below() -> None:
    assert SHIPPED == ["default.toml", "robust.toml", "seed.toml"]


@pytest.mark.parametrize("name", SHIPPED)
def test_a_shipped_experiment_runs_end_to_end(name: str, small_dataset: Path, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    seed_store(uri)  # an empty store as MLflow makes it, made once
    env = {"MLFLOW_TRACKING_URI": uri}
    experiment = str(REPO / "experiments" / name)
    common = ["--data", str(small_dataset)]
    if name == "seed.toml":  # a fixed network: trained as one run
        result = xraycnn("train", experiment, *common, *TRAIN_TINY, env=env)
    else:
        common += ["--tuner-dir", str(tmp_path / "tuner"), "--reports-dir", str(tmp_path / "reports")]
        result = xraycnn("search", experiment, *common, *SEARCH_TINY, env=env)
    assert result.returncode == 0, result.stderr
    client = MlflowClient(uri, registry_uri=uri)
    stem = name.removesuffix(".toml")
    (run,) = [
        r
        for r in client.search_runs([client.get_experiment_by_name(f"xraycnn-{stem}").experiment_id])
        if "mlflow.parentRunId" not in r.data.tags
    ]
    assert run.info.status == "FINISHED"
    overrides = TRAIN_TINY if name == "seed.toml" else SEARCH_TINY
    assert run.data.tags["xraycnn.overrides"] == " ".join(overrides[1::2])
    assert run.data.params["override.data.image_size"] == "32" and run.data.params["data.image_size"] == "32"
    assert {"test_auc", "test_borders_only_auc", "test_gradcam_outside_share"} <= set(run.data.metrics)
    assert {"test_guard_refused", "guard_refused_not_films"} <= set(run.data.metrics)  # its input guard, measured
    model = run.data.tags["xraycnn.registered_model"]
    assert client.get_model_version_by_alias(model, "champion").run_id == run.info.run_id
    if name != "seed.toml":
        # the same file with other overrides is another search: it refuses to resume this one's state
        other = xraycnn("search", experiment, *common, *SEARCH_TINY, "--set", "seed=7", env=env)
        assert other.returncode == 2 and "changed since the search in" in other.stderr
