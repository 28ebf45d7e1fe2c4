"""Kinematic models of the seven behaviours, one function per behaviour.

Every model has the same signature::

    model(body0, t, duration, larva, params, rng) -> bodies

* ``body0``: ``(21, 2)`` midline at the start of the bout (tail first, mm); it is the
  last body of the previous bout, so the body state (position, heading, bends, length)
  carries over and there are no jumps between bouts;
* ``t``: ``(T,)`` times (s) since the start of the bout, in ``[0, duration]``;
* ``larva``: the larva's :class:`LarvaTraits` (size, preferred speeds);
* ``params``: the :class:`KinematicParams` of the simulation;
* ``rng``: the larva's random generator;

and returns the midlines ``(T, 21, 2)`` at times ``t``. A model must return ``body0``
at ``t = 0`` (continuity).

The models are built from two primitives of :mod:`.body`: :func:`~.body.follow_path`
(the body slides along its own midline; crawling) and :func:`~.body.bend` (joint-angle
changes: head sweeps at the neck, C-shaped bends). Lengths and speeds are given in body
lengths (BL) and scaled by each larva's rest length.

Sources (qualitative descriptions; the numbers are this model's defaults, calibrated
where said on the Schleyer-lab tracks in ``shared/data/schleyer``, otherwise chosen to be
plausible, not quoted from the papers):

* run: peristaltic forward crawling, a contraction wave travelling tail→head once per
  stride (after Heckscher et al. 2012, J Neurosci 32:12460);
* cast: lateral head sweeps with the posterior body still (after Gomez-Marin et al.
  2011, Nat Commun 2:441; Gomez-Marin & Louis 2012, Curr Opin Neurobiol 22:208;
  Gershow et al. 2012, Nat Methods 9:290);
* back: backward crawling, the wave travelling head→tail (after Heckscher et al. 2012);
* hunch: fast head retraction and body shortening, then recovery (after Ohyama et al.
  2013 PLoS One 8:e71706; Ohyama et al. 2015 Nature 520:633; Jovanic et al. 2016 Cell
  167:858);
* roll: C-shaped bend and sideways (lateral) translation (after Hwang et al. 2007 Curr
  Biol 17:2105; Ohyama et al. 2015);
* stop, small_motion: the JBM tagger's classes (after Masson et al. 2020, PLoS Genet
  16:e1008589).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .body import (
    arc_lengths, bend, body_axis, follow_path, head_angle, neck_weights,
    ou_process, ramp, smooth_step, uniform_weights, wrap_angle,
)

#: Step (s) of the fine time grid on which the random time series of a bout are drawn
#: before being interpolated at the frame times.
GRID_STEP = 0.02


# ------------------------------------------------------------ parameters
@dataclass(frozen=True)
class BodyParams:
    """Body-level parameters shared by all behaviours."""

    #: Distance of the neck (where head sweeps bend the body) from the head, as a
    #: fraction of the body length: the anterior ~ third rotates in a cast.
    neck_position: float = 0.3
    #: Spread (standard deviation, fraction of the length) of the neck bend.
    neck_width: float = 0.08
    #: Time constant (s) with which the body length returns to its rest length after a
    #: perturbation (peristalsis cut short, hunch...).
    length_relaxation_time: float = 0.5


@dataclass(frozen=True)
class RunParams:
    """Forward peristaltic crawling.

    Calibrated on the Schleyer-lab tracks (16 fps, 3rd instar, 6 larvae): crawl speed
    1.15-1.6 mm/s ≈ 0.30 BL/s, stride frequency 1.3-1.5 Hz, body-length oscillation
    ≈ 2.5 % s.d., heading change ≈ 5-7° per second of crawling.
    """

    #: Mean crawl speed (BL/s) over larvae, and its s.d. between larvae.
    speed: float = 0.30
    speed_sd_larva: float = 0.04
    #: s.d. of the speed between bouts of one larva (relative).
    speed_sd_bout: float = 0.10
    #: Mean stride frequency (Hz) over larvae, and its s.d. between larvae.
    stride_frequency: float = 1.35
    stride_frequency_sd_larva: float = 0.12
    #: Slow variation of speed and stride frequency within a bout (relative s.d., time
    #: constant in s).
    speed_cv: float = 0.12
    frequency_cv: float = 0.06
    variation_time: float = 1.0
    #: Amplitude of the body-length oscillation (fraction of the length); the phase lag
    #: between tail and head movement is set from it.
    length_amplitude: float = 0.03
    #: Small lateral head movements while crawling: s.d. (degrees) and time constant (s).
    head_wiggle_deg: float = 6.0
    head_wiggle_time: float = 0.5
    #: Path curvature: s.d. (rad per BL) and correlation length (BL); sets how much runs
    #: meander.
    curvature_sd: float = 0.45
    curvature_length: float = 0.5
    #: Acceleration / deceleration time (s) at the start and end of a bout.
    ramp_time: float = 0.3


@dataclass(frozen=True)
class BackParams:
    """Backward crawling (wave head→tail), slower than forward crawling."""

    speed: float = 0.15
    speed_sd_larva: float = 0.03
    speed_sd_bout: float = 0.10
    stride_frequency: float = 1.0
    stride_frequency_sd_larva: float = 0.1
    speed_cv: float = 0.12
    frequency_cv: float = 0.06
    variation_time: float = 1.0
    length_amplitude: float = 0.03
    head_wiggle_deg: float = 4.0
    head_wiggle_time: float = 0.5
    curvature_sd: float = 0.3
    curvature_length: float = 0.5
    ramp_time: float = 0.3


@dataclass(frozen=True)
class CastParams:
    """Head sweeps: the anterior part rotates at the neck, the posterior stays still."""

    #: Range (degrees) of the head angle reached by a sweep (uniform).
    amplitude_deg: tuple[float, float] = (30.0, 80.0)
    #: Probability that a cast bout has one more sweep (to the other side), repeatedly.
    extra_sweep_prob: float = 0.35
    #: Shortest sweep (s); the number of sweeps is limited by the bout duration.
    min_sweep_duration: float = 0.6
    #: Share of a sweep spent moving the head (the rest holds the position).
    sweep_move_fraction: float = 0.6
    #: Highest mean angular speed of the head (degrees/s); larger swings take longer.
    max_sweep_speed_deg: float = 150.0
    #: Probability that the last sweep is "accepted": the head stays on the new side and
    #: the next run follows the new heading; otherwise the head returns toward the axis.
    accept_prob: float = 0.5
    #: Head angle (degrees) left after a rejected cast returns (uniform 0..value).
    residual_deg: float = 12.0
    #: Slow creep of the posterior body during a cast (BL/s, s.d. of a random drift).
    drift_sd: float = 0.01


@dataclass(frozen=True)
class HunchParams:
    """Head retraction with body shortening, then recovery."""

    #: Body shortening at the peak (fraction of the length, uniform range).
    contraction: tuple[float, float] = (0.12, 0.25)
    #: Contraction time (s, uniform range): fast.
    contraction_time: tuple[float, float] = (0.15, 0.3)
    #: Recovery time as a share of the bout duration (uniform range).
    recovery_fraction: tuple[float, float] = (0.35, 0.55)
    #: Backward shift of the tail at the peak (BL).
    tail_shift: float = 0.03


@dataclass(frozen=True)
class RollParams:
    """C-shaped bend with lateral translation (rolling around the body axis)."""

    #: Total bend of the C (degrees, uniform range).
    bend_deg: tuple[float, float] = (100.0, 160.0)
    #: Time (s) to form and release the C.
    bend_time: float = 0.3
    #: Lateral speed (BL/s): about one body width (≈ 0.22 BL) per roll at ~ 1.2 rolls/s.
    lateral_speed: float = 0.25
    #: Rolls per second; modulates the apparent bend and length (the projection of a
    #: rolling body changes with its rotation).
    roll_frequency: float = 1.2
    bend_modulation: float = 0.15
    length_modulation: float = 0.03
    #: Translate toward the convex side of the C (True) or the concave side (False).
    toward_convex: bool = True


@dataclass(frozen=True)
class StopParams:
    """No movement: only the length relaxes to rest (tracking noise is added later)."""

    #: s.d. (BL) of an imperceptible creep, 0 = perfectly still.
    drift_sd: float = 0.0


@dataclass(frozen=True)
class SmallMotionParams:
    """Low-amplitude movements without displacement."""

    #: Head movements: s.d. (degrees) and time constant (s).
    head_wiggle_deg: float = 9.0
    head_wiggle_time: float = 0.3
    #: Body length changes: s.d. (fraction of the length) and time constant (s).
    length_sd: float = 0.025
    length_time: float = 0.3
    #: Small back-and-forth shift along the body axis: s.d. (BL) and time constant (s).
    shift_sd: float = 0.012
    shift_time: float = 0.4


@dataclass(frozen=True)
class KinematicParams:
    """All behaviour-model parameters (see the dataclass of each behaviour)."""

    body: BodyParams = field(default_factory=BodyParams)
    run: RunParams = field(default_factory=RunParams)
    cast: CastParams = field(default_factory=CastParams)
    back: BackParams = field(default_factory=BackParams)
    hunch: HunchParams = field(default_factory=HunchParams)
    roll: RollParams = field(default_factory=RollParams)
    stop: StopParams = field(default_factory=StopParams)
    small_motion: SmallMotionParams = field(default_factory=SmallMotionParams)


@dataclass(frozen=True)
class LarvaTraits:
    """Per-larva constants drawn once (see :func:`draw_traits`)."""

    length: float            # rest body length (mm)
    width: float             # body width at the widest point (mm)
    run_speed: float         # mean forward crawl speed (mm/s)
    run_frequency: float     # forward stride frequency (Hz)
    back_speed: float        # mean backward crawl speed (mm/s)
    back_frequency: float    # backward stride frequency (Hz)


def draw_traits(rng: np.random.Generator, params: KinematicParams, length_mean: float,
                length_sd: float, width_ratio: float, width_ratio_sd: float) -> LarvaTraits:
    """Draw one larva's size and preferred speeds."""
    length = float(np.clip(rng.normal(length_mean, length_sd), 0.5 * length_mean, 1.6 * length_mean))
    width = length * float(np.clip(rng.normal(width_ratio, width_ratio_sd), 0.12, 0.35))
    run, back = params.run, params.back
    run_speed = length * float(max(rng.normal(run.speed, run.speed_sd_larva), 0.3 * run.speed))
    run_freq = float(np.clip(rng.normal(run.stride_frequency, run.stride_frequency_sd_larva),
                             0.5 * run.stride_frequency, 2.0 * run.stride_frequency))
    back_speed = length * float(max(rng.normal(back.speed, back.speed_sd_larva), 0.3 * back.speed))
    back_freq = float(np.clip(rng.normal(back.stride_frequency, back.stride_frequency_sd_larva),
                              0.5 * back.stride_frequency, 2.0 * back.stride_frequency))
    return LarvaTraits(length, width, run_speed, run_freq, back_speed, back_freq)


# --------------------------------------------------------------- helpers
def _grid(duration: float) -> np.ndarray:
    n = max(int(np.ceil(duration / GRID_STEP)), 1)
    return np.linspace(0.0, duration, n + 1)


def _at(t: np.ndarray, grid: np.ndarray, values: np.ndarray) -> np.ndarray:
    return np.interp(t, grid, values)


def _integral(grid: np.ndarray, rate: np.ndarray) -> np.ndarray:
    """Cumulative trapezoidal integral, starting at 0."""
    out = np.zeros_like(rate)
    out[1:] = np.cumsum(0.5 * (rate[1:] + rate[:-1]) * np.diff(grid))
    return out


def _base_length(t: np.ndarray, length0: float, rest: float, tau: float) -> np.ndarray:
    """Length relaxing from ``length0`` to the rest length ``rest``."""
    return rest + (length0 - rest) * np.exp(-t / max(tau, 1e-6))


def _still(body0: np.ndarray, t: np.ndarray, larva: LarvaTraits, params: KinematicParams,
           length: np.ndarray | None = None, shift: np.ndarray | None = None) -> np.ndarray:
    """Body on its own midline, with a prescribed length (default: relaxing to rest),
    its centre shifted along the midline by ``shift`` (mm)."""
    length0 = float(arc_lengths(body0)[-1])
    if length is None:
        length = _base_length(t, length0, larva.length, params.body.length_relaxation_time)
    s_tail = 0.5 * (length0 - length)
    if shift is not None:
        s_tail = s_tail + shift
    return follow_path(body0, s_tail, s_tail + length)


def _neck_bend(bodies: np.ndarray, angle: np.ndarray, params: KinematicParams) -> np.ndarray:
    """Turn the head by ``angle(t)`` (rad) at the neck, the tail staying in place."""
    w = neck_weights(params.body.neck_position, params.body.neck_width, bodies.shape[1])
    return bend(bodies, angle[:, None] * w[None, :], anchor="tail")


def _crawl(body0, t, duration, larva, params, rng, p, speed, frequency, direction):
    """Peristaltic crawling along the midline; ``direction`` +1 forward, -1 backward.

    The leading end (tail when crawling forward, head when backward) moves with
    velocity ``v (1 - cos φ)`` (stop-and-go once per stride, mean ``v``); the other end
    follows with a phase lag ``Δφ``, so the body length oscillates by
    ``(v/ω)(sin φ - sin(φ - Δφ))`` with amplitude ``length_amplitude``.
    """
    grid = _grid(duration)
    n = len(grid)
    length0 = float(arc_lengths(body0)[-1])
    rest = larva.length
    bout_speed = speed * max(1.0 + p.speed_sd_bout * rng.standard_normal(), 0.3)
    omega0 = 2.0 * np.pi * frequency
    omega = omega0 * np.clip(1.0 + ou_process(rng, n, GRID_STEP, p.variation_time, p.frequency_cv), 0.5, 1.5)
    v = bout_speed * np.clip(1.0 + ou_process(rng, n, GRID_STEP, p.variation_time, p.speed_cv), 0.2, 2.0)
    v = v * ramp(grid, duration, p.ramp_time)
    s = np.clip(p.length_amplitude * rest * omega0 / (2.0 * max(bout_speed, 1e-9)), 0.0, 1.0)
    lag = 2.0 * np.arcsin(s)
    phi = np.pi / 2 + lag / 2 + _integral(grid, omega)  # starts where the oscillation is 0
    lead = _integral(grid, v * (1.0 - np.cos(phi)))
    oscillation = (v / omega) * (np.sin(phi) - np.sin(phi - lag))
    length = _base_length(grid, length0, rest, params.body.length_relaxation_time) + oscillation
    if direction > 0:
        s_tail = lead
        s_head = lead + length
    else:
        s_head = length0 - lead
        s_tail = s_head - length
    bodies = follow_path(body0, _at(t, grid, s_tail), _at(t, grid, s_head), rng=rng,
                         curvature_sd=p.curvature_sd / rest,
                         curvature_length=p.curvature_length * rest)
    wiggle = ou_process(rng, n, GRID_STEP, p.head_wiggle_time, np.radians(p.head_wiggle_deg))
    wiggle *= ramp(grid, duration, p.ramp_time)
    return _neck_bend(bodies, _at(t, grid, wiggle), params)


# ---------------------------------------------------------------- models
def run(body0, t, duration, larva, params, rng):
    """Forward peristaltic crawl: the tail follows the head's path."""
    return _crawl(body0, t, duration, larva, params, rng, params.run,
                  larva.run_speed, larva.run_frequency, +1)


def back(body0, t, duration, larva, params, rng):
    """Backward crawl: the wave and the movement go head→tail, the head follows the tail."""
    return _crawl(body0, t, duration, larva, params, rng, params.back,
                  larva.back_speed, larva.back_frequency, -1)


def cast(body0, t, duration, larva, params, rng):
    """One or more head sweeps to alternating sides; the posterior body stays still."""
    p = params.cast
    n_max = max(int(duration // p.min_sweep_duration), 1)
    n = 1
    while n < n_max and rng.random() < p.extra_sweep_prob:
        n += 1
    # every sweep lasts at least min_sweep_duration (when the bout is long enough)
    floor = min(p.min_sweep_duration, duration / n)
    spans = floor + (duration - n * floor) * (rng.dirichlet(np.full(n, 4.0)) if n > 1 else np.ones(1))
    edges = np.concatenate([[0.0], np.cumsum(spans)])
    edges[-1] = duration
    side = 1.0 if rng.random() < 0.5 else -1.0
    start = float(head_angle(body0, params.body.neck_position))
    amplitudes = np.radians(rng.uniform(p.amplitude_deg[0], p.amplitude_deg[1], n))
    accept = rng.random() < p.accept_prob
    grid = _grid(duration)
    angle = np.full_like(grid, start)
    previous = start
    speed = np.radians(p.max_sweep_speed_deg)
    # the neck bend is spread over a few joints: find how much of it the head angle shows
    probe = 0.5
    shown = head_angle(_neck_bend(body0[None], np.array([probe]), params)[0], params.body.neck_position)
    gain = float(np.clip(wrap_angle(shown - start) / probe, 0.5, 1.5))
    for k in range(n):
        a, b = edges[k], edges[k + 1]
        span = b - a
        last_rejected = k == n - 1 and not accept
        # moving time: a share of the sweep, longer for large swings, within the sweep
        room = (0.4 if last_rejected else 1.0) * span
        target = side * amplitudes[k]
        change = target - previous
        move = min(max(p.sweep_move_fraction * span, abs(change) / speed), room)
        if abs(change) > speed * move:  # not enough time: a smaller sweep
            target = previous + np.sign(change) * speed * move
        prof = previous + (target - previous) * smooth_step((grid - a) / move)
        if last_rejected:
            # hold briefly, then return toward the axis
            back_to = side * np.radians(rng.uniform(0.0, p.residual_deg))
            ret_start = a + 0.5 * span
            prof = prof + (back_to - target) * smooth_step((grid - ret_start) / (b - ret_start))
        sel = grid >= a
        angle[sel] = prof[sel]
        previous = target
        side = -side
    length0 = float(arc_lengths(body0)[-1])
    length = _base_length(t, length0, larva.length, params.body.length_relaxation_time)
    shift = None
    if p.drift_sd > 0:
        drift = ou_process(rng, len(grid), GRID_STEP, 1.0, p.drift_sd * larva.length, start=0.0)
        shift = _at(t, grid, np.cumsum(drift) * GRID_STEP)
    bodies = _still(body0, t, larva, params, length=length, shift=shift)
    return _neck_bend(bodies, _at(t, grid, (angle - start) / gain), params)


def hunch(body0, t, duration, larva, params, rng):
    """Fast head retraction along the midline (body shortening), hold, recovery."""
    p = params.hunch
    contraction = rng.uniform(*p.contraction)
    t_in = min(rng.uniform(*p.contraction_time), 0.3 * duration)
    t_out = rng.uniform(*p.recovery_fraction) * duration
    g = smooth_step(t / t_in) * smooth_step((duration - t) / t_out)
    length0 = float(arc_lengths(body0)[-1])
    base = _base_length(t, length0, larva.length, params.body.length_relaxation_time)
    length = base * (1.0 - contraction * g)
    s_tail = -p.tail_shift * larva.length * g  # the tail is pushed back a little
    # the head retracts along its own path: the tail stays (almost) put
    return follow_path(body0, s_tail, s_tail + length)


def roll(body0, t, duration, larva, params, rng):
    """C-shaped bend and lateral translation perpendicular to the body axis."""
    p = params.roll
    sign = 1.0 if rng.random() < 0.5 else -1.0
    total = sign * np.radians(rng.uniform(*p.bend_deg))
    phase = rng.uniform(0.0, 2.0 * np.pi)
    env = ramp(t, duration, p.bend_time)
    wobble = np.sin(2.0 * np.pi * p.roll_frequency * t + phase)
    length0 = float(arc_lengths(body0)[-1])
    base = _base_length(t, length0, larva.length, params.body.length_relaxation_time)
    pulse = 0.5 * (1.0 - np.cos(2.0 * np.pi * p.roll_frequency * t))
    length = base * (1.0 - p.length_modulation * env * pulse)
    bodies = _still(body0, t, larva, params, length=length)
    angle = total * env * (1.0 + p.bend_modulation * wobble)
    bodies = bend(bodies, angle[:, None] * uniform_weights(bodies.shape[1])[None, :], anchor="centroid")
    axis = body_axis(body0)
    left = np.array([-axis[1], axis[0]])
    # a C bent counter-clockwise (sign > 0) is convex on its right
    lateral = (-sign if p.toward_convex else sign) * left
    grid = _grid(duration)
    shift = _integral(grid, p.lateral_speed * larva.length * ramp(grid, duration, p.bend_time))
    return bodies + _at(t, grid, shift)[:, None, None] * lateral[None, None, :]


def stop(body0, t, duration, larva, params, rng):
    """Still (the length relaxes to rest); tracking noise is added afterwards."""
    shift = None
    if params.stop.drift_sd > 0:
        grid = _grid(duration)
        shift = _at(t, grid, ou_process(rng, len(grid), GRID_STEP, 1.0,
                                        params.stop.drift_sd * larva.length, start=0.0))
    return _still(body0, t, larva, params, shift=shift)


def small_motion(body0, t, duration, larva, params, rng):
    """Small head movements, small length changes and shifts, no net displacement."""
    p = params.small_motion
    grid = _grid(duration)
    n = len(grid)
    env = ramp(grid, duration, min(0.3, duration / 3))
    wiggle = ou_process(rng, n, GRID_STEP, p.head_wiggle_time, np.radians(p.head_wiggle_deg)) * env
    stretch = ou_process(rng, n, GRID_STEP, p.length_time, p.length_sd) * env
    shift = ou_process(rng, n, GRID_STEP, p.shift_time, p.shift_sd * larva.length) * env
    length0 = float(arc_lengths(body0)[-1])
    base = _base_length(t, length0, larva.length, params.body.length_relaxation_time)
    bodies = _still(body0, t, larva, params, length=base * (1.0 + _at(t, grid, stretch)),
                    shift=_at(t, grid, shift))
    return _neck_bend(bodies, _at(t, grid, wiggle), params)


#: The model of each behaviour, by name.
MODELS: dict[str, Callable] = {
    "run": run, "cast": cast, "back": back, "hunch": hunch, "roll": roll, "stop": stop,
    "small_motion": small_motion,
}
