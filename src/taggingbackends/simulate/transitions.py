"""The behaviour sequence: a semi-Markov chain of bouts.

Each larva performs a sequence of bouts. A bout of behaviour ``b`` lasts a random time
drawn from a gamma law of mean ``mean_bout_duration[b]`` and shape
``bout_duration_shape[b]``, clipped to ``[min_bout_duration[b], max_bout_duration[b]]``.
When it ends, the next behaviour ``c != b`` is drawn with probability proportional to
``transition_matrix[b][c] * behaviour_weights[c]`` (a behaviour never follows itself:
one bout is one episode).

``behaviour_weights`` (all 1 by default) multiply the probability of *entering* a
behaviour, so training sets can oversample rare behaviours (hunch, roll) without
touching the matrix; :func:`weights_for_occupancy` finds the weights that give a chosen
share of time per behaviour, and :func:`expected_occupancy` predicts the share of time
(≈ share of time steps) spent in each behaviour.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
from scipy import stats

BEHAVIOURS = ("run", "cast", "back", "hunch", "roll", "stop", "small_motion")

#: Mean bout duration (s) per behaviour (before clipping).
DEFAULT_MEAN_BOUT_DURATION = {
    "run": 5.0, "cast": 2.2, "back": 2.5, "hunch": 0.9, "roll": 2.0, "stop": 2.0,
    "small_motion": 1.5,
}
#: Shape of the gamma law of bout durations (1 = exponential; larger = more regular).
DEFAULT_BOUT_DURATION_SHAPE = {
    "run": 2.0, "cast": 3.0, "back": 3.0, "hunch": 8.0, "roll": 4.0, "stop": 2.0,
    "small_motion": 2.0,
}
#: Shortest bout (s) per behaviour.
DEFAULT_MIN_BOUT_DURATION = {
    "run": 1.0, "cast": 0.6, "back": 1.0, "hunch": 0.5, "roll": 0.8, "stop": 0.5,
    "small_motion": 0.5,
}
#: Longest bout (s) per behaviour.
DEFAULT_MAX_BOUT_DURATION = {
    "run": 40.0, "cast": 8.0, "back": 10.0, "hunch": 1.6, "roll": 6.0, "stop": 20.0,
    "small_motion": 8.0,
}

#: Relative transition rates, row = current behaviour, column = next one, in the order
#: of :data:`BEHAVIOURS` (run, cast, back, hunch, roll, stop, small_motion). Rows are
#: normalised after weighting; the diagonal is ignored. Tuned so that the default
#: occupancy is close to the JBM-tag frequencies on real t15 data (SPEC §7: run ~ 64 %,
#: cast ~ 27 %, back ~ 2 %, stop ~ 1 %, hunch and roll < 0.1 %), with small_motion ~ 5 %.
DEFAULT_TRANSITION_MATRIX = (
    #  run    cast   back   hunch   roll    stop   small
    (0.000, 0.800, 0.035, 0.0035, 0.0010, 0.022, 0.120),  # from run
    (0.870, 0.000, 0.030, 0.0012, 0.0004, 0.018, 0.090),  # from cast
    (0.500, 0.420, 0.000, 0.0050, 0.0000, 0.040, 0.040),  # from back
    (0.300, 0.200, 0.400, 0.0000, 0.0000, 0.050, 0.050),  # from hunch
    (0.750, 0.200, 0.000, 0.0000, 0.0000, 0.025, 0.025),  # from roll
    (0.450, 0.350, 0.050, 0.0000, 0.0000, 0.000, 0.150),  # from stop
    (0.550, 0.320, 0.030, 0.0000, 0.0000, 0.100, 0.000),  # from small_motion
)


def as_vector(values, default: float, name: str) -> np.ndarray:
    """A per-behaviour vector from a mapping name→value, a sequence, or ``None``."""
    if values is None:
        return np.full(len(BEHAVIOURS), float(default))
    if isinstance(values, Mapping):
        unknown = set(values) - set(BEHAVIOURS)
        if unknown:
            raise ValueError(f"{name}: unknown behaviour(s) {sorted(unknown)}; known: {BEHAVIOURS}")
        return np.array([float(values.get(b, default)) for b in BEHAVIOURS])
    arr = np.asarray(values, dtype=float)
    if arr.shape != (len(BEHAVIOURS),):
        raise ValueError(f"{name}: expected {len(BEHAVIOURS)} values, got shape {arr.shape}")
    return arr


class BoutModel:
    """The semi-Markov bout process of one configuration (shared by all larvae)."""

    def __init__(self, mean_duration, shape, min_duration, max_duration, matrix, weights):
        self.mean = as_vector(mean_duration, 1.0, "mean_bout_duration")
        self.shape = as_vector(shape, 2.0, "bout_duration_shape")
        self.min = as_vector(min_duration, 0.0, "min_bout_duration")
        self.max = as_vector(max_duration, np.inf, "max_bout_duration")
        weights = as_vector(weights, 1.0, "behaviour_weights")
        m = np.array(matrix, dtype=float)
        self.base_matrix = m.copy()
        if m.shape != (len(BEHAVIOURS), len(BEHAVIOURS)):
            raise ValueError(f"transition_matrix must be {len(BEHAVIOURS)}x{len(BEHAVIOURS)}")
        if np.any(m < 0) or np.any(weights < 0) or np.any(self.mean <= 0) or np.any(self.shape <= 0):
            raise ValueError("bout durations, shapes, transition rates and weights must be positive")
        if np.any(self.min > self.max):
            raise ValueError("min_bout_duration exceeds max_bout_duration")
        m = m * weights[None, :]
        np.fill_diagonal(m, 0.0)
        sums = m.sum(axis=1)
        self.reachable = weights > 0
        # a behaviour with no way out goes to run (or the first allowed behaviour)
        fallback = 0 if weights[0] > 0 else int(np.argmax(weights > 0))
        for i in np.flatnonzero(sums <= 0):
            m[i, :] = 0.0
            m[i, fallback if fallback != i else int(np.argmax(np.arange(len(m)) != i))] = 1.0
        self.matrix = m / m.sum(axis=1, keepdims=True)
        self.weights = weights
        self.cumulative = np.cumsum(self.matrix, axis=1)

    # ------------------------------------------------------------ analysis
    def expected_durations(self) -> np.ndarray:
        """Mean of the clipped gamma duration law per behaviour."""
        k, mean, lo, hi = self.shape, self.mean, self.min, self.max
        scale = mean / k
        f_lo = stats.gamma.cdf(lo, k, scale=scale)
        f_hi = stats.gamma.cdf(hi, k, scale=scale)
        g_lo = stats.gamma.cdf(lo, k + 1, scale=scale)
        g_hi = stats.gamma.cdf(hi, k + 1, scale=scale)
        tail = np.where(np.isfinite(hi), hi * (1.0 - f_hi), 0.0)
        return lo * f_lo + mean * (g_hi - g_lo) + tail

    def entry_distribution(self) -> np.ndarray:
        """Stationary distribution of the embedded jump chain (share of bouts)."""
        vals, vecs = np.linalg.eig(self.matrix.T)
        v = np.real(vecs[:, np.argmin(np.abs(vals - 1.0))])
        v = np.abs(v)
        return v / v.sum()

    def occupancy(self) -> np.ndarray:
        """Expected share of time in each behaviour (long-run)."""
        p = self.entry_distribution() * self.expected_durations()
        return p / p.sum()

    # ------------------------------------------------------------ sampling
    def duration(self, rng: np.random.Generator, b: int) -> float:
        d = rng.gamma(self.shape[b], self.mean[b] / self.shape[b])
        return float(min(max(d, self.min[b]), self.max[b]))

    def next(self, rng: np.random.Generator, b: int) -> int:
        return int(np.searchsorted(self.cumulative[b], rng.random() * self.cumulative[b, -1], side="right"))

    def initial(self, rng: np.random.Generator) -> int:
        occ = np.cumsum(self.occupancy())
        return int(min(np.searchsorted(occ, rng.random() * occ[-1], side="right"), len(occ) - 1))

    def sample(self, rng: np.random.Generator, t_start: float, t_end: float,
               first: int | None = None) -> list[tuple[int, float, float]]:
        """Bouts ``(behaviour, start, end)`` covering ``[t_start, t_end]``."""
        b = self.initial(rng) if first is None else int(first)
        bouts = []
        t = t_start
        while True:
            d = self.duration(rng, b)
            bouts.append((b, t, t + d))
            t += d
            if t > t_end:
                return bouts
            b = self.next(rng, b)


def weights_for_occupancy(model: BoutModel, target=None, iterations: int = 200) -> np.ndarray:
    """Behaviour weights that make the long-run occupancy close to ``target``.

    ``target``: share of time per behaviour (mapping or sequence; default uniform).
    Fixed-point iteration on the weights; behaviours with a target of 0 get weight 0.
    """
    target = as_vector(target, 0.0, "target") if target is not None else np.full(len(BEHAVIOURS), 1.0)
    target = target / target.sum()
    w = np.where(target > 0, 1.0, 0.0)
    matrix = model.base_matrix  # weights apply to the unweighted matrix
    for _ in range(iterations):
        trial = BoutModel(model.mean, model.shape, model.min, model.max, matrix, w)
        occ = trial.occupancy()
        ratio = np.where(target > 0, target / np.maximum(occ, 1e-12), 0.0)
        w = w * ratio ** 0.7
        w = np.where(target > 0, np.maximum(w / w.max(), 1e-6), 0.0)
    return w

