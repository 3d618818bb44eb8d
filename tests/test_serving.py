"""`xraycnn serve`: the real MLflow model server on 127.0.0.1 over the tiny search's champion, fed real JPEG
and PNG files; its answers against `xraycnn predict`'s, bad requests, concurrency, and a clean stop."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.readme import readme_blocks
from tests.tiny_search import MODEL, XRAYCNN, Search
from xraycnn.errors import XrayCnnError
from xraycnn.runtime.local_http import free_port, wait_until_answering

pytestmark = pytest.mark.slow  # the real CLI end to end (make test-fast leaves it out)
URI = f"models:/{MODEL}@champion"
LIMIT_MB = 1.0


def _post(url: str, body: bytes, timeout: float = 60) -> tuple[int, dict]:
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _request(images: list[bytes], column: str = "image") -> bytes:
    rows = [[base64.b64encode(b).decode()] for b in images]
    return json.dumps({"dataframe_split": {"columns": [column], "data": rows}}).encode()


def _answers(url: str, images: list[bytes]) -> list[dict]:
    status, payload = _post(f"{url}/invocations", _request(images))
    assert status == 200, payload
    return payload["predictions"]


SITE = "ward-9"
SITE_THRESHOLD = 0.999  # a site whose normal films all scored high: the server calls almost nothing COVID-19 there


@pytest.fixture(scope="module")
def server(search: Search) -> Iterator[tuple[str, subprocess.Popen]]:
    """`xraycnn serve` over the champion, which carries one site's threshold (as `xraycnn calibrate` stores it)."""
    from xraycnn.evaluation.site import site_threshold

    scores = np.full(40, SITE_THRESHOLD - 1e-6)  # every normal film of the site scored there
    site = site_threshold(SITE, scores, 0.10)
    assert site.threshold == pytest.approx(SITE_THRESHOLD)
    version = search.client.get_model_version_by_alias(MODEL, "champion")
    search.client.set_model_version_tag(MODEL, version.version, f"xraycnn.site.{SITE}", json.dumps(site.as_dict()))
    port = free_port()
    process = subprocess.Popen(
        [XRAYCNN, "serve", "--model", URI, "--port", str(port), "--max-request-mb", str(LIMIT_MB)],
        env={**os.environ, **search.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_answering(f"{url}/ping", process, 180, "xraycnn serve")
    except XrayCnnError:
        process.kill()
        raise AssertionError(process.stdout.read()) from None
    yield url, process
    if process.poll() is None:
        process.kill()


@pytest.fixture(scope="module")
def films(search: Search, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Real JPEG test films of both classes, and the same films as PNG (grey, RGBA, 16-bit)."""
    jpegs = search.accepted_test_films(3)
    out = tmp_path_factory.mktemp("films")
    pngs = []
    for i, (source, mode) in enumerate(zip(jpegs, ("L", "RGBA", "I;16"), strict=False)):
        with Image.open(source) as image:
            grey = image.convert("L")
        if mode == "RGBA":
            converted = grey.convert("RGBA")
        elif mode == "I;16":
            converted = Image.fromarray((np.asarray(grey, np.uint16) * 257).astype(np.uint16))
        else:
            converted = grey
        path = out / f"{source.stem}-{i}.png"
        converted.save(path)
        pngs.append(path)
    return jpegs + pngs


def test_the_server_answers_as_predict_does(search: Search, server, films: list[Path]) -> None:
    from xraycnn.jobs.predict import run_predict

    url, _ = server
    answers = _answers(url, [f.read_bytes() for f in films])
    expected = run_predict(URI, films, tracking_uri=search.env["MLFLOW_TRACKING_URI"])
    version = search.client.get_model_version_by_alias(MODEL, "champion")
    threshold = float(version.tags["xraycnn.threshold"])
    assert len(answers) == len(films)
    for answer, mine in zip(answers, expected, strict=True):
        assert answer["probability_covid19"] == pytest.approx(mine.probability, abs=1e-6)
        assert answer["call"] == mine.label
        assert answer["threshold"] == pytest.approx(threshold)
        assert answer["model_version"] == str(version.version)
        assert answer.get("error") is None
    # which model answers: GET /model (MLflow's /version is MLflow's version)
    with urllib.request.urlopen(f"{url}/model", timeout=30) as response:
        about = json.loads(response.read())
    assert (about["name"], about["version"]) == (MODEL, str(version.version))
    assert about["threshold"] == pytest.approx(threshold)
    # one image per request gives the same answer as in a batch
    single = _answers(url, [films[0].read_bytes()])[0]
    # 1e-5: oneDNN picks its float32 kernels by batch size; a probability near 0.5 moves by a few 1e-6
    assert single["probability_covid19"] == pytest.approx(answers[0]["probability_covid19"], abs=1e-5)


def _png(size: tuple[int, int], mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("image", "reason"),
    [
        (b"", "empty"),
        (b"this is not an image", "not an image"),
        ("truncated", "truncated"),
        (_png((8, 8)), "too small"),
        (_png((9000, 9000), "1"), "over this server's limit of 36,000,000"),
    ],
)
def test_a_bad_image_is_a_400_naming_it_and_the_server_goes_on(
    server, films: list[Path], image: bytes | str, reason: str
) -> None:
    url, _ = server
    data = films[0].read_bytes()[:300] if image == "truncated" else image
    status, payload = _post(f"{url}/invocations", _request([data]))
    assert status == 400
    assert payload["message"].startswith("image 0: ") and reason in payload["message"], payload
    assert "Failed to predict data" not in payload["message"]  # the request is not echoed back
    assert _answers(url, [films[0].read_bytes()])[0]["error"] is None


def test_what_is_not_a_chest_film_gets_no_call(server, films: list[Path]) -> None:
    """The model's input guard at the door: a blank page alone is a 400 that says why; noise beside a film
    gets no probability and no call, the film its answer."""
    url, _ = server
    with urllib.request.urlopen(f"{url}/model", timeout=30) as response:
        guard = json.loads(response.read())["input_guard"]
    assert guard["limit"] > 0 and guard["file"] == "input_guard.npz"
    status, payload = _post(f"{url}/invocations", _request([_png((256, 256))]))
    assert status == 400 and payload["message"].startswith("image 0: not a chest radiograph"), payload
    noise = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (256, 256), dtype=np.uint8)).save(noise, "PNG")
    film, refused = _answers(url, [films[0].read_bytes(), noise.getvalue()])
    assert film["error"] is None and film["call"] in ("COVID19", "NORMAL")
    assert refused["probability_covid19"] is None and refused["call"] is None
    assert refused["error"].startswith("image 1: not a chest radiograph") and "input guard score" in refused["error"]


def test_one_bad_image_does_not_hide_the_others(server, films: list[Path]) -> None:
    url, _ = server
    good = _answers(url, [films[0].read_bytes(), films[1].read_bytes()])
    mixed = _answers(url, [films[0].read_bytes(), b"not an image", films[1].read_bytes()])
    assert [a["probability_covid19"] for a in (mixed[0], mixed[2])] == pytest.approx(
        [a["probability_covid19"] for a in good],
        abs=1e-5,  # batches of 2 and 3: see the batch of one above
    )
    assert mixed[1]["probability_covid19"] is None and mixed[1]["call"] is None
    assert mixed[1]["error"].startswith("image 1: not an image")


def test_bad_requests_are_4xx_with_a_message(server, films: list[Path]) -> None:
    url, _ = server
    status, payload = _post(f"{url}/invocations", _request([films[0].read_bytes()], column="picture"))
    assert status == 400 and "image" in payload["message"], payload
    status, payload = _post(f"{url}/invocations", b"{not json")
    assert status == 400, payload
    not_base64 = json.dumps({"dataframe_split": {"columns": ["image"], "data": [["abcde"]]}}).encode()
    status, payload = _post(f"{url}/invocations", not_base64)
    assert status == 400 and "base64" in payload["message"], payload
    # MLflow's other request forms: the same records as `instances` or `inputs` are answered as dataframe_records
    record = {"image": base64.b64encode(films[0].read_bytes()).decode()}
    for form in ("instances", "inputs"):
        status, payload = _post(f"{url}/invocations", json.dumps({form: [record]}).encode())
        assert status == 200 and payload["predictions"][0]["error"] is None, (form, payload)
    for empty in ({"dataframe_split": {"columns": ["image"], "data": []}}, {"dataframe_records": []}):
        status, payload = _post(f"{url}/invocations", json.dumps(empty).encode())
        assert status == 400 and "image" in payload["message"], (empty, payload)  # refused both ways
        assert "Failed to" not in payload["message"] and "DataFrame" not in payload["message"], payload
    too_big = _request([b"\0" * int(LIMIT_MB * 2**20)])
    status, payload = _post(f"{url}/invocations", too_big)
    assert status == 413 and "limit is" in payload["message"], payload
    assert _answers(url, [films[0].read_bytes()])[0]["error"] is None


def test_the_readme_s_curl_calls_work_as_written(server, films: list[Path], tmp_path: Path) -> None:
    """The README's serving block, its curl lines run as written against this server (only the port and the
    film are this test's)."""
    url, _ = server
    block = next(b for b in readme_blocks("bash") if "make serve" in b)
    lines = block.replace("\\\n", "").splitlines()
    calls = [line.split("#")[0].replace("http://127.0.0.1:5001", url) for line in lines if line.startswith("curl")]
    assert len(calls) == 2
    (tmp_path / "scan1.jpg").write_bytes(films[0].read_bytes())
    answered = [subprocess.run(c, shell=True, capture_output=True, text=True, cwd=tmp_path, timeout=60) for c in calls]
    assert all(r.returncode == 0 for r in answered), [r.stderr for r in answered]
    (prediction,) = json.loads(answered[0].stdout)["predictions"]
    assert prediction["error"] is None and prediction["call"] in ("COVID19", "NORMAL")
    assert json.loads(answered[1].stdout)["name"] == MODEL


def test_curl_gets_a_413_at_once(server, films: list[Path], tmp_path: Path) -> None:
    """curl asks for "100 Continue" before sending a large body: the 413 comes at once, not at its timeout."""
    url, _ = server
    body = tmp_path / "big.json"
    body.write_bytes(_request([b"\0" * int(LIMIT_MB * 2**20 * 3)]))
    result = subprocess.run(
        [
            "curl",
            "-sS",
            "--max-time",
            "20",
            "-o",
            "-",
            "-w",
            "\n%{http_code} %{time_total}",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            f"@{body}",
            f"{url}/invocations",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    payload, status_and_time = result.stdout.rsplit("\n", 1)
    status, seconds = status_and_time.split()
    assert status == "413" and "limit is" in json.loads(payload)["message"]
    assert float(seconds) < 1.0, seconds
    assert _answers(url, [films[0].read_bytes()])[0]["error"] is None


def test_a_request_names_its_site_and_is_called_at_that_site_s_threshold(server, films: list[Path]) -> None:
    url, _ = server
    body = json.loads(_request([f.read_bytes() for f in films]))
    status, payload = _post(f"{url}/invocations", json.dumps({**body, "params": {"site": SITE}}).encode())
    assert status == 200, payload
    own = _answers(url, [f.read_bytes() for f in films])
    for at_site, at_own in zip(payload["predictions"], own, strict=True):
        assert at_site["probability_covid19"] == pytest.approx(at_own["probability_covid19"], abs=1e-6)
        assert at_site["threshold"] == pytest.approx(SITE_THRESHOLD)
        assert at_site["call"] == ("COVID19" if at_site["probability_covid19"] >= SITE_THRESHOLD else "NORMAL")
    status, payload = _post(f"{url}/invocations", json.dumps({**body, "params": {"site": "nowhere"}}).encode())
    assert status == 400 and "unknown site 'nowhere'" in payload["message"] and SITE in payload["message"], payload


def test_fifty_concurrent_requests_are_all_answered(server, films: list[Path]) -> None:
    url, _ = server
    expected = {f: _answers(url, [f.read_bytes()])[0]["probability_covid19"] for f in films}
    chosen = [films[i % len(films)] for i in range(50)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(lambda f: _answers(url, [f.read_bytes()])[0], chosen))
    assert len(answers) == 50
    for f, answer in zip(chosen, answers, strict=True):
        assert answer["probability_covid19"] == pytest.approx(expected[f], abs=1e-6)


def test_the_server_stops_cleanly(server) -> None:
    """Last in this file: Ctrl-C stops it, it exits 0 and the port is closed."""
    url, process = server
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=30) == 0, process.stdout.read()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{url}/ping", timeout=2)
