"""A site's own decision threshold, set from its own NORMAL films, as hospitals deploy such models.

A model's threshold is chosen on cxr-covid's validation split, whose NORMAL films all come from one hospital;
at another hospital its normal films may score higher, and a fixed threshold then calls many of them COVID-19.
A site that gives n of its normal films (no COVID-19 film is needed) gets the threshold that keeps its
false-positive rate at or under a rate it asks for, with a stated confidence:

The films' scores, sorted, are s(1) <= ... <= s(n). Calling COVID-19 above s(k) makes the false-positive rate
on the site's future normal films F = P(score > s(k)), and for n exchangeable films F ~ Beta(n - k + 1, k)
whatever the scores' distribution (the order statistics of a continuous distribution). The threshold is the
lowest s(k) (so the most sensitive) with P(F <= rate) >= confidence; the promise is that rate at that
confidence, with F's expected value and its central interval. Too few films and even the highest one cannot
promise the rate: the site is told how many it needs, n >= log(1 - confidence) / log(1 - rate).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from xraycnn.site_request import SiteCalibrationError, check_enough, check_rate, check_site_name

CONFIDENCE = 0.95
# Above the k-th score by more than the last bits in which two ways of computing a probability may differ
# (predict, the server, the pyfunc flavour agree to 1e-6), so a film scored like the calibration film keeps its call.
MARGIN = 1e-6


def _rate_distribution(n: int, k: int) -> stats.rv_continuous:
    """The false-positive rate of a threshold at the k-th of n sorted normal scores (1-based)."""
    return stats.beta(n - k + 1, k)


@dataclass(frozen=True)
class SiteThreshold:
    """A site's threshold and what it promises; stored on the model version (registry) as one JSON tag."""

    site: str
    threshold: float
    max_false_positive_rate: float
    confidence: float
    normals: int  # films it was set from
    rank: int  # the threshold lies just above the rank-th lowest of their scores (1-based)
    above: int  # of those films, called COVID-19 at the threshold
    expected_rate: float  # the mean false-positive rate on the site's future normal films
    rate_low: float  # F's central interval at level 2 * confidence - 1 (its upper end <= the rate asked)
    rate_high: float

    @property
    def observed_rate(self) -> float:
        return self.above / self.normals

    @property
    def interval_level(self) -> float:
        return 2 * self.confidence - 1

    def promise(self) -> str:
        return (
            f"false-positive rate at most {self.max_false_positive_rate:g} with {self.confidence:.0%} confidence "
            f"(expected {self.expected_rate:.3f}, {self.interval_level:.0%} interval [{self.rate_low:.3f}, "
            f"{self.rate_high:.3f}]; {self.above} of the {self.normals} normal films called COVID-19)"
        )

    def predicted_range(self, films: int, level: float = 0.95) -> tuple[float, float]:
        """The range the false-positive rate measured on `films` new normal films falls in with probability
        `level`: the beta-binomial of the count, F's uncertainty and the count's own together."""
        counts = stats.betabinom(films, self.normals - self.rank + 1, self.rank)
        tail = (1 - level) / 2
        return float(counts.ppf(tail)) / films, float(counts.ppf(1 - tail)) / films

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> SiteThreshold:
        return cls(**{k: values[k] for k in cls.__dataclass_fields__})


def site_threshold(
    site: str, normal_scores: np.ndarray, max_false_positive_rate: float, confidence: float = CONFIDENCE
) -> SiteThreshold:
    """The threshold that promises `max_false_positive_rate` at `confidence` from `normal_scores` (P(COVID19) of
    the site's normal films)."""
    check_site_name(site)
    check_rate(max_false_positive_rate, confidence)
    scores = np.sort(np.asarray(normal_scores, dtype=np.float64))
    n = len(scores)
    check_enough(n, max_false_positive_rate, confidence)
    # The most films above the threshold that still keep P(F <= rate) >= confidence; F's cdf at the rate falls
    # as k falls, so the first k from the lowest that qualifies is found by a scan from the top.
    k = n
    while k > 1 and _rate_distribution(n, k - 1).cdf(max_false_positive_rate) >= confidence:
        k -= 1
    cut = scores[k - 1]
    threshold = float(cut + MARGIN)
    if threshold > 1.0:
        raise SiteCalibrationError(
            f"the model gives {n - k + 1} of the site's normal films a probability of COVID-19 of {cut:.6f} or more: "
            "no threshold keeps them NORMAL; this model cannot be used at this site"
        )
    distribution = _rate_distribution(n, k)
    tail = 1 - confidence
    return SiteThreshold(
        site=site,
        threshold=threshold,
        max_false_positive_rate=float(max_false_positive_rate),
        confidence=float(confidence),
        normals=n,
        rank=k,
        above=int(np.sum(scores >= threshold)),
        expected_rate=float(distribution.mean()),
        rate_low=float(distribution.ppf(tail)),
        rate_high=float(distribution.ppf(1 - tail)),
    )
