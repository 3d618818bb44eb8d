"""A site's threshold from its own normal films: the order statistic chosen, the promise kept, the refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from xraycnn.evaluation.site import SiteThreshold, site_threshold
from xraycnn.site_request import SiteCalibrationError, check_request, check_site_name, films_needed


def test_the_threshold_is_the_lowest_order_statistic_that_keeps_the_promise() -> None:
    scores = np.random.default_rng(0).uniform(size=200)
    site = site_threshold("a", scores, 0.10, 0.95)
    ordered = np.sort(scores)
    k = site.rank
    # F at the k-th of n sorted scores is Beta(n - k + 1, k): the promise holds at k and fails just below it
    assert stats.beta(200 - k + 1, k).cdf(0.10) >= 0.95 > stats.beta(200 - k + 2, k - 1).cdf(0.10)
    assert ordered[k - 1] < site.threshold < ordered[k] and site.above == 200 - k
    assert site.rate_high <= 0.10 and site.rate_low < site.expected_rate < site.rate_high
    assert SiteThreshold.from_dict(site.as_dict()) == site
    assert "at most 0.1 with 95% confidence" in site.promise()


def test_the_promise_holds_on_the_site_s_future_normal_films() -> None:
    """Over many sites, the rate the threshold gives on new normal films is over the rate asked for at most as
    often as the confidence allows."""
    rng = np.random.default_rng(1)
    over = 0
    for _ in range(1000):
        site = site_threshold("a", stats.norm.cdf(rng.normal(size=60)), 0.10, 0.95)  # scores uniform on [0, 1]
        over += 1 - site.threshold > 0.10  # the true false-positive rate at the threshold
    assert over / 1000 <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 1000)


def test_too_few_films_are_refused_with_how_many_are_needed() -> None:
    assert films_needed(0.10, 0.95) == 29 and films_needed(0.05, 0.95) == 59
    site_threshold("a", np.linspace(0, 0.5, 29), 0.10)  # just enough: the threshold is above the highest
    with pytest.raises(SiteCalibrationError, match=r"28 normal film.*at least 29 are needed.*add 1 more"):
        site_threshold("a", np.linspace(0, 0.5, 28), 0.10)
    with pytest.raises(SiteCalibrationError, match="no threshold keeps them NORMAL"):
        site_threshold("a", np.ones(40), 0.10)


@pytest.mark.parametrize("name", ["", "../etc", "a b", "-lead", "x" * 65, "site;rm", "é"])
def test_unsafe_site_names_are_refused(name: str) -> None:
    with pytest.raises(SiteCalibrationError, match="is not allowed"):
        check_site_name(name)


def test_rates_and_confidences_out_of_range_are_refused() -> None:
    check_request("st-marys.2", 0.1, 0.95)
    for rate, confidence in ((0.0, 0.95), (1.0, 0.95), (0.1, 1.0), (0.1, 0.3)):
        with pytest.raises(SiteCalibrationError):
            check_request("a", rate, confidence)


def test_the_predicted_range_of_a_measured_rate_widens_with_fewer_films() -> None:
    site = site_threshold("a", np.random.default_rng(2).uniform(size=400), 0.10)
    few, many = site.predicted_range(50), site.predicted_range(2000)
    assert few[0] <= many[0] <= site.expected_rate <= many[1] <= few[1]
