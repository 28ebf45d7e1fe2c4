"""Configuration, the simulation loop and its result.

Each larva gets its own random streams, derived from ``(seed, larva index)`` only, so a
larva's data do not depend on how many other larvae are simulated or in which order.
The frame clock has its own stream (``(seed, 0)``).

Per larva: draw its traits (size, speeds) and start position; draw its tracked span on
the frame clock and its dropped frames; draw a bout sequence (:mod:`.transitions`)
starting ``warmup`` seconds before its first frame (so tracks begin mid-behaviour, with a
natural posture); run each bout's kinematic model (:mod:`.behaviours`) from the body the
previous bout ended with, evaluated at the frame times; add tracking noise; build the
outline. The ground truth of a frame is the behaviour of the bout active at its time.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from ..data.tracks import Run
from . import body as _body
from .behaviours import MODELS, KinematicParams, LarvaTraits, draw_traits
from .timing import drop_frames, frame_clock, track_span
from .transitions import (
    BEHAVIOURS, DEFAULT_BOUT_DURATION_SHAPE, DEFAULT_MAX_BOUT_DURATION,
    DEFAULT_MEAN_BOUT_DURATION, DEFAULT_MIN_BOUT_DURATION, DEFAULT_TRANSITION_MATRIX,
    BoutModel, weights_for_occupancy,
)

SOFTWARE = "taggingbackends.simulate"


@dataclass
class SimulationConfig:
    """Everything the simulator needs; defaults mimic an MWT t15 recording of 3rd-instar
    larvae crawling on agar (see docs/simulation.md for the sources of each value).

    Lengths are in mm unless the name says otherwise; ``*_noise`` values are fractions of
    the larva's body length (BL).
    """

    # --- recording
    #: Number of larvae (tracks).
    n_larvae: int = 20
    #: Recording length (s).
    duration: float = 60.0
    #: Nominal frame rate (Hz); MWT t15 ≈ 11 Hz, the Schleyer tracker 16 Hz.
    frame_rate: float = 11.0
    #: Random seed; the same seed gives identical output.
    seed: int = 0
    #: Run id (``YYYYMMDD_HHMMSS``); ``None`` derives one from the seed
    #: (seed 0 → ``20260101_120000``, then one minute per seed).
    run_id: str | None = None

    # --- frame timing (see .timing)
    #: Relative s.d. of the frame intervals around ``1/frame_rate``; 0 puts the frames
    #: exactly on the grid ``k/frame_rate`` (needed by formats storing frame numbers).
    frame_jitter: float = 0.06
    #: Probability that a frame is missing for all larvae (camera skip).
    camera_drop_prob: float = 0.01
    #: Probability that a larva misses a single frame inside its track.
    frame_drop_prob: float = 0.005

    # --- larvae entering and leaving
    #: Share of larvae tracked for the whole recording.
    full_track_fraction: float = 0.15
    #: Median duration (s) of the other tracks (log-normal).
    median_track_duration: float = 16.0
    #: Log-normal sigma of those durations.
    track_duration_sigma: float = 0.9
    #: Shortest track (s).
    min_track_duration: float = 3.0
    #: Behaviour simulated before a track's first frame (s), not written out.
    warmup: float = 5.0

    # --- larvae
    #: Rest body length: mean and s.d. over larvae (mm). Schleyer tracks: 3.6-4.6 mm.
    body_length_mean: float = 4.2
    body_length_sd: float = 0.4
    #: Width at the widest point as a fraction of the length: mean and s.d.
    width_ratio: float = 0.205
    width_ratio_sd: float = 0.015
    #: Larvae start at uniform positions in a disc of this radius (mm), centred on 0.
    arena_radius: float = 40.0

    # --- tracking noise (fractions of the body length)
    #: s.d. of the position noise of interior spine points.
    spine_noise: float = 0.0055
    #: s.d. of the position noise of the two end points (head and tail).
    spine_end_noise: float = 0.009
    #: s.d. of the position noise of outline vertices.
    outline_noise: float = 0.005
    #: Probability per frame of an outlier: one end of the spine mis-segmented.
    outlier_prob: float = 0.002
    #: s.d. of the outlier displacement.
    outlier_scale: float = 0.05

    # --- output
    #: Spine order: head first (``spine_head="first"``) or tail first (``"last"``).
    head_first: bool = True
    #: Whether to build outlines.
    outline: bool = True

    # --- behaviour sequence (see .transitions); mappings behaviour → value
    mean_bout_duration: Mapping[str, float] = field(
        default_factory=lambda: dict(DEFAULT_MEAN_BOUT_DURATION))
    bout_duration_shape: Mapping[str, float] = field(
        default_factory=lambda: dict(DEFAULT_BOUT_DURATION_SHAPE))
    min_bout_duration: Mapping[str, float] = field(
        default_factory=lambda: dict(DEFAULT_MIN_BOUT_DURATION))
    max_bout_duration: Mapping[str, float] = field(
        default_factory=lambda: dict(DEFAULT_MAX_BOUT_DURATION))
    #: 7×7 relative rates (row = from, column = to) in the order of BEHAVIOURS.
    transition_matrix: Sequence[Sequence[float]] = DEFAULT_TRANSITION_MATRIX
    #: Multipliers of the probability of entering each behaviour (mapping or 7 values;
    #: ``None`` = all 1). Use to oversample rare behaviours; see
    #: :func:`weights_for_occupancy`.
    behaviour_weights: Mapping[str, float] | Sequence[float] | None = None

    # --- kinematics of each behaviour (see .behaviours)
    kinematics: KinematicParams = field(default_factory=KinematicParams)

    def __post_init__(self) -> None:
        if int(self.n_larvae) < 1:
            raise ValueError("n_larvae must be at least 1")
        self.n_larvae = int(self.n_larvae)
        if not self.duration > 0 or not self.frame_rate > 0:
            raise ValueError("duration and frame_rate must be positive")
        for name in ("frame_jitter", "camera_drop_prob", "frame_drop_prob", "full_track_fraction",
                     "spine_noise", "spine_end_noise", "outline_noise", "outlier_prob",
                     "outlier_scale", "warmup", "body_length_sd", "width_ratio_sd"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        for name in ("camera_drop_prob", "frame_drop_prob", "full_track_fraction", "outlier_prob"):
            if getattr(self, name) > 1:
                raise ValueError(f"{name} is a probability (0..1)")
        if self.camera_drop_prob >= 0.5 or self.frame_drop_prob >= 0.5:
            raise ValueError("drop probabilities must stay below 0.5")
        if not self.body_length_mean > 0 or not self.width_ratio > 0:
            raise ValueError("body_length_mean and width_ratio must be positive")
        if self.run_id is not None and not isinstance(self.run_id, str):
            raise ValueError("run_id must be a string like 20260101_120000")
        self.bout_model()  # validates the behaviour-sequence parameters

    def bout_model(self) -> BoutModel:
        """The semi-Markov bout process of this configuration."""
        return BoutModel(self.mean_bout_duration, self.bout_duration_shape, self.min_bout_duration,
                         self.max_bout_duration, self.transition_matrix, self.behaviour_weights)

    def resolved_run_id(self) -> str:
        if self.run_id is not None:
            return self.run_id
        base = _dt.datetime(2026, 1, 1, 12, 0, 0)
        return (base + _dt.timedelta(minutes=int(self.seed) % (60 * 24 * 365))).strftime("%Y%m%d_%H%M%S")

    def to_dict(self) -> dict:
        """JSON-compatible parameters (stored in the run metadata)."""
        def plain(x):
            if dataclasses.is_dataclass(x):
                return {f.name: plain(getattr(x, f.name)) for f in dataclasses.fields(x)}
            if isinstance(x, Mapping):
                return {str(k): plain(v) for k, v in x.items()}
            if isinstance(x, (list, tuple, np.ndarray)):
                return [plain(v) for v in x]
            if isinstance(x, np.generic):
                return x.item()
            return x
        return plain(self)


@dataclass
class SimulationResult:
    """A simulated run with its per-step ground truth."""

    #: The tracking data (11-point spines, outlines, no tags).
    run: Run
    #: ``(run.n_steps,)`` int8 index into :attr:`names` of the behaviour at each step.
    behaviour: np.ndarray
    #: Behaviour names (== BEHAVIOURS).
    names: tuple[str, ...]
    #: The configuration used.
    config: SimulationConfig
    #: Per-track traits (size, speeds), in the order of ``run`` tracks.
    traits: tuple[LarvaTraits, ...] = ()

    def labels(self) -> list[str]:
        """Behaviour name per step."""
        return [self.names[i] for i in self.behaviour]

    def occupancy(self) -> dict[str, float]:
        """Measured share of steps per behaviour."""
        counts = np.bincount(self.behaviour, minlength=len(self.names))
        return {n: float(c) / max(len(self.behaviour), 1) for n, c in zip(self.names, counts)}


@dataclass
class _Track:
    index: int
    t: np.ndarray
    spine: np.ndarray
    outline: np.ndarray | None
    behaviour: np.ndarray
    traits: LarvaTraits


# ------------------------------------------------------------------ helpers
def _streams(seed: int, index: int, n: int) -> list[np.random.Generator]:
    ss = np.random.SeedSequence(int(seed) & 0xFFFFFFFFFFFFFFFF, spawn_key=(1, int(index)))
    return [np.random.Generator(np.random.PCG64(child)) for child in ss.spawn(n)]


def _clock(config: SimulationConfig) -> np.ndarray:
    ss = np.random.SeedSequence(int(config.seed) & 0xFFFFFFFFFFFFFFFF, spawn_key=(0,))
    rng = np.random.Generator(np.random.PCG64(ss))
    return frame_clock(rng, config.duration, config.frame_rate, config.frame_jitter,
                       config.camera_drop_prob)


def _initial_body(rng: np.random.Generator, traits: LarvaTraits, config: SimulationConfig):
    r = config.arena_radius * np.sqrt(rng.random())
    a = rng.uniform(0.0, 2.0 * np.pi)
    heading = rng.uniform(0.0, 2.0 * np.pi)
    return _body.straight_body(traits.length, heading, (r * np.cos(a), r * np.sin(a)))


def _play(bouts, times: np.ndarray, body0: np.ndarray, traits: LarvaTraits,
          config: SimulationConfig, rng: np.random.Generator, bout_params=None):
    """Run the bouts; return the bodies at ``times`` and the behaviour index per time.

    ``bout_params(behaviour_index) -> KinematicParams``, when given, supplies the
    parameters of each bout (kinematic variants of the domain-randomised simulator);
    by default every bout uses ``config.kinematics``.
    """
    bodies = np.empty((len(times), body0.shape[0], 2))
    behaviour = np.empty(len(times), dtype=np.int8)
    body = body0
    kin = config.kinematics
    for b, start, end in bouts:
        lo = int(np.searchsorted(times, start, side="left"))
        hi = int(np.searchsorted(times, end, side="left"))
        duration = end - start
        t = np.concatenate([times[lo:hi] - start, [duration]])
        params = kin if bout_params is None else bout_params(b)
        out = MODELS[BEHAVIOURS[b]](body, t, duration, traits, params, rng)
        bodies[lo:hi] = out[:-1]
        behaviour[lo:hi] = b
        body = out[-1]
    return bodies, behaviour


def _finish(index: int, times, bodies, behaviour, traits, config, rng) -> _Track:
    """Spines and outlines with tracking noise."""
    n = len(times)
    length = traits.length
    spine = _body.spine_points(bodies).copy()
    if config.spine_noise > 0 or config.spine_end_noise > 0:
        sd = np.full(spine.shape[1], config.spine_noise * length)
        sd[0] = sd[-1] = config.spine_end_noise * length
        spine += rng.standard_normal(spine.shape) * sd[None, :, None]
    if config.outlier_prob > 0:
        hit = np.flatnonzero(rng.random(n) < config.outlier_prob)
        for k in hit:
            end = 0 if rng.random() < 0.5 else -1
            jump = rng.standard_normal(2) * config.outlier_scale * length
            idx = [0, 1, 2] if end == 0 else [-1, -2, -3]
            for w, i in zip((1.0, 0.6, 0.3), idx):
                spine[k, i] += w * jump
    outline = None
    if config.outline:
        current = _body.body_length(bodies)
        widths = traits.width * np.sqrt(length / np.maximum(current, 1e-9))  # constant volume
        outline = _body.outline(bodies, widths)
        if config.outline_noise > 0:
            outline = outline + rng.standard_normal(outline.shape) * config.outline_noise * length
        outline = outline.astype(np.float32)
    if config.head_first:
        spine = spine[:, ::-1]
    return _Track(index, times, spine, outline, behaviour, traits)


def _simulate_larva(index: int, config: SimulationConfig, clock: np.ndarray,
                    model: BoutModel) -> _Track:
    rng_traits, rng_span, rng_bouts, rng_motion, rng_noise = _streams(config.seed, index, 5)
    traits = draw_traits(rng_traits, config.kinematics, config.body_length_mean,
                         config.body_length_sd, config.width_ratio, config.width_ratio_sd)
    body0 = _initial_body(rng_traits, traits, config)
    i0, i1 = track_span(rng_span, clock, config.duration, config.full_track_fraction,
                        config.median_track_duration, config.track_duration_sigma,
                        config.min_track_duration)
    times = clock[i0:i1 + 1]
    times = times[drop_frames(rng_span, len(times), config.frame_drop_prob)]
    bouts = model.sample(rng_bouts, times[0] - config.warmup, times[-1])
    bodies, behaviour = _play(bouts, times, body0, traits, config, rng_motion)
    return _finish(index, times, bodies, behaviour, traits, config, rng_noise)


def _assemble(tracks: list[_Track], config: SimulationConfig, extra_metadata=None) -> SimulationResult:
    # larva numbers increase with the time of first appearance, as in MWT output
    tracks = sorted(tracks, key=lambda tr: (tr.t[0], tr.index))
    ids = np.arange(1, len(tracks) + 1)
    metadata = {
        "software": SOFTWARE,
        "tracker": "simulated",
        "camera": {"framerate": float(config.frame_rate)},
        "simulation": config.to_dict(),
    }
    if extra_metadata:
        metadata["simulation"].update(extra_metadata)
    run = Run.from_tracks(
        config.resolved_run_id(), ids, [tr.t for tr in tracks], [tr.spine for tr in tracks],
        outlines=[tr.outline for tr in tracks] if config.outline else None,
        metadata=metadata, frame_rate=float(config.frame_rate),
        spine_head="first" if config.head_first else "last", space_unit="mm")
    behaviour = np.concatenate([tr.behaviour for tr in tracks]).astype(np.int8)
    return SimulationResult(run, behaviour, BEHAVIOURS, config, tuple(tr.traits for tr in tracks))


# ---------------------------------------------------------------- public
def simulate(config: SimulationConfig | None = None, **overrides) -> SimulationResult:
    """Simulate a recording. ``overrides`` replace fields of ``config`` (or of the
    default configuration), e.g. ``simulate(n_larvae=5, seed=3)``."""
    config = config if config is not None else SimulationConfig()
    if overrides:
        config = dataclasses.replace(config, **overrides)
    model = config.bout_model()
    clock = _clock(config)
    tracks = [_simulate_larva(i, config, clock, model) for i in range(config.n_larvae)]
    return _assemble(tracks, config)


def simulate_bout(behaviour: str, duration: float = 3.0, config: SimulationConfig | None = None,
                  *, warmup: float = 2.0, warmup_behaviour: str = "run",
                  **overrides) -> SimulationResult:
    """Larvae forced to perform one bout of ``behaviour`` for ``duration`` s.

    Every larva is tracked from the first frame to ``duration`` without dropped frames
    (frame jitter and tracking noise follow ``config``); before ``t = 0`` it performs
    ``warmup`` s of ``warmup_behaviour`` (not written out) so the bout starts from a
    natural posture (``warmup=0``: from a straight body). ``overrides`` replace config
    fields (e.g. ``n_larvae=10, spine_noise=0``). The ground truth is ``behaviour``
    everywhere. Meant for tests, figures and per-behaviour checks.
    """
    if behaviour not in BEHAVIOURS:
        raise ValueError(f"unknown behaviour {behaviour!r}; known: {BEHAVIOURS}")
    if warmup_behaviour not in BEHAVIOURS:
        raise ValueError(f"unknown behaviour {warmup_behaviour!r}; known: {BEHAVIOURS}")
    config = config if config is not None else SimulationConfig(n_larvae=1)
    config = dataclasses.replace(config, duration=float(duration),
                                 **{"camera_drop_prob": 0.0, **overrides})
    clock = _clock(config)
    b = BEHAVIOURS.index(behaviour)
    tracks = []
    for i in range(config.n_larvae):
        rng_traits, _, _, rng_motion, rng_noise = _streams(config.seed, i, 5)
        traits = draw_traits(rng_traits, config.kinematics, config.body_length_mean,
                             config.body_length_sd, config.width_ratio, config.width_ratio_sd)
        body0 = _initial_body(rng_traits, traits, config)
        bouts = [(b, 0.0, float(duration) + 1e-6)]
        if warmup > 0:
            bouts.insert(0, (BEHAVIOURS.index(warmup_behaviour), -float(warmup), 0.0))
        bodies, truth = _play(bouts, clock, body0, traits, config, rng_motion)
        tracks.append(_finish(i, clock, bodies, truth, traits, config, rng_noise))
    return _assemble(tracks, config, {"forced_behaviour": behaviour})


def expected_occupancy(config: SimulationConfig | None = None) -> dict[str, float]:
    """Long-run share of time per behaviour predicted by the bout model of ``config``."""
    config = config if config is not None else SimulationConfig()
    return dict(zip(BEHAVIOURS, (float(x) for x in config.bout_model().occupancy())))


def balanced_weights(config: SimulationConfig | None = None, target=None) -> dict[str, float]:
    """``behaviour_weights`` that bring the occupancy of ``config`` close to ``target``
    (a mapping behaviour → share; default: equal shares). Targets the transition
    structure cannot reach (hunch and roll can only follow run, cast or back, and their
    bouts are short) are approached as far as possible: check with
    :func:`expected_occupancy`."""
    config = config if config is not None else SimulationConfig()
    w = weights_for_occupancy(config.bout_model(), target)
    return {b: float(x) for b, x in zip(BEHAVIOURS, w)}
