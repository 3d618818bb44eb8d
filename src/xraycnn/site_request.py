"""What a site's calibration request must be (`xraycnn calibrate`, `--site`), checked before anything heavy is
imported: a safe name (it becomes part of a registry tag's key and of metric keys), a rate and a confidence in
range. The calibration itself is evaluation.site."""

from __future__ import annotations

import math
import re

from xraycnn.errors import XrayCnnError

SITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class SiteCalibrationError(XrayCnnError, ValueError):
    """A site's calibration that cannot be made as asked: an unsafe name, a rate or confidence out of range, too
    few films, or films the model calls COVID-19 whatever the threshold."""


def check_site_name(name: str) -> str:
    """A site's name: 1-64 letters, digits, '_', '.', '-', starting with a letter or digit."""
    if not SITE_NAME.match(name or ""):
        raise SiteCalibrationError(
            f"site name {name!r} is not allowed: use 1-64 letters, digits, '_', '.' or '-', starting with a letter "
            "or digit (e.g. st-marys or hospital_a)"
        )
    return name


def check_rate(rate: float, confidence: float) -> None:
    if not 0 < rate < 1:
        raise SiteCalibrationError(f"--max-false-positive-rate {rate}: give a rate between 0 and 1, e.g. 0.10")
    if not 0.5 <= confidence < 1:
        raise SiteCalibrationError(f"--confidence {confidence}: give a level in [0.5, 1), e.g. 0.95")


def check_request(site: str, rate: float, confidence: float) -> None:
    """What can be refused before any film is read."""
    check_site_name(site)
    check_rate(rate, confidence)


def films_needed(rate: float, confidence: float) -> int:
    """The fewest normal films that can promise a false-positive rate of at most `rate` at `confidence`: with n
    films and the threshold above them all, P(rate > asked) = (1 - asked)^n (evaluation.site)."""
    check_rate(rate, confidence)
    return math.ceil(math.log(1 - confidence) / math.log(1 - rate) - 1e-12)


def check_enough(films: int, rate: float, confidence: float) -> None:
    needed = films_needed(rate, confidence)
    if films < needed:
        raise SiteCalibrationError(
            f"{films} normal film(s) cannot promise a false-positive rate of at most {rate:g} at {confidence:.0%} "
            f"confidence: at least {needed} are needed (add {needed - films} more, or ask for a higher rate or a "
            "lower --confidence)"
        )
