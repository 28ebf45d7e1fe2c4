"""The larva simulator: determinism, data-model validity, timing, and kinematic checks
that each behaviour model does what its name says."""

from __future__ import annotations

import json

import numpy as np
import pytest

from taggingbackends.data.tracks import Run
from taggingbackends.simulate import (
    BEHAVIOURS, SimulationConfig, balanced_weights, expected_occupancy, simulate,
    simulate_bout,
)
from taggingbackends.simulate.body import bend, follow_path, outline, straight_body


def small(**kw) -> SimulationConfig:
    base = dict(n_larvae=6, duration=20.0, frame_rate=11.0, seed=1)
    base.update(kw)
    return SimulationConfig(**base)


# ------------------------------------------------------------ helpers
def tail_first(run: Run, spine: np.ndarray) -> np.ndarray:
    return spine[:, ::-1] if run.spine_head == "first" else spine


def lengths(spine: np.ndarray) -> np.ndarray:
    return np.linalg.norm(np.diff(spine, axis=1), axis=2).sum(axis=1)


def per_track(result):
    """(track, tail-first spine, rest length) for each larva."""
    run = result.run
    for i, track in enumerate(run):
        yield track, tail_first(run, track.spine), result.traits[i].length


def head_angle_deg(s: np.ndarray) -> np.ndarray:
    """Angle between the head part (point 7→10) and the posterior axis (0→5)."""
    post = s[:, 5] - s[:, 0]
    head = s[:, 10] - s[:, 7]
    cross = post[:, 0] * head[:, 1] - post[:, 1] * head[:, 0]
    return np.degrees(np.abs(np.arctan2(cross, (post * head).sum(axis=1))))


def bout(behaviour, duration, n=8, seed=3, **kw):
    return simulate_bout(behaviour, duration, SimulationConfig(n_larvae=n, frame_rate=16.0, seed=seed), **kw)


# ------------------------------------------------------ API and validity
def test_api_shape_and_run_validity():
    result = simulate(small())
    run = result.run
    assert result.names == BEHAVIOURS == ("run", "cast", "back", "hunch", "roll", "stop", "small_motion")
    assert isinstance(run, Run)
    run.validate()
    assert run.n_tracks == 6 and run.n_points == 11
    assert run.spine_head == "first" and run.source_format is None and run.space_unit == "mm"
    assert run.id == "20260101_120100"  # seed 1
    assert result.behaviour.shape == (run.n_steps,) and result.behaviour.dtype == np.int8
    assert result.behaviour.min() >= 0 and result.behaviour.max() < len(BEHAVIOURS)
    assert run.outline is not None and run.outline.shape[:2] == (run.n_steps, 40)
    assert not np.isnan(run.spine).any() and not np.isnan(run.outline).any()
    assert run.frame_rate == 11.0
    # strictly increasing times within each track, millisecond timestamps
    for track in run:
        assert np.all(np.diff(track.t) > 0)
        assert np.allclose(track.t, np.round(track.t, 3))
    assert run.t.min() > 0 and run.t.max() <= 20.0
    # metadata carries the parameters and is JSON-compatible
    meta = json.loads(json.dumps(run.metadata))
    assert meta["simulation"]["seed"] == 1 and meta["simulation"]["n_larvae"] == 6
    assert meta["simulation"]["kinematics"]["run"]["stride_frequency"] > 0
    assert len(result.labels()) == run.n_steps


def test_same_seed_identical_different_seed_differs():
    a, b = simulate(small()), simulate(small())
    assert np.array_equal(a.run.t, b.run.t)
    assert np.array_equal(a.run.spine, b.run.spine)
    assert np.array_equal(a.run.outline, b.run.outline, equal_nan=True)
    assert np.array_equal(a.behaviour, b.behaviour)
    c = simulate(small(seed=2))
    assert c.run.n_steps != a.run.n_steps or not np.array_equal(c.run.spine, a.run.spine)
    assert c.run.id != a.run.id


def test_larvae_do_not_depend_on_how_many_are_simulated():
    few, many = simulate(small(n_larvae=3)), simulate(small(n_larvae=7))
    for track in few.run:
        matches = [t for t in many.run if len(t) == len(track) and np.array_equal(t.t, track.t)
                   and np.array_equal(t.spine, track.spine)]
        assert len(matches) == 1


def test_head_first_flag_reverses_spines():
    head = simulate(small(n_larvae=2, head_first=True))
    tail = simulate(small(n_larvae=2, head_first=False))
    assert tail.run.spine_head == "last"
    assert np.array_equal(head.run.spine, tail.run.spine[:, ::-1])
    assert np.array_equal(head.behaviour, tail.behaviour)


def test_config_validation_and_overrides():
    with pytest.raises(ValueError):
        SimulationConfig(n_larvae=0)
    with pytest.raises(ValueError):
        SimulationConfig(frame_drop_prob=0.9)
    with pytest.raises(ValueError):
        SimulationConfig(behaviour_weights={"fly": 2.0})
    with pytest.raises(ValueError):
        simulate_bout("fly")
    r = simulate(small(), n_larvae=2, outline=False)
    assert r.run.n_tracks == 2 and r.run.outline is None


# ------------------------------------------------------------- timing
def test_frame_jitter_drops_and_tracks_of_various_lengths():
    result = simulate(SimulationConfig(n_larvae=60, duration=120.0, frame_rate=11.0, seed=4))
    run = result.run
    dt = np.concatenate([np.diff(t.t) for t in run])
    nominal = 1.0 / 11.0
    assert abs(np.median(dt) - nominal) < 0.005
    regular = dt[dt < 1.5 * nominal]
    assert regular.std() > 0.002  # irregular intervals (jitter)
    assert 0.07 < np.percentile(regular, 2) and np.percentile(regular, 98) < 0.11
    assert np.any(dt > 1.7 * nominal)  # dropped frames: timestamps skip
    # all larvae share one camera clock
    clock = np.unique(run.t)
    assert np.all(np.isin(run.t, clock)) and len(clock) < run.n_steps
    spans = np.array([t.t[-1] - t.t[0] for t in run])
    starts = np.array([t.t[0] for t in run])
    assert np.sum(spans > 110) >= 2  # some tracked for the whole recording
    assert np.sum(spans < 40) >= 10  # others for short pieces
    assert np.sum(starts > 20) >= 5  # larvae entering later
    # larva numbers follow the order of appearance
    assert np.all(np.diff(starts) >= 0)


def test_zero_jitter_puts_frames_on_the_grid():
    result = simulate(small(frame_jitter=0.0, n_larvae=4, duration=30.0))
    frames = result.run.t * 11.0
    assert np.abs(frames - np.round(frames)).max() < 0.02  # within ms rounding
    steps = np.concatenate([np.diff(t.t) for t in result.run]) * 11.0
    assert np.abs(steps - np.round(steps)).max() < 0.03 and steps.max() > 1.5  # skips


# ------------------------------------------------------- behaviour mix
def test_default_frequencies_are_realistic():
    occ = expected_occupancy()
    assert occ["run"] > 0.55 and 0.15 < occ["cast"] < 0.35
    assert occ["run"] > occ["cast"] > occ["small_motion"] > max(occ["hunch"], occ["roll"])
    assert occ["back"] > occ["hunch"] and occ["stop"] > occ["roll"]
    assert occ["hunch"] < 0.005 and occ["roll"] < 0.005
    measured = simulate(SimulationConfig(n_larvae=40, duration=120.0, seed=2)).occupancy()
    assert abs(measured["run"] - occ["run"]) < 0.08
    assert abs(measured["cast"] - occ["cast"]) < 0.08


def test_weights_oversample_rare_behaviours_and_every_behaviour_appears():
    weights = balanced_weights()
    config = SimulationConfig(n_larvae=30, duration=60.0, seed=5, behaviour_weights=weights)
    predicted = expected_occupancy(config)
    assert min(predicted.values()) > 0.05
    result = simulate(config)
    counts = np.bincount(result.behaviour, minlength=len(BEHAVIOURS))
    assert np.all(counts > 0), dict(zip(BEHAVIOURS, counts))
    # weights 0 remove a behaviour
    none = simulate(small(behaviour_weights={"back": 0.0, "hunch": 0.0, "roll": 0.0}))
    assert not np.isin(none.behaviour, [2, 3, 4]).any()


def test_bouts_are_contiguous_and_transitions_smooth():
    config = small(n_larvae=20, duration=60.0, frame_rate=16.0, spine_noise=0.0, spine_end_noise=0.0,
                   outlier_prob=0.0, outline_noise=0.0)
    result = simulate(config)
    run = result.run
    for i, (track, s, rest) in enumerate(per_track(result)):
        speed = np.linalg.norm(np.diff(s, axis=0), axis=2).max(axis=1) / np.diff(track.t) / rest
        assert speed.max() < 3.0  # body lengths per second: no teleports
        b = result.behaviour[run.offsets[i]:run.offsets[i + 1]]
        assert np.all(lengths(s) / rest > 0.7) and np.all(lengths(s) / rest < 1.2)
        assert len(np.unique(b)) >= 1


# ------------------------------------------------- kinematics per model
def test_run_moves_forward_with_peristaltic_length_oscillation():
    result = bout("run", 8.0)
    for i, (track, s, rest) in enumerate(per_track(result)):
        axis = s[0, -1] - s[0, 0]
        axis /= np.linalg.norm(axis)
        disp = s[-1, 5] - s[0, 5]
        speed = disp @ axis / rest / (track.t[-1] - track.t[0])
        assert 0.12 < speed < 0.6, speed  # BL/s, forward (toward the head)
        L = lengths(s)
        assert 0.01 < L.std() / rest < 0.06
        # body length oscillates at the stride frequency (~1-1.6 Hz)
        fs = 16.0
        x = np.interp(np.arange(track.t[0], track.t[-1], 1 / fs), track.t, L)
        x = (x - np.polyval(np.polyfit(np.arange(len(x)), x, 1), np.arange(len(x)))) * np.hanning(len(x))
        f = np.fft.rfftfreq(len(x), 1 / fs)
        p = np.abs(np.fft.rfft(x)) ** 2
        band = (f > 0.4) & (f < 4.0)
        peak = f[band][np.argmax(p[band])]
        assert abs(peak - result.traits[i].run_frequency) < 0.35, (peak, result.traits[i].run_frequency)
        assert 0.8 < peak < 2.0


def test_tail_follows_the_head_path_in_runs():
    result = bout("run", 12.0, n=4, spine_noise=0.0, spine_end_noise=0.0, outlier_prob=0.0)
    for track, s, rest in per_track(result):
        # where the tail is at the end, the body went before: close to the path of the
        # midpoint (the head itself wiggles a little around the path)
        for k in range(len(s) // 2, len(s), 10):
            gap = np.linalg.norm(s[:k, 5] - s[k, 0], axis=1).min()
            assert gap < 0.04 * rest


def test_back_moves_toward_the_tail_slower_than_run():
    back = bout("back", 6.0)
    run = bout("run", 6.0)
    speeds = []
    for result in (back, run):
        v = []
        for track, s, rest in per_track(result):
            axis = s[0, -1] - s[0, 0]
            axis /= np.linalg.norm(axis)
            v.append((s[-1, 5] - s[0, 5]) @ axis / rest / (track.t[-1] - track.t[0]))
        speeds.append(np.array(v))
    assert np.all(speeds[0] < -0.04)  # backwards
    assert np.median(-speeds[0]) < np.median(speeds[1])


def test_cast_turns_the_head_with_little_displacement():
    result = bout("cast", 2.5)
    for track, s, rest in per_track(result):
        assert head_angle_deg(s).max() > 30.0
        centroid = s.mean(axis=1)
        posterior = s[:, :5].mean(axis=1)
        assert np.linalg.norm(centroid[-1] - centroid[0]) < 0.15 * rest
        assert np.linalg.norm(posterior - posterior[0], axis=1).max() < 0.08 * rest


def test_hunch_shortens_then_recovers():
    result = bout("hunch", 1.2)
    for track, s, rest in per_track(result):
        L = lengths(s) / rest
        assert L.min() < 0.9
        assert L[-1] > 0.93
        k = int(np.argmin(L))
        assert 0 < k < len(L) - 1
        tail = s[:, 0]
        head = s[:, -1]
        # the head retracts (moves much more than the tail)
        assert np.linalg.norm(head[k] - head[0]) > 2 * np.linalg.norm(tail[k] - tail[0])


def test_roll_bends_and_translates_sideways():
    result = bout("roll", 2.5)
    for track, s, rest in per_track(result):
        axis = s[0, -1] - s[0, 0]
        axis /= np.linalg.norm(axis)
        normal = np.array([-axis[1], axis[0]])
        disp = s[-1].mean(axis=0) - s[0].mean(axis=0)
        lateral, axial = abs(disp @ normal) / rest, abs(disp @ axis) / rest
        assert lateral > 0.25 and lateral > 3 * axial
        middle = s[len(s) // 4: 3 * len(s) // 4]
        chord = np.linalg.norm(middle[:, -1] - middle[:, 0], axis=1)
        assert np.median(chord / lengths(middle)) < 0.92  # C shape


def test_stop_is_still_and_small_motion_is_between_stop_and_run():
    def stats(result):
        disp, motion = [], []
        for track, s, rest in per_track(result):
            disp.append(np.linalg.norm(s[-1].mean(axis=0) - s[0].mean(axis=0)) / rest)
            motion.append(np.abs(s - s.mean(axis=0)).mean() / rest)
        return np.median(disp), np.median(motion)

    stop_d, stop_m = stats(bout("stop", 3.0))
    small_d, small_m = stats(bout("small_motion", 3.0))
    run_d, run_m = stats(bout("run", 3.0))
    assert stop_d < 0.02  # only noise
    assert small_d < 0.05 and small_d < 0.2 * run_d
    assert stop_m < small_m < run_m


def test_stop_without_noise_does_not_move():
    result = bout("stop", 2.0, n=3, spine_noise=0.0, spine_end_noise=0.0, outlier_prob=0.0)
    for track, s, rest in per_track(result):
        assert np.abs(s[-1] - s[-2]).max() < 0.005 * rest


# ----------------------------------------------------------- geometry
def test_outline_is_a_closed_ccw_contour_around_the_spine():
    result = bout("run", 1.0, n=2)
    run = result.run
    for i, track in enumerate(run):
        o = track.outline.astype(float)
        x, y = o[:, :, 0], o[:, :, 1]
        area = 0.5 * (x * np.roll(y, -1, axis=1) - np.roll(x, -1, axis=1) * y).sum(axis=1)
        assert np.all(area > 0)  # counter-clockwise
        rest = result.traits[i].length
        width = area / rest
        assert np.all((0.1 * rest < width) & (width < 0.3 * rest))
        assert 30 <= o.shape[1] <= 50


def test_geometry_primitives():
    body = straight_body(4.0, heading=0.0)
    moved = follow_path(body, np.array([0.0, 1.0]), np.array([4.0, 5.0]))
    assert np.allclose(moved[0], body)
    assert np.allclose(moved[1], body + [1.0, 0.0])
    bent = bend(body[None], np.full((1, 19), np.radians(5.0)), anchor="tail")
    assert np.allclose(bent[0, 0], body[0])
    assert np.allclose(np.linalg.norm(np.diff(bent[0], axis=0), axis=1), 0.2)
    contour = outline(body[None], np.array([0.8]))
    assert contour.shape == (1, 40, 2)
    assert np.isclose(contour[0, :, 1].max() - contour[0, :, 1].min(), 0.8, atol=0.01)
