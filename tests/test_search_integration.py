"""The real entry point on a tiny budget (tests/tiny_search.py), then resume, predict, pyfunc, `xraycnn train`
and `xraycnn report`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import keras
import mlflow
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.readme import readme_blocks
from tests.tiny_search import EPOCH_METRICS, MODEL, TEST_METRICS, XRAYCNN, Search
from xraycnn import prepare_images
from xraycnn.data.dataset import dataset_digest
from xraycnn.data.discovery import discover

pytestmark = pytest.mark.slow  # the real CLI end to end (make test-fast leaves it out)


def parent_and_children(search: Search) -> tuple:
    runs = search.runs()
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1
    return parents[0], children


def test_one_parent_run_with_its_provenance(search: Search) -> None:
    parent, children = parent_and_children(search)
    tags = parent.data.tags
    assert parent.info.status == "FINISHED"
    assert tags["xraycnn.tuner"] == "hyperband" and tags["xraycnn.seed"] == "7"
    assert tags["xraycnn.experiment_file"].endswith("tiny.toml") and len(tags["xraycnn.experiment_sha256"]) == 64
    assert tags["xraycnn.dataset_digest"] == dataset_digest(discover(search.root))
    git = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent)
    if git.returncode == 0:
        assert tags["mlflow.source.git.commit"] == git.stdout.strip()
    assert [d.dataset.digest for d in parent.inputs.dataset_inputs] == [tags["xraycnn.dataset_digest"]]
    assert parent.data.params["data.image_size"] == "64" and parent.data.params["tuner.objective"] == "val_auc"
    assert set(parent.data.metrics) >= TEST_METRICS
    assert tags["xraycnn.best_trial_id"] in {c.data.tags["xraycnn.trial_id"] for c in children}
    artifacts = {a.path for a in search.client.list_artifacts(parent.info.run_id)}
    artifacts |= {a.path for d in ("plots", "evaluation") for a in search.client.list_artifacts(parent.info.run_id, d)}
    assert {
        "trials.csv",
        "plots/roc_curve.png",
        "plots/confusion_matrix.png",
        "evaluation/test_predictions.csv",
    } <= artifacts


def test_one_child_run_per_trial_with_params_epochs_and_test_metrics(search: Search) -> None:
    parent, children = parent_and_children(search)
    assert len(children) == 3
    by_trial = {c.data.tags["xraycnn.trial_id"]: c for c in children}
    continuations = 0
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        params = child.data.params
        assert {
            "conv_blocks",
            "filters_1",
            "kernel_size",
            "dropout",
            "dense_units",
            "learning_rate",
            "batch_size",
        } <= set(params)
        assert params["data.image_size"] == "64" and params["seed"] == "7" and params["data.digest"]
        metrics = set(child.data.metrics)
        assert EPOCH_METRICS | {f"val_{m}" for m in EPOCH_METRICS} | TEST_METRICS <= metrics
        first, last = int(params["tuner/initial_epoch"]), int(params["tuner/epochs"])
        for name in ("loss", "val_auc"):
            steps = [m.step for m in search.client.get_metric_history(child.info.run_id, name)]
            assert steps == list(range(first + 1, last + 1))  # true epoch numbers, continuations included
        if "tuner/trial_id" in params:
            continuations += 1
            continued = by_trial[params["tuner/trial_id"]]
            assert child.data.tags["xraycnn.continues_trial"] == params["tuner/trial_id"]
            assert child.data.tags["xraycnn.continues_run_id"] == continued.info.run_id
            assert first > 0
        plots = {a.path for a in search.client.list_artifacts(child.info.run_id, "plots")}
        assert plots == {"plots/learning_curves.png", "plots/confusion_matrix.png"}
    assert continuations == 1


def test_trials_table(search: Search, tmp_path: Path) -> None:
    parent, children = parent_and_children(search)
    path = search.client.download_artifacts(parent.info.run_id, "trials.csv", str(tmp_path))
    table = pd.read_csv(path)
    assert len(table) == 3 and set(table["status"]) == {"COMPLETED"}
    assert list(table["score"]) == sorted(table["score"], reverse=True)
    assert set(table["run_id"]) == {c.info.run_id for c in children}
    assert "hp.learning_rate" in table and "test_auc" in table


def test_registered_champion_predicts_like_the_trained_model(search: Search, tmp_path: Path) -> None:
    parent, _ = parent_and_children(search)
    version = search.client.get_model_version_by_alias(MODEL, "champion")
    assert str(version.version) == "1"
    assert version.tags["xraycnn.trial_id"] == parent.data.tags["xraycnn.best_trial_id"]
    assert version.tags["xraycnn.objective"] == "val_auc"
    assert float(version.tags["xraycnn.objective_value"]) == pytest.approx(parent.data.metrics["best_val_auc"])

    logged = pd.read_csv(
        search.client.download_artifacts(parent.info.run_id, "evaluation/test_predictions.csv", str(tmp_path))
    )
    images = prepare_images([search.root / f for f in logged["file"]], (64, 64, 1))
    mlflow.set_tracking_uri(search.env["MLFLOW_TRACKING_URI"])
    mlflow.set_registry_uri(search.env["MLFLOW_TRACKING_URI"])
    model = mlflow.keras.load_model(f"models:/{MODEL}@champion")
    loaded = model.predict(images, batch_size=256, verbose=0).ravel()
    np.testing.assert_allclose(loaded, logged["probability_covid19"], atol=1e-6)
    # the pyfunc flavour takes the image files' bytes (the README's way) and decodes them as training did
    pyfunc = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    answers = pyfunc.predict(pd.DataFrame({"image": [(search.root / f).read_bytes() for f in logged["file"]]}))
    # the films the assessment found the input guard refusing, and those only, get no answer
    accepted = ~logged["refused_by_input_guard"].to_numpy()
    assert accepted.sum() >= len(accepted) // 2
    np.testing.assert_allclose(answers["probability_covid19"].astype(float)[accepted], loaded[accepted], atol=1e-6)
    assert answers["error"][accepted].isna().all() and set(answers["call"][accepted]) <= {"COVID19", "NORMAL"}
    assert all("not a chest radiograph" in e for e in answers["error"][~accepted])
    # and the project's helper still reads the geometry from the pyfunc model's metadata
    assert prepare_images([search.root / logged["file"][0]], pyfunc).shape == (1, 64, 64, 1)
    # and the trained model itself, as Keras Tuner checkpointed it
    from xraycnn.config import load_experiment
    from xraycnn.data.dataset import prepare_data
    from xraycnn.model.hypermodel import CxrHyperModel
    from xraycnn.runtime.precision import apply_policy
    from xraycnn.tuning.tuners import build_tuner

    config = load_experiment(search.tmp / "tiny.toml").config
    apply_policy(config.training.precision)
    try:
        data = prepare_data(discover(search.root), config.data, config.seed)
        hypermodel = CxrHyperModel(config, data)
        tuner = build_tuner(config, hypermodel, search.tmp / "tuner", "tiny")
        best = tuner.oracle.get_trial(parent.data.tags["xraycnn.best_trial_id"])
        network = tuner.load_model(best)
        assert network.input_shape == (None, 48, 48, 1)  # it trained on the cached crops of the films
        trained = hypermodel.registered_model(best.hyperparameters, network)
        # the registered model is the trained one with the Platt scaling fitted on validation in its output layer
        from xraycnn.evaluation.calibration import PlattScaling

        platt = PlattScaling(parent.data.metrics["calibration_scale"], parent.data.metrics["calibration_shift"])
        raw = trained.predict(images, batch_size=256, verbose=0).ravel()
        # 1e-5: the two paths run different float32 kernels (the cached crops vs the model's own preprocessing
        # layer, other batch sizes); a probability near 0.5 moves by a few 1e-6 with them
        np.testing.assert_allclose(platt.apply(raw), loaded, atol=1e-5)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_every_path_applies_the_same_preprocessing(search: Search, tmp_path: Path) -> None:
    """One model, one set of films: the same probabilities from the search's own assessment, `predict`,
    `evaluate`, prepare_images + the Keras load, and the pyfunc load."""
    from xraycnn.jobs.predict import run_predict

    parent, _ = parent_and_children(search)
    logged = pd.read_csv(
        search.client.download_artifacts(parent.info.run_id, "evaluation/test_predictions.csv", str(tmp_path))
    ).set_index("file")
    assessed = logged["probability_covid19"]
    files = sorted(assessed.index)
    paths = [search.root / f for f in files]
    refused = logged.loc[files, "refused_by_input_guard"].to_numpy()
    mlflow.set_tracking_uri(search.env["MLFLOW_TRACKING_URI"])
    mlflow.set_registry_uri(search.env["MLFLOW_TRACKING_URI"])
    uri = f"models:/{MODEL}@champion"
    version = search.client.get_model_version_by_alias(MODEL, "champion")
    assert version.tags["xraycnn.preprocess"] == "crop-eq_clahe2x8"
    assert mlflow.models.get_model_info(uri).metadata["preprocess"] == "crop-eq_clahe2x8"

    keras_model = mlflow.keras.load_model(uri)
    assert keras_model.layers[0].name == "film_preprocessing_crop-eq_clahe2x8"  # stock Keras operations
    by_keras = keras_model.predict(prepare_images(paths, keras_model), verbose=0).ravel()
    pyfunc = mlflow.pyfunc.load_model(uri)
    by_pyfunc = pyfunc.predict(pd.DataFrame({"image": [p.read_bytes() for p in paths]}))["probability_covid19"]
    by_pyfunc = by_pyfunc.astype(float).to_numpy()
    by_predict = [p.probability for p in run_predict(uri, paths, tracking_uri=search.env["MLFLOW_TRACKING_URI"])]
    by_predict = np.array([np.nan if p is None else p for p in by_predict])
    result = search.run("evaluate", "--model", uri, "--data", str(search.root), "--resamples", "100")
    assert result.returncode == 0, result.stderr
    experiment = search.client.get_experiment_by_name("xraycnn-evaluations")
    run = search.client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"])[0]
    evaluated = pd.read_csv(
        search.client.download_artifacts(run.info.run_id, "evaluation/test_predictions.csv", str(tmp_path / "e"))
    ).set_index("file")["probability_covid19"]
    evaluated.index = [f"test/{f}" for f in evaluated.index]  # it evaluated the layout's test/ folder
    expected = assessed.loc[files].to_numpy()
    # every film scored by the Keras model and `evaluate`; the guard's refusals answered by none of the others
    for name, got in {"keras": by_keras, "evaluate": evaluated.loc[files].to_numpy()}.items():
        np.testing.assert_allclose(got, expected, atol=1e-6, err_msg=name)
    for name, got in {"pyfunc": by_pyfunc, "predict": by_predict}.items():
        np.testing.assert_array_equal(np.isnan(got), refused, err_msg=name)
        np.testing.assert_allclose(got[~refused], expected[~refused], atol=1e-6, err_msg=name)
    # and the shortcut audit is part of every evaluation, per source too
    assert {"borders_only_auc", "lungs_only_auc_ci_low", "gradcam_outside_share"} <= set(run.data.metrics)
    assert "Shortcut audit" in result.stdout and "borders_only_auc" in result.stdout


def test_plain_mlflow_loads_work_in_a_clean_interpreter(search: Search, tmp_path: Path) -> None:
    """`mlflow.keras.load_model` and `mlflow.pyfunc.load_model` by name in a fresh Python that imports nothing
    of xraycnn: the Keras load needs none of it, the pyfunc load imports only its installed loader."""
    parent, _ = parent_and_children(search)
    predictions = pd.read_csv(
        search.client.download_artifacts(parent.info.run_id, "evaluation/test_predictions.csv", str(tmp_path))
    ).set_index("file")
    assessed = predictions["probability_covid19"]
    files = sorted(predictions.index[~predictions["refused_by_input_guard"]])[:6]
    uri = f"models:/{MODEL}@champion"
    blank = tmp_path / "blank.png"
    Image.new("L", (256, 256)).save(blank)
    films = prepare_images([search.root / f for f in files], mlflow.keras.load_model(uri))
    np.save(tmp_path / "films.npy", films)
    (tmp_path / "paths.txt").write_text("\n".join(str(search.root / f) for f in files))
    probe = f"""
import json, sys
import mlflow, numpy as np, pandas as pd
keras_model = mlflow.keras.load_model({uri!r})
assert not [m for m in sys.modules if m.startswith("xraycnn")], "the Keras load imported xraycnn"
by_keras = keras_model.predict(np.load({str(tmp_path / "films.npy")!r}), verbose=0).ravel().tolist()
paths = open({str(tmp_path / "paths.txt")!r}).read().split("\\n")
pyfunc = mlflow.pyfunc.load_model({uri!r})
answers = pyfunc.predict(pd.DataFrame({{"image": [open(p, "rb").read() for p in paths]}}))
refused = pyfunc.predict(pd.DataFrame({{"image": [open(paths[0], "rb").read(), open({str(blank)!r}, "rb").read()]}}))
loaded = sorted(m for m in sys.modules if m.startswith("xraycnn.serving"))
print("RESULT" + json.dumps([by_keras, answers["probability_covid19"].astype(float).tolist(), loaded,
                             refused["error"].tolist(), answers["model_version"].iloc[0]]))
"""
    env = {**os.environ, **search.env, "MLFLOW_REGISTRY_URI": search.env["MLFLOW_TRACKING_URI"]}
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    by_keras, by_pyfunc, loaded, errors, model_version = json.loads(result.stdout.split("RESULT", 1)[1])
    expected = assessed.loc[files].to_numpy()
    np.testing.assert_allclose(by_keras, expected, atol=1e-6)
    np.testing.assert_allclose(by_pyfunc, expected, atol=1e-6)
    assert "xraycnn.serving.loader" in loaded
    assert errors[0] is None and "not a chest radiograph" in errors[1]  # the input guard came with the model
    # outside `xraycnn serve` the answers name the logged model the registry's version points at
    version = search.client.get_model_version_by_alias(MODEL, "champion")
    assert model_version.startswith("m-") and version.source == f"models:/{model_version}"


def test_every_trial_and_the_champion_carry_the_shortcut_audit(search: Search) -> None:
    parent, children = parent_and_children(search)
    for child in children:
        m = child.data.metrics
        for name in ("borders_only_auc", "lungs_only_auc", "gradcam_outside_share"):
            key = f"best_val_{name}"
            assert m[f"{key}_ci_low"] <= m[key] <= m[f"{key}_ci_high"], key
        # the films are cropped to the lung box first: the borders alone are a black film to this model
        assert m["best_val_borders_only_auc"] == 0.5 and m["best_val_gradcam_outside_share"] == 0.0
        assert child.data.params["preprocess_crop"] == "True" and child.data.params["augment_translate"] == "0.05"
    m = parent.data.metrics
    for name in ("borders_only_auc", "lungs_only_auc", "gradcam_outside_share"):
        assert m[f"test_{name}_ci_low"] <= m[f"test_{name}"] <= m[f"test_{name}_ci_high"]
    assert m["test_lungs_only_auc"] == pytest.approx(m["test_auc"])  # crop box == lung box: the same film
    assert "no shortcut gate" in parent.data.tags["xraycnn.selection_rule"]
    assert "Selection: trials ranked by val_auc (max) on validation; no shortcut gate" in search.output


def test_every_trial_and_the_champion_carry_their_calls_under_acquisition_changes_and_per_source(
    search: Search,
) -> None:
    parent, children = parent_and_children(search)
    for child in children:
        m = child.data.metrics
        assert 0 < m["best_val_threshold"] < 1
        worst = m["best_val_shift_worst_specificity"]
        assert m["best_val_shift_worst_specificity_ci_low"] <= worst <= m["best_val_shift_worst_specificity_ci_high"]
        not_changes = ("best_val_shift_clean_specificity", "best_val_shift_worst_specificity")
        per_change = [
            v
            for k, v in m.items()
            if k.startswith("best_val_shift_") and k.endswith("_specificity") and k not in not_changes
        ]
        assert worst == pytest.approx(min(per_change))
        # the subset's two sources, each with its normals' specificity and its COVID-19 films' sensitivity
        assert sum(k.endswith("_thr_specificity") for k in m if k.startswith("best_val_source_")) == 2
        assert sum(k.endswith("_thr_sensitivity") for k in m if k.startswith("best_val_source_")) == 2
    m = parent.data.metrics
    assert m["test_shift_worst_specificity_ci_low"] <= m["test_shift_worst_specificity"]
    assert m["test_shift_worst_specificity"] <= m["test_shift_worst_specificity_ci_high"]
    version = search.client.get_model_version_by_alias(MODEL, "champion")
    assert float(version.tags["xraycnn.test_shift_worst_specificity"]) == pytest.approx(
        m["test_shift_worst_specificity"], abs=1e-4
    )
    from xraycnn.evaluation.acquisition import CHANGES

    assert version.tags["xraycnn.test_shift_worst_change"] in CHANGES
    artifacts = {a.path for a in search.client.list_artifacts(parent.info.run_id, "plots")}
    assert "plots/acquisition_shift.png" in artifacts


def test_the_champion_is_calibrated_on_validation_and_carries_it_everywhere(search: Search) -> None:
    parent, _ = parent_and_children(search)
    m = parent.data.metrics
    assert m["calibration_scale"] > 0 and {"val_ece", "val_ece_uncalibrated", "test_ece_uncalibrated"} <= set(m)
    # fitted on validation by log loss, which it cannot make worse there (no scaling is one of its choices)
    from xraycnn.config import load_experiment
    from xraycnn.data.dataset import prepare_data
    from xraycnn.evaluation import ranking_metrics
    from xraycnn.evaluation.calibration import PlattScaling, logit
    from xraycnn.model.predict import predict_probabilities

    config = load_experiment(search.tmp / "tiny.toml").config
    data = prepare_data(discover(search.root), config.data, config.seed)
    mlflow.set_tracking_uri(search.env["MLFLOW_TRACKING_URI"])
    mlflow.set_registry_uri(search.env["MLFLOW_TRACKING_URI"])
    calibrated = predict_probabilities(mlflow.keras.load_model(f"models:/{MODEL}@champion"), data.val.images)
    scale, shift = m["calibration_scale"], m["calibration_shift"]
    raw = PlattScaling(1 / scale, -shift / scale).apply(calibrated)  # the inverse scaling: what the network said
    assert np.allclose(logit(PlattScaling(scale, shift).apply(raw)), logit(calibrated), atol=1e-3)
    loss = {name: ranking_metrics(data.val.labels, p)["loss"][0] for name, p in (("raw", raw), ("cal", calibrated))}
    assert loss["cal"] <= loss["raw"] + 1e-4, loss
    version = search.client.get_model_version_by_alias(MODEL, "champion")
    assert version.tags["xraycnn.calibration"].startswith("platt scale=")
    metadata = mlflow.models.get_model_info(f"models:/{MODEL}@champion").metadata
    assert metadata["calibration"]["method"] == "platt"
    assert metadata["calibration"]["scale"] == pytest.approx(m["calibration_scale"])


def test_rerun_resumes_without_running_trials_again(search: Search) -> None:
    before = len(search.runs())
    result = search.run(
        "search",
        str(search.tmp / "tiny.toml"),
        "--tuner-dir",
        str(search.tmp / "tuner"),
        "--reports-dir",
        str(search.tmp / "reports"),
    )
    assert result.returncode == 0, result.stderr
    assert "3 trial(s) already done, not run again" in result.stdout
    assert "Search already complete" in result.stdout
    assert len(search.runs()) == before
    assert [str(v.version) for v in search.client.search_model_versions(f"name = '{MODEL}'")] == ["1"]


def test_predict_prints_probability_and_label(search: Search) -> None:
    files = search.accepted_test_films(3)
    result = search.run("predict", "--model", f"models:/{MODEL}@champion", *map(str, files))
    assert result.returncode == 0, result.stderr
    assert "P(COVID19)" in result.stdout
    for f in files:
        assert f.name[:20] in result.stdout
    # the printed probabilities and calls are the model's own, at the threshold it carries, in the files' order
    printed = re.findall(r"│\s*([01]\.\d{4})\s*│\s*(COVID19|NORMAL)\s*│", result.stdout)
    mlflow.set_tracking_uri(search.env["MLFLOW_TRACKING_URI"])
    mlflow.set_registry_uri(search.env["MLFLOW_TRACKING_URI"])
    model = mlflow.keras.load_model(f"models:/{MODEL}@champion")
    p = model.predict(prepare_images(files, model), verbose=0).ravel()
    threshold = float(search.client.get_model_version_by_alias(MODEL, "champion").tags["xraycnn.threshold"])
    assert printed == [(f"{x:.4f}", "COVID19" if x >= threshold else "NORMAL") for x in p]
    missing = search.run("predict", "--model", f"models:/{MODEL}@staging", str(files[0]))
    assert missing.returncode == 2
    assert f"{MODEL} (champion=v1" in missing.stderr


def test_what_is_not_a_chest_film_is_refused_with_its_guard_score(search: Search, tmp_path: Path) -> None:
    """The champion carries an input guard fitted at registration: `predict` gives a blank page, noise and a
    photograph no call, and the champion's run holds how often it refuses real and made images."""
    from xraycnn.evaluation.not_films import not_films

    made = not_films(256, 1)
    images = {"blank.png": made["blank"][0], "noise.png": made["noise"][0], "photo.png": made["photo"][3]}
    for name, image in images.items():
        Image.fromarray(image[..., 0]).save(tmp_path / name)
    film = search.accepted_test_films(1)[1]  # a NORMAL film
    paths = [str(film), *(str(tmp_path / n) for n in images)]
    result = search.run("predict", "--model", f"models:/{MODEL}@champion", *paths)
    assert result.returncode == 1, result.stdout  # not every image got a call
    text = " ".join(result.stdout.split())
    assert text.count("not a chest radiograph") == len(images) and "input guard score" in text, result.stdout
    assert re.search(r"│\s*[01]\.\d{4}\s*│\s*(COVID19|NORMAL)\s*│", result.stdout)  # the film got its call
    # the same for scripts: stdout holds the JSON alone
    as_json = search.run("predict", "--json", "--model", f"models:/{MODEL}@champion", *paths)
    assert as_json.returncode == 1
    answers = json.loads(as_json.stdout)
    assert [a["image"] for a in answers] == paths and answers[0]["call"] in ("COVID19", "NORMAL")
    assert answers[0]["model_version"] == "1" and 0 < answers[0]["threshold"] <= 1
    assert all(a["call"] is None and "not a chest radiograph" in a["error"] for a in answers[1:])
    parent, _ = parent_and_children(search)
    m = parent.data.metrics
    # a tiny network's guard (1-2 blocks of 4-8 filters, 58 films) refuses most of them (the default
    # search's champion: benchmarks/results/search-default-20261205-input-guard-*.json)
    kinds = [k for k in m if k.startswith("guard_refused_not_film_")]
    assert len(kinds) == 6 and all(0 <= m[k] <= 1 for k in kinds) and m["guard_refused_not_films"] >= 0.5
    # its limit set on a few dozen validation films: a tiny guard refuses a few real ones (the default's: 0.07 %)
    assert 0 <= m["test_guard_refused"] <= 0.2 and m["guard_limit"] > 0
    assert "test_guard_refused_shift_worst" in m
    mlflow.set_tracking_uri(search.env["MLFLOW_TRACKING_URI"])
    mlflow.set_registry_uri(search.env["MLFLOW_TRACKING_URI"])
    info = mlflow.models.get_model_info(f"models:/{MODEL}@champion")
    assert info.metadata["input_guard"]["limit"] == pytest.approx(m["guard_limit"], abs=1e-4)


def test_train_fixed_network_as_one_run(search: Search) -> None:
    seed_like = search.tmp / "fixed.toml"
    seed_like.write_text(f"""
seed = 3
[data]
root = "{search.root}"
image_size = 32
[space]
conv_blocks = 2
filters = [4, 8]
kernel_size = 5
dropout = 0.5
dense_units = 16
learning_rate = 1e-3
batch_size = 16
epochs = 2
[tuner]
algorithm = "random"
[budget]
max_trials = 1
max_epochs = 2
[registry]
model_name = "{MODEL}-fixed"
""")
    result = search.run("train", str(seed_like))
    assert result.returncode == 0, result.stderr
    experiment = search.client.get_experiment_by_name("xraycnn-fixed")
    (run,) = search.client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and "mlflow.parentRunId" not in run.data.tags
    assert run.data.params["filters_2"] == "8" and run.data.params["epochs"] == "2"
    assert [m.step for m in search.client.get_metric_history(run.info.run_id, "val_auc")] == [1, 2]
    assert set(run.data.metrics) >= TEST_METRICS
    assert str(search.client.get_model_version_by_alias(f"{MODEL}-fixed", "champion").version) == "1"


def test_bad_experiment_file_fails_before_logging(search: Search) -> None:
    bad = search.tmp / "bad.toml"
    bad.write_text("[tuner]\nalgorithm = 'grid'\n")
    before = len(search.client.search_experiments())
    result = search.run("search", str(bad), "--tuner-dir", str(search.tmp / "tuner"))
    assert result.returncode == 2
    assert "bad.toml: tuner.algorithm: Input should be 'hyperband', 'random' or 'bayesian'" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(search.client.search_experiments()) == before


def test_a_changed_experiment_file_is_not_resumed_silently(search: Search) -> None:
    path = search.tmp / "tiny.toml"
    original = path.read_text()
    before = len(search.runs())
    try:
        path.write_text(original.replace("seed = 7", "seed = 8"))
        result = search.run(
            "search", str(path), "--tuner-dir", str(search.tmp / "tuner"), "--reports-dir", str(search.tmp / "reports")
        )
    finally:
        path.write_text(original)
    assert result.returncode == 2
    assert (
        "the experiment file " in result.stderr and "tiny.toml (or its --set overrides) changed since" in result.stderr
    )
    assert "run with --fresh to start over, or restore what changed" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(search.runs()) == before


def test_trial_runs_are_named_for_the_run_list_and_the_parent_describes_the_search(search: Search) -> None:
    parent, children = parent_and_children(search)
    for child in children:
        params, name = child.data.params, child.info.run_name
        blocks = int(params["conv_blocks"])
        filters = "-".join(params[f"filters_{b}"] for b in range(1, blocks + 1))
        expected = f"trial-{int(child.data.tags['xraycnn.trial_id']):04d} f{filters} crop eq-clahe"
        expected += f" d{float(params['dropout']):g} lr"
        assert name.startswith(expected), name
        assert re.fullmatch(r"trial-\d{4} f[\d-]+ crop eq-clahe d[\d.]+ lr\d(\.\d)?e-3( from-\d{4})?", name), name
        assert ("from-" in name) == ("tuner/trial_id" in params)
    description = parent.data.tags["mlflow.note.content"]
    assert "Experiment `tiny`: hyperband search on val_auc" in description
    assert "budget 3 trials" in description and str(search.root) in description


def test_the_search_writes_its_report_and_logs_it(search: Search, tmp_path: Path) -> None:
    parent, children = parent_and_children(search)
    folder = search.tmp / "reports" / "tiny"
    figures = {
        "parallel_coordinates.png",
        "objective_over_trials.png",
        "top_learning_curves.png",
        "roc_curve.png",
        "confusion_matrix.png",
    }
    assert {p.name for p in folder.iterdir()} == {"report.html", *figures}
    logged = {a.path for a in search.client.list_artifacts(parent.info.run_id, "report")}
    assert logged == {f"report/{name}" for name in ("report.html", *figures)}
    html = Path(search.client.download_artifacts(parent.info.run_id, "report/report.html", str(tmp_path))).read_text()
    assert html == (folder / "report.html").read_text()
    assert html.count('src="data:image/png;base64,') == len(figures)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)  # self-contained: nothing fetched
    assert html.count("<tr class=") == len(children)
    for child in children:
        assert child.info.run_name in html
    assert "borders-only AUC</th>" in html and "shortcut audit of the best model on test" in html
    assert f"{MODEL} v1 (champion)" in html


def test_report_command_remakes_it_from_the_store_alone(search: Search, tmp_path: Path) -> None:
    script = (
        "import sys; from xraycnn.cli import main; code = main(sys.argv[1:]); "
        "assert 'tensorflow' not in sys.modules, 'report imported TensorFlow'; sys.exit(code)"
    )
    args = ["report", str(search.tmp / "tiny.toml"), "--reports-dir", str(tmp_path)]
    result = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, env={**os.environ, **search.env}
    )
    assert result.returncode == 0, result.stderr
    assert "Report of search-tiny-" in result.stdout and "(3 trials)" in result.stdout
    assert (tmp_path / "tiny" / "report.html").is_file() and len(list((tmp_path / "tiny").glob("*.png"))) == 5

    unknown = search.run("report", "nope", "--reports-dir", str(tmp_path))
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr
    assert "no MLflow experiment 'xraycnn-nope'" in unknown.stderr and "xraycnn-tiny" in unknown.stderr
    bad_run = search.run("report", "tiny", "--run-id", "0" * 32, "--reports-dir", str(tmp_path))
    assert bad_run.returncode == 2 and f"no run {'0' * 32}" in bad_run.stderr


def test_champion_carries_a_threshold_chosen_on_validation_and_test_figures_with_intervals(search: Search) -> None:
    parent, _ = parent_and_children(search)
    version = search.client.get_model_version_by_alias(MODEL, "champion")
    threshold = float(version.tags["xraycnn.threshold"])
    assert version.tags["xraycnn.threshold_rule"].startswith("youden on validation")
    assert parent.data.metrics["test_threshold"] == pytest.approx(threshold)
    mlflow.set_tracking_uri(search.env["MLFLOW_TRACKING_URI"])
    mlflow.set_registry_uri(search.env["MLFLOW_TRACKING_URI"])
    metadata = mlflow.models.get_model_info(f"models:/{MODEL}@champion").metadata
    assert metadata["threshold"] == pytest.approx(threshold) and metadata["threshold_chosen_on"] == "validation"
    m = parent.data.metrics
    # always defined: these have intervals; PPV and NPV are undefined where a threshold calls no one positive
    # (or negative), as a tiny model may, and have intervals wherever they are defined
    always = ("accuracy", "sensitivity", "specificity", "auc", "brier", "ece")
    for key in [f"test_{n}" for n in always] + [f"test_thr_{n}" for n in always[:3]]:
        if key == "test_ece":  # a resample's ECE is biased upwards (binning noise adds), so its percentile
            assert 0 <= m[f"{key}_ci_low"] <= m[f"{key}_ci_high"] <= 1, key  # interval may lie above the estimate
            continue
        assert m[f"{key}_ci_low"] <= m[key] <= m[f"{key}_ci_high"], key
    for key in [f"test_{n}" for n in ("ppv", "npv", "f1")] + [f"test_thr_{n}" for n in ("ppv", "npv", "f1")]:
        if key in m:
            assert m[f"{key}_ci_low"] <= m[key] <= m[f"{key}_ci_high"], key
    artifacts = {a.path for d in ("plots", "evaluation") for a in search.client.list_artifacts(parent.info.run_id, d)}
    assert {
        "plots/precision_recall.png",
        "plots/reliability.png",
        "plots/gradcam.png",
        "plots/confusion_matrix_threshold.png",
        "evaluation/metrics.csv",
    } <= artifacts
    assert 0 <= m["test_gradcam_outside_share"] <= 1
    # the dataset's MANIFEST.csv names each film's source (the subset holds two, each with both classes): the
    # champion's clinical figures and audit are split by it, for each of them
    manifest = pd.read_csv(search.root / "MANIFEST.csv")
    sources = set(manifest.loc[manifest["file"].str.startswith("test/"), "source"])
    assert len(sources) == 2, sources
    for source in sources:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in source)
        for figure in ("auc", "auc_ci_low", "thr_sensitivity", "thr_specificity", "borders_only_auc"):
            assert f"test_source_{safe}_{figure}" in m, (source, figure, sorted(m))

    # the threshold is Youden's J of the champion on the validation split, which the test recomputes
    from xraycnn.config import load_experiment
    from xraycnn.data.dataset import prepare_data
    from xraycnn.evaluation.threshold import choose_threshold
    from xraycnn.model.predict import predict_probabilities

    config = load_experiment(search.tmp / "tiny.toml").config
    data = prepare_data(discover(search.root), config.data, config.seed)
    model = mlflow.keras.load_model(f"models:/{MODEL}@champion")
    expected = choose_threshold(data.val.labels, predict_probabilities(model, data.val.images))
    assert threshold == pytest.approx(expected.value, abs=1e-6)


def test_predict_uses_the_models_threshold_and_explains(search: Search, tmp_path: Path) -> None:
    version = search.client.get_model_version_by_alias(MODEL, "champion")
    threshold = float(version.tags["xraycnn.threshold"])
    # two films of one name in two folders, as a user's class folders may hold
    files = []
    for folder, src in zip(("NORMAL", "COVID19"), search.accepted_test_films(2)[:2], strict=True):
        (tmp_path / "films" / folder).mkdir(parents=True)
        files.append(tmp_path / "films" / folder / "x.jpg")
        files[-1].write_bytes(src.read_bytes())
    (tmp_path / "work").mkdir()
    refused = search.run("predict", "--explain", "--explain-dir", str(files[0].parent / "maps"), *map(str, files))
    assert refused.returncode == 2 and "heatmaps never go among the films" in refused.stderr
    result = search.run(
        "predict", "--model", f"models:/{MODEL}@champion", "--explain", *map(str, files), cwd=tmp_path / "work"
    )
    assert result.returncode == 0, result.stderr
    assert f"threshold {threshold:.4f}" in result.stdout
    for f in files:
        assert (tmp_path / "work" / "heatmaps" / f.parent.name / "x.gradcam.png").stat().st_size > 5_000
        assert [p.name for p in f.parent.iterdir()] == ["x.jpg"]  # nothing written among the films
    assert "heat outside lungs" in result.stdout


def test_evaluate_any_model_on_a_folder_with_sources(search: Search, tmp_path: Path) -> None:
    external = tmp_path / "external"
    rows = ["file,source"]
    for i, src in enumerate(sorted((search.root / "test").glob("*/*"))):
        target = external / src.parent.name / src.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(src.read_bytes())
        rows.append(f"{src.parent.name}/{src.name},{'site-a' if i % 2 else 'site-b'}")
    (external / "MANIFEST.csv").write_text("\n".join(rows) + "\n")
    result = search.run(
        "evaluate", "--model", f"models:/{MODEL}/1", "--data", str(external), "--resamples", "200", "--seed", "5"
    )
    assert result.returncode == 0, result.stderr
    assert "site-a: 12 images" in result.stdout and "at threshold" in result.stdout
    experiment = search.client.get_experiment_by_name("xraycnn-evaluations")
    (run,) = search.client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`xraycnn.model_version` = '1' and tags.`xraycnn.dataset_root` = '{external}'",
    )
    assert run.info.status == "FINISHED" and run.data.tags["xraycnn.model_name"] == MODEL
    m = run.data.metrics
    assert m["threshold"] == pytest.approx(float(search.client.get_model_version(MODEL, "1").tags["xraycnn.threshold"]))
    assert {"auc", "auc_ci_low", "thr_sensitivity", "source_site-a_auc", "source_site-b_thr_specificity"} <= set(m)
    assert (
        search.client.get_model_version(MODEL, "1").tags[
            f"xraycnn.evaluation.{run.data.tags['xraycnn.dataset_digest'][:12]}"
        ]
        == run.info.run_id
    )
    predictions = pd.read_csv(
        search.client.download_artifacts(run.info.run_id, "evaluation/test_predictions.csv", str(tmp_path))
    )
    assert set(predictions["source"]) == {"site-a", "site-b"} and len(predictions) == 24

    missing = search.run("evaluate", "--model", f"models:/{MODEL}/1", "--data", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr


def test_the_readme_s_predict_and_python_work_as_written(search: Search, tmp_path: Path) -> None:
    """The README's `predict` line and Python block, run as written on the tiny search's champion: only the
    venv path, the store's URI, the model's name and the two films are this test's."""
    for name, film in zip(("scan1.jpg", "scan2.png"), search.accepted_test_films(1), strict=True):
        Image.open(film).save(tmp_path / name)
    store = search.env["MLFLOW_TRACKING_URI"]
    shell = next(b for b in readme_blocks("bash") if "xraycnn predict" in b)
    command = shell.replace(".venv/bin/xraycnn", XRAYCNN).replace("models:/xraycnn@", f"models:/{MODEL}@")
    result = subprocess.run(
        command, shell=True, capture_output=True, text=True, cwd=tmp_path, env={**os.environ, **search.env}
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "scan1.jpg" in result.stdout and "scan2.png" in result.stdout
    (python,) = readme_blocks("python")
    assert "sqlite:////path/to/xraycnn/mlruns/mlflow.db" in python
    code = python.replace("sqlite:////path/to/xraycnn/mlruns/mlflow.db", store)
    code = code.replace("models:/xraycnn@", f"models:/{MODEL}@")
    code += "\nprint('RESULT', answers['call'].tolist(), answers['error'].tolist(), p_covid.shape)\n"
    env = {**os.environ, **search.env, "MLFLOW_REGISTRY_URI": store}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    line = result.stdout.split("RESULT", 1)[1]
    assert "None, None" in line and "(2,)" in line and line.count("COVID19") + line.count("NORMAL") == 2, line
