"""Acquisition shift: how a model's calls move when the same films come from another hospital's scanner and
processing.

Every NORMAL film of cxr-covid comes from one hospital, so a network can learn "looks like that hospital's
normal film" and call any other hospital's normal film COVID-19. Its AUC on cxr-covid cannot show this; its
calls on the same films, changed as another hospital would acquire and process them, can.

A change happens where acquisition happens: to the stored film, at ACQUISITION_SIZE pixels a side (the size
cxr-covid stores every radiograph at; an external film is decoded to it first), before the model's own
decoding brings it to its input size and its own preprocessing runs. Each is rounded back to 8 bits as a stored
film would be, and is deterministic (seeded):

- exposure and processing curves: gamma 0.6 and 1.6, contrast 0.6, brightness +30;
- detector and processing: Gaussian noise (sd 8 grey levels), blur (sigma 2 px), JPEG quality 30, half the
  resolution (area-averaged down, bilinear up), unsharp-mask edge enhancement (amount 1.0, sigma 4 px);
- framing inside the lung box: the patient closer or further and shifted (zoom 0.92-1.08, shift up to 5 %).

(Made to the film at the model's 64-px input instead, the same noise and blur are 4x stronger relative to the
anatomy than any hospital's film shows after downsizing: `benchmarks/transfer_probe.py --at-input` measured
that stress, docs/lab.)

The figures, each with a 95 % stratified bootstrap interval, at the model's threshold (held fixed): per change
the specificity of the NORMAL films (`shift_<change>_specificity`), the sensitivity of the COVID-19 films and
the AUC; over the changes the worst specificity (`shift_worst_specificity`, the guard a search can select on
and the registry promotes on), the worst and the mean AUC; and, whatever the threshold, the AUC of the COVID-19
films as given against the NORMAL films changed, under the worst change (`shift_auc`: the objective
`val_shift_auc`, how well a new hospital's normal films are told apart from the COVID-19 films the model knows).
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from xraycnn.evaluation import decision_metrics, ranking_metrics
from xraycnn.evaluation.bootstrap import RESAMPLES, Interval, bootstrap_intervals, with_intervals

Change = Callable[[np.ndarray, np.random.Generator], np.ndarray]  # float32 films 0-255 -> the same, changed

ACQUISITION_SIZE = 256
AS_GIVEN = "as_given"  # the films through the same route with no change: the baseline of every change
WORST_SPECIFICITY = "shift_worst_specificity"
# the AUC of the COVID-19 films as given against the NORMAL films changed, under the worst change: how well a new
# hospital's normal films are told apart from the COVID-19 films the model knows (the objective `val_shift_auc`)
SHIFT_AUC = "shift_auc"
WORST_AUC = "shift_worst_auc"
MEAN_AUC = "shift_mean_auc"
MIN_PER_CLASS = 2


def _per_film(films: np.ndarray, one: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    return np.stack([one(film) for film in films]) if len(films) else films


def _spatial_sigma(films: np.ndarray, sigma: float) -> tuple[float, ...]:
    return (0.0, sigma, sigma, 0.0)[: films.ndim]


def _gamma(value: float) -> Change:
    # the films hold whole grey levels (8-bit films): a table of 256 powers instead of one per pixel
    table = (255.0 * np.power(np.arange(256) / 255.0, value)).astype(np.float32)
    return lambda films, rng: table[np.clip(films, 0, 255).astype(np.uint8)]


def _contrast(factor: float) -> Change:
    def change(films: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        mean = films.mean(axis=(1, 2, 3), keepdims=True)
        return mean + (films - mean) * factor

    return change


def _brightness(offset: float) -> Change:
    return lambda films, rng: films + offset


def _noise(sd: float) -> Change:
    return lambda films, rng: films + sd * rng.standard_normal(films.shape, dtype=np.float32)


def _blur(sigma: float) -> Change:
    return lambda films, rng: ndimage.gaussian_filter(films, _spatial_sigma(films, sigma), mode="reflect")


def _unsharp(amount: float, sigma: float) -> Change:
    def change(films: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        smooth = ndimage.gaussian_filter(films, _spatial_sigma(films, sigma), mode="reflect")
        return films + amount * (films - smooth)

    return change


def _pil(film: np.ndarray) -> Image.Image:
    pixels = np.clip(np.rint(film), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)


def _from_pil(image: Image.Image, channels: int) -> np.ndarray:
    pixels = np.asarray(image, dtype=np.float32)
    return pixels[..., None] if channels == 1 else pixels


def _jpeg(quality: int) -> Change:
    def one(film: np.ndarray) -> np.ndarray:
        buffer = io.BytesIO()
        _pil(film).save(buffer, "JPEG", quality=quality)
        return _from_pil(Image.open(buffer), film.shape[-1])

    return lambda films, rng: _per_film(films, one)


def _resolution(factor: float) -> Change:
    def one(film: np.ndarray) -> np.ndarray:
        height, width = film.shape[:2]
        small = (max(1, round(width * factor)), max(1, round(height * factor)))
        image = _pil(film).resize(small, Image.Resampling.BOX).resize((width, height), Image.Resampling.BILINEAR)
        return _from_pil(image, film.shape[-1])

    return lambda films, rng: _per_film(films, one)


def _reframe(zoom: float, shift: float) -> Change:
    """Each film zoomed by a factor in [1-zoom, 1+zoom] about its centre and shifted by up to `shift` of its
    side, reflecting at the edges: the patient closer to or further from the detector, and placed elsewhere."""

    def change(films: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n, height, width = films.shape[:3]
        scales = rng.uniform(1 - zoom, 1 + zoom, n)
        shifts = rng.uniform(-shift, shift, (n, 2)) * (height, width)
        centre = np.array([(height - 1) / 2, (width - 1) / 2])
        out = np.empty_like(films)
        for i in range(n):
            # output pixel o reads input pixel centre + (o - centre - shift) / scale
            offset = centre - (centre + shifts[i]) / scales[i]
            for c in range(films.shape[-1]):
                out[i, ..., c] = ndimage.affine_transform(
                    films[i, ..., c], np.full(2, 1 / scales[i]), offset=offset, order=1, mode="reflect"
                )
        return out

    return change


# name -> change; the names are metric-key safe. Fixed magnitudes: what the guard is measured against must not
# move with the model it judges.
CHANGES: dict[str, Change] = {
    "gamma_0.6": _gamma(0.6),
    "gamma_1.6": _gamma(1.6),
    "contrast_0.6": _contrast(0.6),
    "brighter_30": _brightness(30.0),
    "noise_8": _noise(8.0),
    "blur_2": _blur(2.0),
    "jpeg_30": _jpeg(30),
    "half_resolution": _resolution(0.5),
    "unsharp_1.0": _unsharp(1.0, 4.0),
    "reframed": _reframe(0.08, 0.05),
}


CHUNK = 128  # films changed at once: the float copies of a chunk of 256-px films stay small


def change_films(films: np.ndarray, name: str, seed: int = 0, size: int | None = None) -> np.ndarray:
    """uint8 films (n, side, side, channels) as acquired by change `name` (AS_GIVEN: unchanged), then, given
    `size`, brought to `size` pixels a side as the model's decoding does (data.images.resize_film). Chunk by
    chunk, each with its own seeded random stream."""
    from xraycnn.data.images import default_workers, resize_film

    if name != AS_GIVEN and name not in CHANGES:
        raise ValueError(f"unknown acquisition change {name!r}; known: {', '.join(CHANGES)}")
    films = np.asarray(films, dtype=np.uint8)
    side = films.shape[1] if size is None else size
    out = np.empty((len(films), side, side, films.shape[3]), dtype=np.uint8)

    def one_chunk(start: int) -> None:
        chunk = films[start : start + CHUNK]
        if name != AS_GIVEN:
            rng = np.random.default_rng([seed, list(CHANGES).index(name), start])
            chunk = np.clip(np.rint(CHANGES[name](chunk.astype(np.float32), rng)), 0, 255).astype(np.uint8)
        if side != chunk.shape[1]:
            chunk = _per_film(chunk, lambda film: resize_film(film, side))
        out[start : start + len(chunk)] = chunk

    # NumPy, SciPy's filters and PIL release the GIL on whole arrays: the chunks run side by side on the cores,
    # and each chunk's random stream is its own, so the films do not depend on the order they finish in
    with ThreadPoolExecutor(default_workers()) as pool:
        list(pool.map(one_chunk, range(0, len(films), CHUNK)))
    return out


def acquired_sets(
    source: np.ndarray, size: int, seed: int = 0, names: tuple[str, ...] = (AS_GIVEN, *CHANGES)
) -> dict[str, np.ndarray]:
    """`source` films (at ACQUISITION_SIZE) under each change in `names`, each brought to `size`."""
    return {name: change_films(source, name, seed, size) for name in names}


def acquired_files(paths: Sequence[str | Path], size: int, channels: int, seed: int = 0) -> dict[str, np.ndarray]:
    """The films of `paths` (as stored, `source_films`) under each change and AS_GIVEN, brought to `size`
    (`acquired_sets`): made once per process for the same films and seed (a search's trials and its final
    assessment change the same validation films), so the arrays are shared and read-only."""
    return _acquired_files(tuple(str(p) for p in paths), size, channels, seed)


@functools.lru_cache(maxsize=2)
def _acquired_files(paths: tuple[str, ...], size: int, channels: int, seed: int) -> dict[str, np.ndarray]:
    sets = acquired_sets(source_films([Path(p) for p in paths], size, channels), size, seed)
    for films in sets.values():
        films.flags.writeable = False
    return sets


def acquired_mix(source: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """`source` films (at ACQUISITION_SIZE) split at random into one share per change, each share under its
    change, brought to `size`: the films as a mix of hospitals would acquire them (the input guard is fitted on
    them beside the films as given)."""
    order = np.random.default_rng(seed).permutation(len(source))
    shares = np.array_split(order, len(CHANGES))
    changed = [change_films(source[share], name, seed, size) for share, name in zip(shares, CHANGES, strict=True)]
    return np.concatenate(changed)


def source_size(size: int) -> int:
    """The side the changes are made at for a model taking `size`-pixel films."""
    return max(ACQUISITION_SIZE, size)


def source_films(paths: list[Path], size: int, channels: int) -> np.ndarray:
    """The films of `paths` as stored, at `source_size(size)`: what the changes are made to. Files that cannot
    be read are an error here (they were read once already, as the films the model was scored on)."""
    from xraycnn.data.images import decode_files

    films, _, skipped = decode_files(paths, source_size(size), channels)
    if skipped:
        raise ValueError(f"{skipped[0].path}: {skipped[0].reason}")
    return films


def _figures(
    labels: np.ndarray, columns: np.ndarray, threshold: float, names: tuple[str, ...]
) -> dict[str, np.ndarray]:
    """Per row of (rows, n) labels and (rows, n, 1 + changes) probabilities (column 0: the films unchanged)."""
    out: dict[str, np.ndarray] = {}
    specificities, aucs = [], []
    for k, name in enumerate(names, start=1):
        p = columns[..., k]
        calls = decision_metrics(labels, p, threshold)
        auc = ranking_metrics(labels, p)["auc"]
        out[f"shift_{name}_specificity"] = calls["specificity"]
        out[f"shift_{name}_sensitivity"] = calls["sensitivity"]
        out[f"shift_{name}_auc"] = auc
        specificities.append(calls["specificity"])
        aucs.append(auc)
    positives = labels.astype(bool)
    against_normals = [
        ranking_metrics(labels, np.where(positives, columns[..., 0], columns[..., k]))["auc"]
        for k in range(1, len(names) + 1)
    ]
    with np.errstate(invalid="ignore"):
        out[WORST_SPECIFICITY] = np.min(specificities, axis=0)
        out[WORST_AUC] = np.min(aucs, axis=0)
        out[MEAN_AUC] = np.mean(aucs, axis=0)
        out[SHIFT_AUC] = np.min(against_normals, axis=0)
    out["shift_clean_specificity"] = decision_metrics(labels, columns[..., 0], threshold)["specificity"]
    return out


@dataclass(frozen=True)
class ShiftScores:
    """One set of films scored under every acquisition change, at one threshold."""

    n: int
    positives: int
    threshold: float
    values: dict[str, float]
    intervals: dict[str, Interval] = field(default_factory=dict)

    @property
    def worst_specificity(self) -> float:
        return self.values[WORST_SPECIFICITY]

    @property
    def worst_change(self) -> str | None:
        """The change under which the fewest NORMAL films keep their call."""
        per_change = {name: self.values.get(f"shift_{name}_specificity", np.nan) for name in CHANGES}
        finite = {k: v for k, v in per_change.items() if np.isfinite(v)}
        return min(finite, key=finite.__getitem__) if finite else None

    def flat(self, prefix: str) -> dict[str, float]:
        """As MLflow metrics: `{prefix}shift_worst_specificity`, `{prefix}shift_noise_8_auc_ci_low`, ..."""
        return with_intervals(self.values, self.intervals, prefix)

    def describe(self, name: str = WORST_SPECIFICITY) -> str:
        value = self.values.get(name, np.nan)
        if not np.isfinite(value):
            return "-"
        interval = self.intervals.get(name)
        return f"{value:.3f}" + (f" [{interval.low:.3f}, {interval.high:.3f}]" if interval else "")

    def rows(self) -> list[tuple[str, float, float, float]]:
        """(change, specificity, sensitivity, AUC) per change, worst specificity first."""
        rows = [
            (
                name,
                self.values.get(f"shift_{name}_specificity", np.nan),
                self.values.get(f"shift_{name}_sensitivity", np.nan),
                self.values.get(f"shift_{name}_auc", np.nan),
            )
            for name in CHANGES
            if f"shift_{name}_specificity" in self.values
        ]
        return sorted(rows, key=lambda r: (np.nan_to_num(r[1], nan=2.0), r[0]))


def shift_scores(
    labels: np.ndarray,
    clean: np.ndarray,
    changed: Mapping[str, np.ndarray],
    threshold: float,
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> ShiftScores:
    """`clean`: P(COVID19) of the films unchanged; `changed`: change name -> P(COVID19) of the same films under
    it. Resampled (stratified) with the films, the threshold held fixed; `resamples` 0: no intervals."""
    labels = np.asarray(labels).astype(int)
    names = tuple(changed)
    columns = np.stack([np.asarray(clean, np.float64), *(np.asarray(changed[k], np.float64) for k in names)], -1)
    values = {k: float(v[0]) for k, v in _figures(labels[None], columns[None], threshold, names).items()}
    positives = int(labels.sum())
    intervals: dict[str, Interval] = {}
    if resamples and len(labels) >= MIN_PER_CLASS:
        intervals = bootstrap_intervals(
            labels, columns, lambda y, c: _figures(y, c, threshold, names), resamples=resamples, seed=seed
        )
    return ShiftScores(len(labels), positives, float(threshold), values, intervals)


def normal_specificity_under_changes(
    normal_probabilities: Mapping[str, np.ndarray], threshold: float
) -> dict[str, float]:
    """The share of NORMAL films still called NORMAL (`p < threshold`) under each change: the per-epoch guard,
    without intervals."""
    return {name: float(np.mean(np.asarray(p) < threshold)) for name, p in normal_probabilities.items()}
