"""Temperature scaling (maggotuba/calibration.py): recovers a known over-confidence,
leaves calibrated outputs alone, lowers the ECE on held-out larvae, refuses bad input."""

from __future__ import annotations

import numpy as np
import pytest

from maggotuba.calibration import (
    apply_temperature, expected_calibration_error, fit_on_heldout_larvae, fit_temperature,
    logits_from_probabilities, negative_log_likelihood, split_larvae,
)
from taggingbackends.errors import TaggingError


def calibrated_sample(n=6000, k=5, seed=0):
    """Logits whose softmax is the true class distribution, and labels drawn from it."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 2.0, size=(n, k))
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    labels = (rng.random(n)[:, None] > np.cumsum(p, axis=1)).sum(axis=1)
    larvae = np.repeat(np.arange(n // 100), 100)
    return logits, labels, larvae


def test_fit_recovers_a_known_overconfidence():
    logits, labels, _ = calibrated_sample()
    assert fit_temperature(logits, labels) == pytest.approx(1.0, abs=0.08)
    assert fit_temperature(3.0 * logits, labels) == pytest.approx(3.0, rel=0.08)
    assert negative_log_likelihood(3.0 * logits, labels, 3.0) < negative_log_likelihood(3.0 * logits, labels)


def test_heldout_larvae_fit_lowers_ece_and_keeps_the_argmax():
    logits, labels, larvae = calibrated_sample()
    fit = fit_on_heldout_larvae(3.0 * logits, labels, larvae, seed=1)
    assert fit.temperature == pytest.approx(3.0, rel=0.12)
    assert fit.ece_after < 0.03 < fit.ece_before
    assert fit.nll_after < fit.nll_before
    assert fit.n_fit_larvae + fit.n_eval_larvae == len(np.unique(larvae))
    assert fit.n_fit_steps + fit.n_eval_steps == len(labels)
    p1, p3 = apply_temperature(logits, 1.0), apply_temperature(logits, 3.0)
    assert np.array_equal(p1.argmax(axis=1), p3.argmax(axis=1))
    assert np.allclose(p3.sum(axis=1), 1.0)
    # same seed, same split; larvae never straddle the split
    mask = split_larvae(larvae, 0.5, seed=1)
    assert np.array_equal(mask, split_larvae(larvae, 0.5, seed=1))
    for larva in np.unique(larvae):
        assert len(np.unique(mask[larvae == larva])) == 1


def test_ece_of_known_cases_and_probabilities_as_logits():
    labels = np.array([0, 0, 1, 1])
    sure_right = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert expected_calibration_error(sure_right, labels) == pytest.approx(0.0)
    sure_wrong = sure_right[:, ::-1]
    assert expected_calibration_error(sure_wrong, labels) == pytest.approx(1.0)
    half = np.full((4, 2), 0.5)
    assert expected_calibration_error(half, np.array([0, 1, 0, 1])) == pytest.approx(0.0)
    p = np.array([[0.7, 0.2, 0.1], [0.0, 1.0, 0.0]])
    assert np.allclose(apply_temperature(logits_from_probabilities(p), 1.0), p, atol=1e-6)


def test_bad_input_is_refused_with_a_clear_error():
    logits, labels, larvae = calibrated_sample(n=200)
    with pytest.raises(TaggingError, match="labels must be"):
        fit_temperature(logits, labels[:-1])
    with pytest.raises(TaggingError, match="integers in 0..4"):
        fit_temperature(logits, labels + 5)
    with pytest.raises(TaggingError, match="NaN"):
        fit_temperature(np.where(np.eye(200, 5) > 0, np.nan, logits), labels)
    with pytest.raises(TaggingError, match="at least 2 larvae"):
        fit_on_heldout_larvae(logits, labels, np.zeros(200))
    with pytest.raises(TaggingError, match="positive"):
        apply_temperature(logits, 0.0)
