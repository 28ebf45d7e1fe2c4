"""Domain randomisation: simulated recordings from wide, documented parameter ranges.

The default :class:`~.core.SimulationConfig` describes one idealised rig (MWT t15,
11 fps, 11-point spines in mm, one body model). A tagger trained only on it learns that
rig. A :class:`DomainSpec` instead draws, for every **recording**, the rig (frame rate,
frame regularity, spine point count, units and scale, outlines or not, tracker noise and
smoothing, track fragmentation) and, for every **larva**, its body and kinematics (size,
crawl speed and stride frequency, peristaltic length oscillation, cast amplitude and speed,
bout durations, hunch and roll shapes), and, for every **bout**, one of several kinematic
variants of its behaviour. Tracker artefacts are added on top: head/tail swaps, spine-point
jitter and temporal smoothing, short track fragments, dropped frames and bursts of them,
pixel units of unknown scale, missing outlines.

Presets (:data:`PRESETS`; ranges in docs/simulation.md):

* ``exploration``: the default models calibrated on the Schleyer free-exploration tracks
  (``benchmarks/domain_gap.py``): free-exploration base rates, larger length
  oscillation, smaller casts; one rig (16 fps), no artefacts beyond the default noise.
* ``wide``: for training. Wide ranges around the calibrated centre, every artefact, frame
  rates from :data:`WIDE_FRAME_RATES` (5-30 fps), 5-, 11- and 12-point spines.
* ``heldout``: for judging taggers, never for training. Ranges and artefacts beyond the
  ``wide`` ones (bigger and smaller larvae, faster and slower crawling, stronger noise,
  8- and 15-point spines, larger pixel scales, variants not in ``wide``) at frame rates
  ``wide`` never uses (:data:`HELDOUT_FRAME_RATES`), at natural base rates.

The default configuration is untouched: :func:`~.core.simulate` never reads this module.
Determinism: a recording depends only on ``(seed, recording index)``, a larva only on its
recording's seed and its index, as in :mod:`.core`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np
from scipy.ndimage import uniform_filter1d

from ..data.tracks import Run
from . import body as _body
from . import core as _core
from .behaviours import KinematicParams, draw_traits
from .calibration import resample_arc
from .timing import drop_frames, track_span
from .transitions import BEHAVIOURS, weights_for_occupancy

Range = tuple[float, float]

#: Frame rates (Hz) of ``wide`` recordings (one drawn per recording).
WIDE_FRAME_RATES = (5.0, 7.5, 10.0, 11.0, 12.5, 15.0, 16.0, 20.0, 25.0, 30.0)
#: Frame rates (Hz) of ``heldout`` recordings: none of them is a ``wide`` rate.
HELDOUT_FRAME_RATES = (6.0, 8.0, 9.0, 14.0, 18.0, 24.0)

#: Free-exploration share of time per behaviour (no stimulus): mostly crawling, casts
#: 10-15 % (bends > 30° take 11 % of frames in the Schleyer tracks), rare back-ups,
#: hunches and rolls almost never.
EXPLORATION_OCCUPANCY = {
    "run": 0.83, "cast": 0.11, "back": 0.015, "hunch": 0.001, "roll": 0.0005, "stop": 0.02,
    "small_motion": 0.0235,
}


# ----------------------------------------------------------- variants
def _replace(kin: KinematicParams, part: str, **changes) -> KinematicParams:
    return dataclasses.replace(kin, **{part: dataclasses.replace(getattr(kin, part), **changes)})


def _scaled(kin: KinematicParams, part: str, **factors) -> KinematicParams:
    sub = getattr(kin, part)
    return _replace(kin, part, **{k: getattr(sub, k) * f for k, f in factors.items()})


#: Kinematic variants per behaviour: name → change of the larva's parameters for one bout.
VARIANTS: dict[str, dict[str, Callable[[KinematicParams], KinematicParams]]] = {
    "run": {
        "peristaltic": lambda k: k,
        "glide": lambda k: _scaled(k, "run", length_amplitude=0.4, head_wiggle_deg=0.5),
        "meander": lambda k: _scaled(k, "run", curvature_sd=2.0, head_wiggle_deg=1.8),
        # held-out only
        "lurch": lambda k: _scaled(k, "run", speed_cv=2.5, length_amplitude=1.4, curvature_sd=1.5),
    },
    "cast": {
        "head_sweep": lambda k: k,
        "body_bend": lambda k: _replace(k, "body", neck_position=0.5, neck_width=0.14),
        "slow_sweep": lambda k: _replace(k, "cast", max_sweep_speed_deg=70.0, extra_sweep_prob=0.55),
        # held-out only
        "front_flick": lambda k: _replace(k, "body", neck_position=0.22, neck_width=0.05),
    },
    "back": {
        "crawl": lambda k: k,
        "wiggly": lambda k: _scaled(k, "back", head_wiggle_deg=2.5, curvature_sd=2.0),
        # held-out only
        "straight": lambda k: _scaled(k, "back", head_wiggle_deg=0.2, curvature_sd=0.3, length_amplitude=1.5),
    },
    "hunch": {
        "head_retraction": lambda k: k,
        "whole_body": lambda k: _replace(k, "hunch", tail_shift=0.12),
        "weak": lambda k: _replace(k, "hunch", contraction=(0.08, 0.14)),
        # held-out only
        "slow_deep": lambda k: _replace(k, "hunch", contraction=(0.22, 0.32), contraction_time=(0.3, 0.45)),
    },
    "roll": {
        "toward_convex": lambda k: k,
        "toward_concave": lambda k: _replace(k, "roll", toward_convex=False),
        "open_c": lambda k: _replace(k, "roll", bend_deg=(70.0, 105.0), roll_frequency=0.8),
        # held-out only
        "tight_c": lambda k: _replace(k, "roll", bend_deg=(160.0, 200.0), lateral_speed=0.35),
    },
    "stop": {
        "still": lambda k: k,
        "drift": lambda k: _replace(k, "stop", drift_sd=0.006),
    },
    "small_motion": {
        "mixed": lambda k: k,
        "head_only": lambda k: _replace(k, "small_motion", length_sd=0.008, shift_sd=0.004, head_wiggle_deg=13.0),
        "stretch": lambda k: _replace(k, "small_motion", head_wiggle_deg=4.0, length_sd=0.045),
        # held-out only
        "twitch": lambda k: _replace(k, "small_motion", head_wiggle_time=0.12, length_time=0.12, shift_sd=0.02),
    },
}

_WIDE_VARIANTS = {
    "run": ("peristaltic", "glide", "meander"), "cast": ("head_sweep", "body_bend", "slow_sweep"),
    "back": ("crawl", "wiggly"), "hunch": ("head_retraction", "whole_body", "weak"),
    "roll": ("toward_convex", "toward_concave", "open_c"), "stop": ("still", "drift"),
    "small_motion": ("mixed", "head_only", "stretch"),
}
_HELDOUT_VARIANTS = {
    "run": ("peristaltic", "lurch"), "cast": ("head_sweep", "front_flick"),
    "back": ("crawl", "straight"), "hunch": ("head_retraction", "slow_deep"),
    "roll": ("toward_convex", "tight_c"), "stop": ("still", "drift"),
    "small_motion": ("mixed", "twitch"),
}


# --------------------------------------------------------------- spec
@dataclass(frozen=True)
class DomainSpec:
    """Parameter ranges of a family of simulated recordings (uniform draws unless said).

    Speeds in body lengths (BL) per second, noise in BL, angles in degrees.
    """

    name: str
    # --- recording (one draw per recording)
    frame_rates: tuple[float, ...] = (16.0,)
    #: Probability that the frames are exactly on the grid (no jitter); else jitter range.
    regular_frames_prob: float = 1.0
    frame_jitter: Range = (0.0, 0.0)
    camera_drop_prob: Range = (0.0, 0.0)
    spine_points: tuple[int, ...] = (11,)
    #: Probability that the spine is stored head first (else tail first).
    head_first_prob: float = 0.5
    outline_prob: float = 1.0
    #: Probability that coordinates are pixels, and the pixel scale (px/mm).
    pixel_prob: float = 0.0
    pixel_scale: Range = (10.0, 10.0)
    spine_noise: Range = (0.0055, 0.0055)
    #: End-point noise as a multiple of the interior noise.
    end_noise_ratio: Range = (1.6, 1.6)
    outlier_prob: Range = (0.002, 0.002)
    #: Slow tracker jitter: the whole spine wanders by an Ornstein-Uhlenbeck offset of
    #: this s.d. (BL, time constant 0.5 s), as segmentation errors that persist over frames.
    slow_jitter: Range = (0.0, 0.0)
    #: Probability that the tracker smooths the spines over time, and the window (frames).
    smoothing_prob: float = 0.0
    smoothing_frames: tuple[int, int] = (3, 5)
    #: Per-larva frame drop probability.
    frame_drop_prob: Range = (0.0, 0.0)
    median_track_duration: Range = (1e9, 1e9)
    full_track_fraction: float = 1.0
    min_track_duration: float = 3.0
    # --- tracker artefacts per track
    #: Probability that a track holds head/tail-swapped stretches, and their duration (s).
    swap_prob: float = 0.0
    swap_duration: Range = (1.0, 5.0)
    #: Probability that a track is broken in two fragments (new larva id after a gap).
    fragment_prob: float = 0.0
    fragment_gap: Range = (0.5, 3.0)
    #: Probability that a track misses a burst of consecutive frames, and its length (s).
    burst_drop_prob: float = 0.0
    burst_duration: Range = (0.2, 0.8)
    # --- larvae (one draw per larva)
    body_length_mm: Range = (3.6, 4.8)
    width_ratio: Range = (0.2, 0.23)
    run_speed: Range = (0.26, 0.36)
    run_stride_frequency: Range = (1.25, 1.5)
    run_length_amplitude: Range = (0.045, 0.055)
    run_head_wiggle_deg: Range = (5.0, 7.0)
    run_curvature_sd: Range = (0.35, 0.5)
    #: Irregularity of the stride rhythm and of the speed within a bout (relative s.d.),
    #: and the time constant (s) of the head wiggle.
    run_frequency_cv: Range = (0.06, 0.06)
    run_speed_cv: Range = (0.12, 0.12)
    run_head_wiggle_time: Range = (0.5, 0.5)
    back_speed: Range = (0.12, 0.18)
    back_stride_frequency: Range = (0.9, 1.1)
    #: Cast amplitude: a larva's sweeps reach a uniform draw in [lo_draw, hi_draw], both
    #: drawn inside this range.
    cast_amplitude_deg: Range = (20.0, 60.0)
    cast_sweep_speed_deg: Range = (120.0, 160.0)
    hunch_contraction: Range = (0.12, 0.25)
    roll_bend_deg: Range = (100.0, 160.0)
    #: Multiplier of the mean bout duration, per behaviour (cast duration, pause lengths...).
    bout_duration_scale: Mapping[str, Range] = field(default_factory=dict)
    #: Target share of time per behaviour (natural base rates); None = default matrix.
    occupancy: Mapping[str, float] | None = None
    #: Kinematic variants per behaviour (names of :data:`VARIANTS`), one drawn per bout.
    variants: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: Name of a preset whose numeric ranges draws must avoid (held-out domains: every
    #: per-larva and per-recording value lies outside the training domain's range).
    avoid: str | None = None

    def to_dict(self) -> dict:
        return _core.SimulationConfig.to_dict(self)  # same plain-JSON conversion


_FULL = {b: (1.0, 1.0) for b in BEHAVIOURS}

PRESETS: dict[str, DomainSpec] = {
    # calibrated with benchmarks/domain_gap.py (docs/generalisation.md): real larvae crawl
    # faster and more of the time, sway more (lateral motion, heading change), oscillate
    # more in length, and their tracker is noisier than the default's
    "exploration": DomainSpec(
        name="exploration", spine_noise=(0.0065, 0.0065), end_noise_ratio=(1.75, 1.75),
        run_speed=(0.28, 0.40), run_head_wiggle_deg=(5.0, 7.0), run_curvature_sd=(0.4, 0.55),
        slow_jitter=(0.012, 0.012),
        run_frequency_cv=(0.25, 0.25), run_speed_cv=(0.2, 0.2), run_head_wiggle_time=(0.25, 0.25),
        cast_amplitude_deg=(25.0, 70.0), bout_duration_scale={"run": (1.8, 2.6)},
        occupancy=EXPLORATION_OCCUPANCY),
    "wide": DomainSpec(
        name="wide", frame_rates=WIDE_FRAME_RATES, regular_frames_prob=0.5,
        frame_jitter=(0.0, 0.08), camera_drop_prob=(0.0, 0.02), spine_points=(5, 11, 12),
        outline_prob=0.7, pixel_prob=0.4, pixel_scale=(5.0, 25.0),
        spine_noise=(0.002, 0.012), end_noise_ratio=(1.0, 2.5), outlier_prob=(0.0, 0.01),
        slow_jitter=(0.0, 0.02),
        smoothing_prob=0.3, smoothing_frames=(2, 5), frame_drop_prob=(0.0, 0.03),
        median_track_duration=(8.0, 120.0), full_track_fraction=0.3, min_track_duration=2.0,
        swap_prob=0.15, swap_duration=(0.5, 6.0), fragment_prob=0.2, fragment_gap=(0.5, 3.0),
        burst_drop_prob=0.2, burst_duration=(0.2, 1.0),
        body_length_mm=(2.8, 5.6), width_ratio=(0.17, 0.25), run_speed=(0.18, 0.48),
        run_stride_frequency=(1.0, 1.8), run_length_amplitude=(0.02, 0.07),
        run_head_wiggle_deg=(4.0, 14.0), run_curvature_sd=(0.3, 1.0),
        run_frequency_cv=(0.04, 0.3), run_speed_cv=(0.08, 0.3), run_head_wiggle_time=(0.15, 0.6),
        back_speed=(0.08, 0.22), back_stride_frequency=(0.7, 1.3),
        cast_amplitude_deg=(18.0, 90.0), cast_sweep_speed_deg=(80.0, 200.0),
        hunch_contraction=(0.08, 0.28), roll_bend_deg=(80.0, 170.0),
        bout_duration_scale={"run": (0.8, 3.0), "cast": (0.6, 1.6), "stop": (0.5, 3.0),
                             "small_motion": (0.6, 1.6), "back": (0.7, 1.4)},
        occupancy=EXPLORATION_OCCUPANCY, variants=_WIDE_VARIANTS),
    "heldout": DomainSpec(
        name="heldout", frame_rates=HELDOUT_FRAME_RATES, regular_frames_prob=0.3,
        frame_jitter=(0.08, 0.12), camera_drop_prob=(0.02, 0.04), spine_points=(8, 15),
        outline_prob=0.5, pixel_prob=0.6, pixel_scale=(25.0, 40.0),
        spine_noise=(0.012, 0.016), end_noise_ratio=(2.5, 3.0), outlier_prob=(0.01, 0.02),
        slow_jitter=(0.02, 0.03),
        smoothing_prob=0.5, smoothing_frames=(5, 7), frame_drop_prob=(0.03, 0.05),
        median_track_duration=(6.0, 40.0), full_track_fraction=0.2, min_track_duration=2.0,
        swap_prob=0.25, swap_duration=(6.0, 10.0), fragment_prob=0.3, fragment_gap=(3.0, 5.0),
        burst_drop_prob=0.3, burst_duration=(1.0, 1.5),
        body_length_mm=(2.2, 6.4), width_ratio=(0.15, 0.27), run_speed=(0.13, 0.55),
        run_stride_frequency=(0.8, 2.1), run_length_amplitude=(0.07, 0.09),
        run_head_wiggle_deg=(14.0, 17.0), run_curvature_sd=(1.0, 1.2),
        run_frequency_cv=(0.3, 0.4), run_speed_cv=(0.3, 0.4), run_head_wiggle_time=(0.6, 0.8),
        back_speed=(0.05, 0.27), back_stride_frequency=(0.55, 1.5),
        cast_amplitude_deg=(12.0, 105.0), cast_sweep_speed_deg=(55.0, 250.0),
        hunch_contraction=(0.05, 0.33), roll_bend_deg=(60.0, 190.0),
        bout_duration_scale={"run": (0.5, 3.5), "cast": (0.4, 2.0), "stop": (0.3, 4.0),
                             "small_motion": (0.4, 2.0), "back": (0.5, 1.7)},
        avoid="wide",
        occupancy={"run": 0.60, "cast": 0.25, "back": 0.04, "hunch": 0.01, "roll": 0.01,
                   "stop": 0.04, "small_motion": 0.05},
        variants=_HELDOUT_VARIANTS),
}


def get_spec(domain: str | DomainSpec) -> DomainSpec:
    if isinstance(domain, DomainSpec):
        return domain
    if domain not in PRESETS:
        raise ValueError(f"unknown simulation domain {domain!r}; choose from default, {', '.join(PRESETS)}")
    return PRESETS[domain]


# ------------------------------------------------------------ drawing
@dataclass(frozen=True)
class Recording:
    """The rig of one recording, drawn from a spec."""

    frame_rate: float
    frame_jitter: float
    camera_drop_prob: float
    spine_points: int
    head_first: bool
    outline: bool
    pixel_scale: float | None       # px per mm, None = mm
    spine_noise: float
    end_noise: float
    slow_jitter: float
    outlier_prob: float
    smoothing_frames: int           # 1 = no smoothing
    frame_drop_prob: float
    median_track_duration: float


def _u(rng: np.random.Generator, r: Range) -> float:
    return float(rng.uniform(r[0], r[1])) if r[1] > r[0] else float(r[0])


#: Ranges a held-out domain may share with the training domain (track lengths: short
#: tracks only would test the window edges rather than the rig).
_NOT_AVOIDED = frozenset({"median_track_duration"})


def _outside(rng: np.random.Generator, r: Range, avoid: Range) -> float:
    """Uniform on ``r`` minus ``avoid`` (the parts of ``r`` below and above it)."""
    low = (r[0], min(r[1], avoid[0]))
    high = (max(r[0], avoid[1]), r[1])
    sizes = np.array([max(low[1] - low[0], 0.0), max(high[1] - high[0], 0.0)])
    if sizes.sum() <= 0:
        return _u(rng, r)
    part = low if rng.random() < sizes[0] / sizes.sum() else high
    return _u(rng, part)


def _draw(rng: np.random.Generator, spec: "DomainSpec", name: str) -> float:
    """A uniform draw of the range ``name`` of ``spec``, outside the avoided spec's range."""
    r = getattr(spec, name)
    if spec.avoid is None or name in _NOT_AVOIDED:
        return _u(rng, r)
    return _outside(rng, r, getattr(get_spec(spec.avoid), name))


def draw_recording(spec: DomainSpec, rng: np.random.Generator, frame_rate: float | None = None) -> Recording:
    rate = float(frame_rate) if frame_rate is not None else float(rng.choice(spec.frame_rates))
    regular = rng.random() < spec.regular_frames_prob
    jitter = 0.0 if regular else _draw(rng, spec, "frame_jitter")
    noise = _draw(rng, spec, "spine_noise")
    smooth = rng.random() < spec.smoothing_prob
    frames = int(rng.integers(spec.smoothing_frames[0], spec.smoothing_frames[1] + 1)) if smooth else 1
    pixels = rng.random() < spec.pixel_prob
    scale = _draw(rng, spec, "pixel_scale")
    return Recording(
        frame_rate=rate, frame_jitter=jitter, camera_drop_prob=_draw(rng, spec, "camera_drop_prob"),
        spine_points=int(rng.choice(spec.spine_points)), head_first=bool(rng.random() < spec.head_first_prob),
        outline=bool(rng.random() < spec.outline_prob), pixel_scale=scale if pixels else None,
        spine_noise=noise, end_noise=noise * _draw(rng, spec, "end_noise_ratio"),
        slow_jitter=_draw(rng, spec, "slow_jitter"),
        outlier_prob=_draw(rng, spec, "outlier_prob"), smoothing_frames=frames,
        frame_drop_prob=_draw(rng, spec, "frame_drop_prob"),
        median_track_duration=_draw(rng, spec, "median_track_duration"))


def draw_larva_config(spec: DomainSpec, base: _core.SimulationConfig,
                      rng: np.random.Generator) -> _core.SimulationConfig:
    """One larva's configuration: body size and kinematics drawn from ``spec``."""
    kin = base.kinematics
    kin = _replace(kin, "run", speed=_draw(rng, spec, "run_speed"), speed_sd_larva=0.0,
                   stride_frequency=_draw(rng, spec, "run_stride_frequency"), stride_frequency_sd_larva=0.0,
                   length_amplitude=_draw(rng, spec, "run_length_amplitude"),
                   head_wiggle_deg=_draw(rng, spec, "run_head_wiggle_deg"),
                   curvature_sd=_draw(rng, spec, "run_curvature_sd"),
                   frequency_cv=_draw(rng, spec, "run_frequency_cv"),
                   speed_cv=_draw(rng, spec, "run_speed_cv"),
                   head_wiggle_time=_draw(rng, spec, "run_head_wiggle_time"))
    kin = _replace(kin, "back", speed=_draw(rng, spec, "back_speed"), speed_sd_larva=0.0,
                   stride_frequency=_draw(rng, spec, "back_stride_frequency"), stride_frequency_sd_larva=0.0)
    lo, hi = sorted((_draw(rng, spec, "cast_amplitude_deg"), _draw(rng, spec, "cast_amplitude_deg")))
    hi = max(hi, lo + 5.0)
    kin = _replace(kin, "cast", amplitude_deg=(float(lo), float(hi)),
                   max_sweep_speed_deg=_draw(rng, spec, "cast_sweep_speed_deg"))
    c = sorted((_draw(rng, spec, "hunch_contraction"), _draw(rng, spec, "hunch_contraction")))
    kin = _replace(kin, "hunch", contraction=(float(c[0]), float(max(c[1], c[0] + 0.02))))
    r = sorted((_draw(rng, spec, "roll_bend_deg"), _draw(rng, spec, "roll_bend_deg")))
    kin = _replace(kin, "roll", bend_deg=(float(r[0]), float(max(r[1], r[0] + 10.0))))
    mean = dict(base.mean_bout_duration)
    for b, rr in spec.bout_duration_scale.items():
        mean[b] = mean[b] * _u(rng, rr)
    return dataclasses.replace(base, kinematics=kin, body_length_mean=_draw(rng, spec, "body_length_mm"),
                               body_length_sd=0.0, width_ratio=_draw(rng, spec, "width_ratio"),
                               width_ratio_sd=0.0, mean_bout_duration=mean)


def occupancy_weights(spec: DomainSpec, base: _core.SimulationConfig) -> dict[str, float] | None:
    """Behaviour weights giving the spec's base rates (on the default bout durations)."""
    if spec.occupancy is None:
        return None
    mean = dict(base.mean_bout_duration)
    for b, r in spec.bout_duration_scale.items():  # at the centre of the duration ranges
        mean[b] = mean[b] * 0.5 * (r[0] + r[1])
    w = weights_for_occupancy(dataclasses.replace(base, mean_bout_duration=mean).bout_model(),
                              spec.occupancy)
    return {b: float(x) for b, x in zip(BEHAVIOURS, w)}


# ---------------------------------------------------------- artefacts
def spines_with_points(bodies: np.ndarray, n_points: int) -> np.ndarray:
    """``(T, n_points, 2)`` tail-first spines equally spaced along the 21-point body."""
    if n_points == _body.N_SPINE_POINTS:
        return _body.spine_points(bodies).copy()
    return resample_arc(bodies, n_points)


def slow_offsets(rng: np.random.Generator, t: np.ndarray, sd: float, tau: float = 0.5) -> np.ndarray:
    """``(len(t), 2)`` Ornstein-Uhlenbeck offsets at the (irregular) times ``t``."""
    out = np.empty((len(t), 2))
    z = rng.standard_normal((len(t), 2))
    out[0] = sd * z[0]
    rho = np.exp(-np.diff(t) / tau)
    for k in range(1, len(t)):
        out[k] = rho[k - 1] * out[k - 1] + sd * np.sqrt(1.0 - rho[k - 1] ** 2) * z[k]
    return out


def _swap_mask(rng: np.random.Generator, t: np.ndarray, spec: DomainSpec) -> np.ndarray:
    """Frames whose spine the tracker stored reversed (head/tail swap stretches)."""
    mask = np.zeros(len(t), dtype=bool)
    if rng.random() >= spec.swap_prob or len(t) < 4:
        return mask
    for _ in range(int(rng.integers(1, 3))):
        d = _u(rng, spec.swap_duration)
        start = rng.uniform(t[0], max(t[-1] - d, t[0]))
        mask ^= (t >= start) & (t < start + d)
    return mask


def _burst_keep(rng: np.random.Generator, t: np.ndarray, spec: DomainSpec) -> np.ndarray:
    keep = np.ones(len(t), dtype=bool)
    if rng.random() < spec.burst_drop_prob and len(t) > 10:
        d = _u(rng, spec.burst_duration)
        start = rng.uniform(t[1], max(t[-2] - d, t[1]))
        keep &= ~((t >= start) & (t < start + d))
        keep[0] = keep[-1] = True
    return keep


def _fragments(rng: np.random.Generator, t: np.ndarray, spec: DomainSpec) -> list[slice]:
    """Row slices of the fragments a track is broken into (one or two)."""
    if rng.random() >= spec.fragment_prob:
        return [slice(0, len(t))]
    gap = _u(rng, spec.fragment_gap)
    if t[-1] - t[0] < 5.0 + gap:  # both fragments keep at least 2 s
        return [slice(0, len(t))]
    cut = rng.uniform(t[0] + 2.0, t[-1] - 2.0 - gap)
    a = int(np.searchsorted(t, cut))
    b = int(np.searchsorted(t, cut + gap))
    if a < 2 or len(t) - b < 2:
        return [slice(0, len(t))]
    return [slice(0, a), slice(b, len(t))]


def _finish(index, times, bodies, behaviour, traits, rec: Recording, spec: DomainSpec,
            rng_noise, rng_art) -> list[_core._Track]:
    """Spines (chosen point count, noise, outliers, smoothing, swaps), outlines, fragments."""
    length = traits.length
    spine = spines_with_points(bodies, rec.spine_points)
    sd = np.full(spine.shape[1], rec.spine_noise * length)
    sd[0] = sd[-1] = rec.end_noise * length
    spine += rng_noise.standard_normal(spine.shape) * sd[None, :, None]
    for k in np.flatnonzero(rng_noise.random(len(times)) < rec.outlier_prob):
        jump = rng_noise.standard_normal(2) * 0.05 * length
        idx = [0, 1, 2] if rng_noise.random() < 0.5 else [-1, -2, -3]
        for w, i in zip((1.0, 0.6, 0.3), idx):
            spine[k, i] += w * jump
    if rec.slow_jitter > 0:
        spine += slow_offsets(rng_noise, times, rec.slow_jitter * length)[:, None, :]
    if rec.smoothing_frames > 1:
        spine = uniform_filter1d(spine, rec.smoothing_frames, axis=0, mode="nearest")
    outline = None
    if rec.outline:
        widths = traits.width * np.sqrt(length / np.maximum(_body.body_length(bodies), 1e-9))
        outline = _body.outline(bodies, widths)
        outline = (outline + rng_noise.standard_normal(outline.shape) * 0.005 * length).astype(np.float32)
    swap = _swap_mask(rng_art, times, spec)
    spine[swap] = spine[swap, ::-1]
    if rec.head_first:
        spine = spine[:, ::-1]
    tracks = []
    for k, part in enumerate(_fragments(rng_art, times, spec)):
        tracks.append(_core._Track(index + 100000 * k, times[part], spine[part],
                                   None if outline is None else outline[part], behaviour[part], traits))
    return tracks


def _larva_streams(seed: int, index: int) -> list[np.random.Generator]:
    ss = np.random.SeedSequence(int(seed) & 0xFFFFFFFFFFFFFFFF, spawn_key=(8, int(index)))
    return [np.random.Generator(np.random.PCG64(c)) for c in ss.spawn(3)]


def _simulate_larva(index: int, spec: DomainSpec, rec: Recording, config: _core.SimulationConfig,
                    clock: np.ndarray) -> list[_core._Track]:
    rng_traits, rng_span, rng_bouts, rng_motion, rng_noise = _core._streams(config.seed, index, 5)
    rng_larva, rng_variant, rng_art = _larva_streams(config.seed, index)
    larva = draw_larva_config(spec, config, rng_larva)
    traits = draw_traits(rng_traits, larva.kinematics, larva.body_length_mean, 0.0,
                         larva.width_ratio, 0.0)
    body0 = _core._initial_body(rng_traits, traits, larva)
    i0, i1 = track_span(rng_span, clock, config.duration, spec.full_track_fraction,
                        rec.median_track_duration, 0.9, spec.min_track_duration)
    times = clock[i0:i1 + 1]
    times = times[drop_frames(rng_span, len(times), rec.frame_drop_prob)]
    times = times[_burst_keep(rng_art, times, spec)]
    bouts = larva.bout_model().sample(rng_bouts, times[0] - config.warmup, times[-1])
    choices = {BEHAVIOURS.index(b): names for b, names in spec.variants.items()}
    cache: dict[str, KinematicParams] = {}

    def bout_params(b: int) -> KinematicParams:
        names = choices.get(b, ())
        if not names:
            return larva.kinematics
        name = str(names[int(rng_variant.integers(len(names)))])
        if name not in cache:
            cache[name] = VARIANTS[BEHAVIOURS[b]][name](larva.kinematics)
        return cache[name]

    bodies, behaviour = _core._play(bouts, times, body0, traits, larva, rng_motion, bout_params)
    return _finish(index, times, bodies, behaviour, traits, rec, spec, rng_noise, rng_art)


def _to_pixels(run: Run, scale: float, rng: np.random.Generator) -> Run:
    """Coordinates in pixels: scaled by ``scale`` px/mm and offset into the image."""
    offset = rng.uniform(200.0, 800.0, size=2)
    spine = run.spine * scale + offset
    outline = None if run.outline is None else (run.outline * scale + offset).astype(np.float32)
    return dataclasses.replace(run, spine=spine, outline=outline, space_unit="px")


def simulate_recording(domain: str | DomainSpec, *, n_larvae: int = 20, duration: float = 60.0,
                       seed: int = 0, index: int = 0, frame_rate: float | None = None,
                       balanced: bool = False) -> _core.SimulationResult:
    """One recording of a domain: its rig drawn from ``(seed, index)``, then its larvae.

    ``frame_rate`` fixes the rate instead of drawing it; ``balanced`` oversamples rare
    behaviours (roughly equal shares) instead of the spec's base rates.
    """
    spec = get_spec(domain)
    ss = np.random.SeedSequence(int(seed) & 0xFFFFFFFFFFFFFFFF, spawn_key=(7, int(index)))
    rng_rec, rng_px = [np.random.Generator(np.random.PCG64(c)) for c in ss.spawn(2)]
    rec = draw_recording(spec, rng_rec, frame_rate)
    rec_seed = int(ss.generate_state(1, np.uint32)[0])
    config = _core.SimulationConfig(
        n_larvae=n_larvae, duration=duration, frame_rate=rec.frame_rate, seed=rec_seed,
        run_id=_core.SimulationConfig(seed=int(seed) * 100 + int(index)).resolved_run_id(),
        frame_jitter=rec.frame_jitter, camera_drop_prob=rec.camera_drop_prob,
        head_first=rec.head_first, outline=rec.outline)
    weights = _core.balanced_weights(config) if balanced else occupancy_weights(spec, config)
    if weights is not None:
        config = dataclasses.replace(config, behaviour_weights=weights)
    clock = _core._clock(config)
    tracks = [tr for i in range(n_larvae) for tr in _simulate_larva(i, spec, rec, config, clock)]
    extra = {"domain": spec.name, "domain_seed": int(seed), "recording_index": int(index),
             "recording": dataclasses.asdict(rec), "domain_spec": spec.to_dict()}
    result = _core._assemble(tracks, config, extra)
    if rec.pixel_scale is not None:
        result = dataclasses.replace(result, run=_to_pixels(result.run, rec.pixel_scale, rng_px))
    return result


def simulate_domain(domain: str | DomainSpec, *, n_larvae: int = 40, duration: float = 120.0,
                    seed: int = 0, n_recordings: int | None = None,
                    frame_rate: float | None = None, balanced: bool = False) -> list[_core.SimulationResult]:
    """Several recordings of a domain (default: one per 8 larvae), ``n_larvae`` in all."""
    if domain == "default":
        return [_core.simulate(n_larvae=n_larvae, duration=duration, seed=seed,
                               **({"frame_rate": frame_rate} if frame_rate else {}))]
    n_rec = n_recordings if n_recordings is not None else max(1, int(np.ceil(n_larvae / 8)))
    sizes = [len(x) for x in np.array_split(np.arange(n_larvae), n_rec) if len(x)]
    return [simulate_recording(domain, n_larvae=k, duration=duration, seed=seed, index=r,
                               frame_rate=frame_rate, balanced=balanced)
            for r, k in enumerate(sizes)]
