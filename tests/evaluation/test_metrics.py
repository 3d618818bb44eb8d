from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss, f1_score, log_loss, precision_score, recall_score, roc_auc_score

from xraycnn.evaluation import batch_metrics, binary_metrics


def test_metrics_agree_with_sklearn() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    probs = np.clip(labels * 0.35 + rng.uniform(0, 0.65, 200), 0, 1)
    m = binary_metrics(labels, probs)
    predicted = (probs >= 0.5).astype(int)
    assert m["auc"] == pytest.approx(roc_auc_score(labels, probs))
    assert m["sensitivity"] == pytest.approx(recall_score(labels, predicted))
    assert m["specificity"] == pytest.approx(recall_score(1 - labels, 1 - predicted))
    assert m["precision"] == pytest.approx(precision_score(labels, predicted))
    assert m["f1"] == pytest.approx(f1_score(labels, predicted))
    assert m["accuracy"] == pytest.approx((predicted == labels).mean())
    assert m["loss"] == pytest.approx(log_loss(labels, np.clip(probs, 1e-7, 1 - 1e-7)), rel=1e-6)
    assert m["tp"] + m["fn"] == labels.sum() and m["tn"] + m["fp"] == (1 - labels).sum()
    assert m["ppv"] == pytest.approx(precision_score(labels, predicted))
    assert m["npv"] == pytest.approx(precision_score(1 - labels, 1 - predicted))
    assert m["brier"] == pytest.approx(brier_score_loss(labels, probs))


def test_rows_are_scored_independently_and_ties_count_half() -> None:
    labels = np.array([[1, 1, 0, 0], [1, 0, 1, 0]])
    probs = np.array([[0.9, 0.5, 0.5, 0.1], [0.3, 0.3, 0.3, 0.3]])
    batch = batch_metrics(labels, probs)
    for row in range(2):
        assert batch["auc"][row] == pytest.approx(roc_auc_score(labels[row], probs[row]))
        assert batch["accuracy"][row] == binary_metrics(labels[row], probs[row])["accuracy"]
    assert batch["auc"][1] == 0.5


def test_covid_is_the_positive_class() -> None:
    m = binary_metrics(np.array([1, 1, 0, 0]), np.array([0.9, 0.2, 0.1, 0.1]))
    assert m["sensitivity"] == 0.5 and m["specificity"] == 1.0 and m["precision"] == 1.0


def test_a_model_that_never_predicts_covid_scores_zero_precision_and_f1() -> None:
    metrics = binary_metrics(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.3, 0.4]))
    assert metrics["precision"] == 0.0 and metrics["f1"] == 0.0 and metrics["sensitivity"] == 0.0
    assert metrics["auc"] == 1.0  # ranking is perfect even though no probability crosses 0.5


def test_ppv_is_undefined_where_nothing_is_called_covid() -> None:
    metrics = binary_metrics(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.3, 0.4]))
    assert np.isnan(metrics["ppv"]) and metrics["npv"] == 0.5
