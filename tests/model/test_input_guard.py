"""The input guard on a small network and films drawn here: it keeps its validation share, refuses what is
far from the films, survives a save and load as data only, and refuses a file that is not its own."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from xraycnn.evaluation.guard_rates import guard_rates
from xraycnn.evaluation.not_films import KINDS, not_films
from xraycnn.model.input_guard import GuardedNetwork, GuardFileError, InputGuard, fit_input_guard

SIZE = 32


def _films(count: int, rng: np.random.Generator) -> np.ndarray:
    """Chest-like films: a bright field with two dark lung fields, varying in place, size and exposure."""
    y, x = np.mgrid[0:SIZE, 0:SIZE] / (SIZE - 1)
    out = np.empty((count, SIZE, SIZE, 1), np.uint8)
    for i in range(count):
        film = np.full((SIZE, SIZE), 0.75 + rng.normal(0, 0.04))
        for side in (0.3, 0.7):
            cx, cy = side + rng.normal(0, 0.02), 0.5 + rng.normal(0, 0.03)
            a, b = 0.14 + rng.normal(0, 0.01), 0.3 + rng.normal(0, 0.02)
            film[((x - cx) / a) ** 2 + ((y - cy) / b) ** 2 <= 1] -= 0.45
        film += rng.normal(0, 0.03, film.shape)
        out[i, ..., 0] = np.clip(film * 255, 0, 255)
    return out


@pytest.fixture(scope="module")
def network() -> keras.Model:
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 1), name="film"),
            keras.layers.Rescaling(1 / 255, name="rescale"),
            keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1"),
            keras.layers.MaxPooling2D(2, name="pool1"),
            keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv2"),
            keras.layers.MaxPooling2D(2, name="pool2"),
            keras.layers.GlobalAveragePooling2D(name="global_pool"),
            keras.layers.Dense(8, activation="relu", name="dense"),
            keras.layers.Dense(1, activation="sigmoid", name="covid19_probability"),
        ]
    )


@pytest.fixture(scope="module")
def fitted(network: keras.Model) -> tuple[InputGuard, np.ndarray]:
    rng = np.random.default_rng(0)
    train, val, test = _films(600, rng), _films(400, rng), _films(400, rng)
    return fit_input_guard(network, train, val, 0.01), test


def test_reads_each_conv_block(fitted: tuple[InputGuard, np.ndarray]) -> None:
    guard, _ = fitted
    assert guard.layer_names == ["pool1", "pool2"]
    assert [g.mean.size for g in guard.layers] == [4 * 8, 4 * 8]  # a 2x2 grid of each block's 8 channels


def test_films_pass_and_what_is_not_a_film_is_refused(
    network: keras.Model, fitted: tuple[InputGuard, np.ndarray]
) -> None:
    guard, test = fitted
    rates = guard_rates(GuardedNetwork(network, guard), test)
    assert rates.films <= 0.03  # fitted to refuse 1 % of validation; new films of the same kind alike
    assert set(rates.not_films) == set(KINDS)
    for kind in ("blank", "noise", "pattern", "photo", "document"):
        assert rates.not_films[kind] == 1.0, (kind, rates.not_films)
    assert rates.metrics("test_")["test_guard_refused"] == rates.films


def test_a_film_changed_too_far_is_refused_and_a_mildly_changed_one_is_not(
    network: keras.Model, fitted: tuple[InputGuard, np.ndarray]
) -> None:
    guard, test = fitted
    screen = GuardedNetwork(network, guard)
    _, darker = screen(np.clip(test.astype(float) * 0.97, 0, 255).astype(np.uint8))
    _, inverted = screen(255 - test)
    assert guard.refused(darker).mean() <= 0.05
    assert guard.refused(inverted).mean() == 1.0


def test_the_probability_is_the_network_s_own(network: keras.Model, fitted: tuple[InputGuard, np.ndarray]) -> None:
    guard, test = fitted
    probabilities, scores = GuardedNetwork(network, guard)(test[:20])
    assert scores is not None and scores.shape == (20,)
    np.testing.assert_allclose(probabilities, np.asarray(network(test[:20].astype(np.float32))).ravel(), atol=1e-6)
    alone, none = GuardedNetwork(network, None)(test[:20])
    assert none is None
    np.testing.assert_allclose(alone, probabilities, atol=1e-6)


def test_saved_and_loaded_it_scores_the_same(
    network: keras.Model, fitted: tuple[InputGuard, np.ndarray], tmp_path: Path
) -> None:
    guard, test = fitted
    guard.save(tmp_path / "guard.npz")
    loaded = InputGuard.load(tmp_path / "guard.npz")
    assert loaded.limit == guard.limit and loaded.layer_names == guard.layer_names
    samples = np.concatenate([test[:10], not_films(SIZE, 1)["photo"][:5]])
    before, after = GuardedNetwork(network, guard)(samples)[1], GuardedNetwork(network, loaded)(samples)[1]
    np.testing.assert_array_equal(after, before)
    assert "input guard score" in loaded.reason(12.345) and f"{guard.limit:.2f}" in loaded.reason(12.345)


def test_a_file_that_is_not_a_guard_is_refused(tmp_path: Path) -> None:
    (tmp_path / "junk.npz").write_bytes(b"not a zip at all")
    with pytest.raises(GuardFileError, match="not an input guard file"):
        InputGuard.load(tmp_path / "junk.npz")
    np.savez(tmp_path / "foreign.npz", limit=np.float64(1.0))
    with pytest.raises(GuardFileError):
        InputGuard.load(tmp_path / "foreign.npz")
    # a pickled object array could run code when loaded: never read
    np.savez(tmp_path / "pickled.npz", names=np.array([{"x": 1}], dtype=object), limit=np.float64(1.0))
    with pytest.raises(GuardFileError):
        InputGuard.load(tmp_path / "pickled.npz")
