"""Synthetic larva tracking data with per-step ground-truth behaviour.

>>> from taggingbackends.simulate import simulate, SimulationConfig, BEHAVIOURS
>>> result = simulate(SimulationConfig(n_larvae=3, duration=10.0, seed=0))
>>> result.run.n_points, result.names == BEHAVIOURS
(11, True)

``result.run`` is a :class:`~taggingbackends.data.tracks.Run` (11-point spines, head
first by default, 40-vertex outlines, mm, irregular MWT-like timestamps);
``result.behaviour`` holds, per time step, the index into :data:`BEHAVIOURS` of the
behaviour being performed. See ``docs/simulation.md`` for the models and their sources.
"""

from .behaviours import (
    BackParams, BodyParams, CastParams, HunchParams, KinematicParams, LarvaTraits, RollParams,
    RunParams, SmallMotionParams, StopParams,
)
from .core import (
    SimulationConfig, SimulationResult, balanced_weights, expected_occupancy, simulate,
    simulate_bout,
)
from .transitions import BEHAVIOURS

__all__ = [
    "BEHAVIOURS", "SimulationConfig", "SimulationResult", "simulate", "simulate_bout",
    "expected_occupancy", "balanced_weights", "KinematicParams", "BodyParams", "RunParams",
    "CastParams", "BackParams", "HunchParams", "RollParams", "StopParams",
    "SmallMotionParams", "LarvaTraits",
]
