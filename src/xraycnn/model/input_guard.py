"""The input guard: is this image a frontal chest film like those the network learnt from? A classifier gives
a probability for anything (a blank page, noise, a photograph, a skull); the guard refuses what does not
look like its training films before any call is made.

It is a model, not a rule: a Gaussian per conv block of the network itself (the block's output averaged over
each quarter of the film, per channel: what the block sees, and roughly where), fitted on the training films as
given and as other hospitals would acquire them (evaluation.acquisition's changes, each on a share of them),
with a Ledoit-Wolf shrunk covariance. An image's score is the mean over blocks of the log of its squared
Mahalanobis distance over the validation films' median one: how many times further than a typical film, on
a log scale, every block agreeing. The limit is the score that `reject_share` of the validation films exceed,
as given and under each acquisition change (a film from another hospital is still a film). The dense layer
is left out: its distances have the heaviest tails among real films, and it raised the limit more than it
caught non-films.

It travels with the registered model as data (`input_guard.npz` beside the network, no code) and the serving
model, `xraycnn predict` and `xraycnn evaluate` apply it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from xraycnn.errors import XrayCnnError
from xraycnn.model.predict import forward_outputs, predict_probabilities

GUARD_FILE = "input_guard.npz"
GRID = 2  # each block's output averaged over a GRID x GRID grid of the film


class GuardFileError(XrayCnnError):
    """An input guard file that is not one (a corrupt or foreign npz): one line from the CLI, no traceback."""


def _feature_layers(network: keras.Model) -> list[str]:
    """The layers the guard reads: the last of each conv block (its pooling)."""
    layers = [layer.name for layer in network.layers if isinstance(layer, keras.layers.MaxPooling2D)]
    if not layers:
        raise ValueError(f"{network.name}: no pooling layer (conv block) for the input guard to read")
    return layers


def _summary(tensor: Any) -> Any:
    pooled = keras.layers.Resizing(GRID, GRID, interpolation="area")(keras.ops.cast(tensor, "float32"))
    return keras.ops.reshape(pooled, (-1, GRID * GRID * int(tensor.shape[-1])))


def guarded_network(network: keras.Model, layers: list[str] | None = None) -> tuple[keras.Model, list[int]]:
    """`network` with one output: its probability (column 0), then the guard's features of each layer in
    `layers` (default `_feature_layers`), and the width of each layer's features. A Sequential network is
    called layer by layer on a new input: a registered model shares layers with the network a trial trained,
    and their recorded outputs may belong to that one's graph."""
    layers = layers or _feature_layers(network)
    if isinstance(network, keras.Sequential):
        inputs = keras.Input(network.input_shape[1:], name="film")
        x, taps = inputs, {}
        for layer in network.layers:
            x = layer(x)
            taps[layer.name] = x
        outputs, tapped = x, [taps[name] for name in layers]
    else:
        inputs, outputs = network.inputs, network.outputs[0]
        tapped = [network.get_layer(name).output for name in layers]
    parts = [_summary(t) for t in tapped]
    probability = keras.ops.reshape(keras.ops.cast(outputs, "float32"), (-1, 1))
    model = keras.Model(inputs, keras.ops.concatenate([probability, *parts], axis=-1), name="guarded")
    return model, [int(p.shape[-1]) for p in parts]


def probabilities_and_features(
    model: keras.Model, widths: list[int], films: np.ndarray
) -> tuple[np.ndarray, list[np.ndarray]]:
    """What `guarded_network` gives for `films`: P(COVID19) per film and each layer's features."""
    out = forward_outputs(model, films)
    bounds = np.cumsum([1, *widths])
    return out[:, 0], [out[:, a:b] for a, b in itertools.pairwise(bounds)]


@dataclass(frozen=True)
class LayerGaussian:
    """One block's Gaussian (its features' mean and shrunk precision, from the training films) and the
    validation films' median log squared distance to it."""

    name: str
    mean: np.ndarray
    precision: np.ndarray
    center: float

    def log_distance(self, features: np.ndarray) -> np.ndarray:
        centred = features.astype(np.float64) - self.mean
        # one matrix product (BLAS) and a row sum: a three-operand einsum loops in plain C, many times slower
        squared = np.sum((centred @ self.precision) * centred, axis=1)
        return np.log(np.maximum(squared, 1e-12))

    def score(self, features: np.ndarray) -> np.ndarray:
        return self.log_distance(features) - self.center


@dataclass(frozen=True)
class InputGuard:
    """The fitted guard: a score per image (`scores`), refused above `limit`."""

    layers: tuple[LayerGaussian, ...]
    limit: float
    reject_share: float

    @property
    def layer_names(self) -> list[str]:
        return [g.name for g in self.layers]

    def layer_scores(self, features: list[np.ndarray]) -> np.ndarray:
        """(images, layers): each block's score of each image."""
        return np.stack([g.score(f) for g, f in zip(self.layers, features, strict=True)], axis=1)

    def scores(self, features: list[np.ndarray]) -> np.ndarray:
        return self.layer_scores(features).mean(axis=1)

    def refused(self, scores: np.ndarray) -> np.ndarray:
        return scores > self.limit

    def reason(self, score: float) -> str:
        return f"not a chest radiograph like the model's films (input guard score {score:.2f} > {self.limit:.2f})"

    def describe(self) -> dict[str, Any]:
        """As the model's metadata: what it reads and where it refuses."""
        return {
            "method": "a Gaussian per conv block (Ledoit-Wolf) on the network's features, fitted on the training "
            "films as given and under acquisition changes; score: mean log squared Mahalanobis distance over "
            "the validation median",
            "layers": [f"{g.name} ({g.mean.size} features)" for g in self.layers],
            "limit": round(self.limit, 4),
            "validation_reject_share": self.reject_share,
            "file": GUARD_FILE,
        }

    def save(self, path: str | Path) -> None:
        arrays: dict[str, np.ndarray] = {
            "limit": np.float64(self.limit),
            "reject_share": np.float64(self.reject_share),
            "names": np.array([g.name for g in self.layers]),
            "centers": np.array([g.center for g in self.layers]),
        }
        for i, g in enumerate(self.layers):
            arrays[f"mean_{i}"], arrays[f"precision_{i}"] = g.mean, g.precision
        np.savez(path, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> InputGuard:
        try:
            with np.load(path, allow_pickle=False) as saved:  # data only: a pickle could run code
                layers = tuple(
                    LayerGaussian(str(name), saved[f"mean_{i}"], saved[f"precision_{i}"], float(center))
                    for i, (name, center) in enumerate(zip(saved["names"], saved["centers"], strict=True))
                )
                return cls(layers, float(saved["limit"]), float(saved["reject_share"]))
        except (OSError, KeyError, ValueError) as exc:
            raise GuardFileError(
                f"{path}: not an input guard file ({exc}); register the model again (a search or `xraycnn train`)"
            ) from exc


def _gaussian(name: str, train: np.ndarray, val: np.ndarray) -> LayerGaussian:
    from sklearn.covariance import LedoitWolf

    fitted = LedoitWolf().fit(train.astype(np.float64))
    unscaled = LayerGaussian(name, fitted.location_, fitted.precision_, 0.0)
    return LayerGaussian(name, fitted.location_, fitted.precision_, float(np.median(unscaled.log_distance(val))))


def fit_input_guard(
    network: keras.Model,
    train_films: np.ndarray,
    val_films: np.ndarray,
    reject_share: float,
    changed_val: dict[str, np.ndarray] | None = None,
) -> InputGuard:
    """The guard of `network` (a registered model: films in), fitted on `train_films` (with, for a guard that
    holds at other hospitals, films changed as they would acquire them), centred on `val_films`, its limit the
    score `reject_share` of the validation films exceed, as given and under each change in `changed_val`."""
    names = _feature_layers(network)
    model, widths = guarded_network(network, names)
    _, train = probabilities_and_features(model, widths, train_films)
    _, val = probabilities_and_features(model, widths, val_films)
    unlimited = InputGuard(tuple(_gaussian(n, t, v) for n, t, v in zip(names, train, val, strict=True)), np.inf, 0)
    scored = [unlimited.scores(val)]
    scored += [unlimited.scores(probabilities_and_features(model, widths, f)[1]) for f in (changed_val or {}).values()]
    limit = max(float(np.quantile(s, 1 - reject_share)) for s in scored)
    return InputGuard(unlimited.layers, limit, reject_share)


class GuardedNetwork:
    """A network and its guard, scored in one forward pass: what the serving model, `predict` and `evaluate`
    call. Without a guard (versions registered before it), the network alone and no score."""

    def __init__(self, network: keras.Model, guard: InputGuard | None) -> None:
        self.network, self.guard = network, guard
        self._model, self._widths = guarded_network(network, guard.layer_names) if guard else (network, [])

    def __call__(self, films: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """P(COVID19) per film, and with a guard each film's score (`InputGuard.refused` says which to refuse)."""
        if self.guard is None:
            return predict_probabilities(self.network, films), None
        probabilities, features = probabilities_and_features(self._model, self._widths, films)
        return probabilities, self.guard.scores(features)


def load_guard_beside(keras_file: str | Path) -> InputGuard | None:
    """The guard saved beside a registered model's network file, or None for a version registered without one."""
    path = Path(keras_file).parent / GUARD_FILE
    return InputGuard.load(path) if path.exists() else None
