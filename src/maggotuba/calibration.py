"""Calibrated class probabilities: temperature scaling and expected calibration error.

A tagger's softmax outputs are usually over-confident: among steps it tags with
probability 0.95, fewer than 95 % are right. Temperature scaling (Guo et al. 2017, "On
calibration of modern neural networks", ICML) divides the logits by one scalar
``T > 0`` fitted to minimise the negative log-likelihood on labelled data the tagger was
not trained on. It changes no argmax (the tags stay the same), only how sure they look.

Fit it on **held-out larvae** (:func:`fit_on_heldout_larvae`): steps of one larva are
strongly correlated, so a split by step would measure calibration on larvae the
temperature was fitted on. The expected calibration error (ECE, top-label, equal-width
confidence bins) is reported before and after, on the larvae not used for fitting.

Pure numpy/scipy (no torch), so it runs wherever predictions are read. Usage::

    fit = fit_on_heldout_larvae(logits, labels, larva_ids, seed=0)
    fit.temperature, fit.ece_before, fit.ece_after
    probabilities = apply_temperature(new_logits, fit.temperature)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

from taggingbackends.errors import TaggingError

#: Temperatures searched (log-uniform bounds); outside means the data are degenerate.
TEMPERATURE_BOUNDS = (0.05, 50.0)


def _check(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise TaggingError(f"logits must be (n_steps, n_classes ≥ 2), got shape {logits.shape}")
    if labels.shape != (logits.shape[0],):
        raise TaggingError(f"labels must be ({logits.shape[0]},) class indices, got shape {labels.shape}")
    if len(labels) == 0:
        raise TaggingError("no labelled steps to calibrate on")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= logits.shape[1]:
        raise TaggingError(f"labels must be integers in 0..{logits.shape[1] - 1}")
    if not np.all(np.isfinite(logits)):
        raise TaggingError("logits hold NaN or infinite values")
    return logits, labels.astype(np.int64)


def logits_from_probabilities(probabilities: np.ndarray, floor: float = 1e-7) -> np.ndarray:
    """Log-probabilities, usable as logits (softmax is shift-invariant); ``floor`` keeps
    zero probabilities finite."""
    p = np.asarray(probabilities, dtype=np.float64)
    return np.log(np.clip(p, floor, 1.0))


def apply_temperature(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Class probabilities of ``logits / temperature`` (rows sum to 1)."""
    if not temperature > 0:
        raise TaggingError(f"temperature must be positive, not {temperature}")
    return softmax(np.asarray(logits, dtype=np.float64) / float(temperature), axis=1)


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean NLL of the true classes at ``temperature``."""
    logits, labels = _check(logits, labels)
    logp = log_softmax(logits / temperature, axis=1)
    return float(-logp[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising the NLL of ``labels`` (1-D search over log T)."""
    logits, labels = _check(logits, labels)
    lo, hi = np.log(TEMPERATURE_BOUNDS)
    res = minimize_scalar(lambda u: negative_log_likelihood(logits, labels, float(np.exp(u))),
                          bounds=(lo, hi), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(res.x))


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """Top-label ECE: the step-weighted mean over equal-width confidence bins of
    |accuracy − mean confidence|. 0 = calibrated."""
    p, labels = _check(probabilities, labels)
    confidence = p.max(axis=1)
    correct = (p.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        sel = bins == b
        if sel.any():
            ece += sel.mean() * abs(correct[sel].mean() - confidence[sel].mean())
    return float(ece)


@dataclass(frozen=True)
class TemperatureFit:
    """A temperature fitted on some larvae and judged on the others."""

    temperature: float
    ece_before: float       # on the evaluation larvae, T = 1
    ece_after: float        # on the evaluation larvae, fitted T
    nll_before: float
    nll_after: float
    n_fit_steps: int
    n_eval_steps: int
    n_fit_larvae: int
    n_eval_larvae: int

    def to_dict(self) -> dict:
        return asdict(self)


def split_larvae(larva_ids: np.ndarray, fraction: float = 0.5, seed: int = 0) -> np.ndarray:
    """Boolean mask of the steps whose larva is drawn into the fitting half."""
    larva_ids = np.asarray(larva_ids)
    unique = np.unique(larva_ids)
    if len(unique) < 2:
        raise TaggingError("temperature scaling on held-out larvae needs at least 2 larvae")
    rng = np.random.default_rng(seed)
    n_fit = min(max(int(round(fraction * len(unique))), 1), len(unique) - 1)
    chosen = rng.permutation(unique)[:n_fit]
    return np.isin(larva_ids, chosen)


def fit_on_heldout_larvae(logits: np.ndarray, labels: np.ndarray, larva_ids: np.ndarray, *,
                          fraction: float = 0.5, seed: int = 0, n_bins: int = 15) -> TemperatureFit:
    """Fit the temperature on a random ``fraction`` of the larvae; report ECE and NLL
    before and after on the remaining larvae. ``larva_ids`` may be any hashable-valued
    array (e.g. ``"run/larva"`` strings), one per step."""
    logits, labels = _check(logits, labels)
    larva_ids = np.asarray(larva_ids)
    if larva_ids.shape != labels.shape:
        raise TaggingError(f"larva_ids must have one entry per step ({len(labels)}), got {larva_ids.shape}")
    fit_mask = split_larvae(larva_ids, fraction, seed)
    t = fit_temperature(logits[fit_mask], labels[fit_mask])
    ev_logits, ev_labels = logits[~fit_mask], labels[~fit_mask]
    return TemperatureFit(
        temperature=t,
        ece_before=expected_calibration_error(apply_temperature(ev_logits, 1.0), ev_labels, n_bins),
        ece_after=expected_calibration_error(apply_temperature(ev_logits, t), ev_labels, n_bins),
        nll_before=negative_log_likelihood(ev_logits, ev_labels, 1.0),
        nll_after=negative_log_likelihood(ev_logits, ev_labels, t),
        n_fit_steps=int(fit_mask.sum()), n_eval_steps=int((~fit_mask).sum()),
        n_fit_larvae=len(np.unique(larva_ids[fit_mask])), n_eval_larvae=len(np.unique(larva_ids[~fit_mask])))
