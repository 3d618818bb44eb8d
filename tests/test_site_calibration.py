"""`xraycnn calibrate` through the real CLI, on the tiny search's champion, with one of cxr-covid's sources as the
site (muhammedtalo/COVID-19): its threshold set from 80 of the source's training normals that the tiny search did
not train on, then the false-positive rate on the source's 99 test normals (never seen by the threshold) against
what the threshold promised for that many films; `--site` in `evaluate` and `predict`; the report; and every
refusal. Without the dataset, generated films stand in for the site."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import SHARED_DATA, synthetic_xray
from tests.tiny_search import MODEL, Search
from xraycnn.evaluation.site import SiteThreshold

pytestmark = pytest.mark.slow  # the real CLI end to end (make test-fast leaves it out)
URI = f"models:/{MODEL}@champion"
SITE_PREFIX = "talo__"  # muhammedtalo/COVID-19's files in cxr-covid
CALIBRATION_FILMS = 80


def _films(split: str, label: str, count: int | None, into: Path) -> list[Path]:
    """The held-out source's films (generated ones when the dataset is absent), copied into `into`."""
    into.mkdir(parents=True, exist_ok=True)
    if SHARED_DATA.is_dir():
        found = sorted(p for p in (SHARED_DATA / split / label).iterdir() if p.name.startswith(SITE_PREFIX))
        for path in found[:count]:
            shutil.copyfile(path, into / path.name)
    else:
        offset = 5000 if split == "test" else 3000
        for i in range(count or 60):
            synthetic_xray(label, offset + i).save(into / f"site_{label.lower()}_{i:03d}.jpg")
    return sorted(into.iterdir())


@pytest.fixture(scope="module")
def site(search: Search, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The site calibrated once, through the CLI: what it printed and stored."""
    root = tmp_path_factory.mktemp("site")
    normals = _films("train", "NORMAL", CALIBRATION_FILMS, root / "normals")
    result = search.run(
        "calibrate", "--model", URI, "--normals", str(root / "normals"), "--max-false-positive-rate", "0.10",
        "--site", "talo",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    version = search.client.get_model_version_by_alias(MODEL, "champion")
    stored = json.loads(version.tags["xraycnn.site.talo"])
    return {"root": root, "normals": normals, "stdout": result.stdout, "stored": stored, "version": version}


def test_calibrate_stores_the_site_threshold_and_its_promise_on_the_version(search: Search, site: dict) -> None:
    stored = SiteThreshold.from_dict(site["stored"])
    assert stored.normals == len(site["normals"]) and stored.max_false_positive_rate == 0.10
    assert stored.rate_high <= 0.10 and stored.above <= stored.normals * 0.10
    assert "Site talo" in site["stdout"] and "false-positive rate at most 0.1 with 95% confidence" in site["stdout"]
    # one calibration run, with the films' scores and their histogram, linked to the version
    run = search.client.get_run(site["stored"]["run_id"])
    assert run.data.tags["xraycnn.kind"] == "site-calibration" and run.data.tags["xraycnn.model_version"]
    assert run.data.metrics["threshold"] == pytest.approx(stored.threshold)
    paths = {a.path for d in ("plots", "calibration") for a in search.client.list_artifacts(run.info.run_id, d)}
    assert {"plots/site_scores.png", "calibration/normal_scores.csv"} <= paths


def test_the_held_out_source_keeps_the_promise_at_its_site_threshold(search: Search, site: dict) -> None:
    """Calibrated on the source's training normals, measured on its test normals (never seen by the threshold):
    their false-positive rate lies in the range the promise gives for that many new films."""
    check = site["root"] / "check"
    normals = _films("test", "NORMAL", None, check / "NORMAL")
    _films("test", "COVID19", None, check / "COVID19")
    result = search.run("evaluate", "--model", URI, "--data", str(check), "--site", "talo", "--resamples", "200")
    assert result.returncode == 0, result.stderr
    stored = SiteThreshold.from_dict(site["stored"])
    experiment = search.client.get_experiment_by_name("xraycnn-evaluations")
    (run,) = search.client.search_runs([experiment.experiment_id], filter_string="tags.`xraycnn.site` = 'talo'")
    m = run.data.metrics
    assert m["threshold"] == pytest.approx(stored.threshold)
    rate = m["thr_fp"] / len(normals)
    low, high = stored.predicted_range(len(normals))
    assert low <= rate <= high, (rate, low, high)
    assert "within it" in result.stdout
    # the calls under acquisition changes are part of every evaluation
    assert "shift_worst_specificity" in m and "Calls under acquisition changes" in result.stdout


def test_predict_calls_at_the_site_threshold(search: Search, site: dict) -> None:
    result = search.run("predict", "--model", URI, "--site", "talo", *map(str, site["normals"][:2]))
    assert result.returncode == 0, result.stderr
    assert f"threshold {site['stored']['threshold']:.4f}" in result.stdout and "site talo" in result.stdout
    unknown = search.run("predict", "--model", URI, "--site", "nowhere", str(site["normals"][0]))
    assert unknown.returncode == 2 and "sites calibrated: talo" in unknown.stderr


def test_calibrate_refuses_too_few_unreadable_films_and_unsafe_names(search: Search, site: dict) -> None:
    few = site["root"] / "few"
    few.mkdir()
    for path in site["normals"][:12]:
        shutil.copyfile(path, few / path.name)
    args = ("calibrate", "--model", URI, "--max-false-positive-rate", "0.10")
    result = search.run(*args, "--normals", str(few), "--site", "few")
    assert result.returncode == 2 and "12 normal film(s)" in result.stderr and "at least 29 are needed" in result.stderr
    broken = site["root"] / "broken"
    shutil.copytree(site["root"] / "normals", broken)
    (broken / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a film")
    (broken / "notes.txt").write_text("not a film either")
    result = search.run(*args, "--normals", str(broken), "--site", "few")
    assert result.returncode == 2 and "broken.jpg" in result.stderr and "notes.txt" in result.stderr
    result = search.run(*args, "--normals", str(few), "--site", "../../etc")
    assert result.returncode == 2 and "is not allowed" in result.stderr and "Traceback" not in result.stderr
    # nothing of it reached the version
    tags = search.client.get_model_version_by_alias(MODEL, "champion").tags
    assert not any(k.startswith("xraycnn.site.few") or "etc" in k for k in tags)


def test_the_report_shows_the_site(search: Search, site: dict, tmp_path: Path) -> None:
    result = search.run("report", "tiny", "--reports-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    page = (tmp_path / "tiny" / "report.html").read_text()
    assert 'id="sites"' in page and "talo" in page and 'id="sources"' in page
    scores = pd.read_csv(
        search.client.download_artifacts(site["stored"]["run_id"], "calibration/normal_scores.csv", str(tmp_path))
    )
    assert len(scores) == len(site["normals"]) and np.all(scores["probability_covid19"].between(0, 1))
