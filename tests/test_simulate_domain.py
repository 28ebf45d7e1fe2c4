"""Domain-randomised simulator (simulate/domain.py) and the kinematic statistics
(simulate/calibration.py): the default is unchanged, every artefact a domain claims is
there, frame rates are honoured, held-out draws avoid the training ranges, and the
statistics recover known kinematics."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest

from taggingbackends.cli import main as cli_main
from taggingbackends.data.labels import Labels
from taggingbackends.formats import load
from taggingbackends.simulate import SimulationConfig, simulate
from taggingbackends.simulate.calibration import (
    FEATURE_NAMES, Segment, body_bend, frame_stats, head_angle, kinematics, resample_arc,
    stride, track_segments, window_features,
)
from taggingbackends.simulate.domain import (
    HELDOUT_FRAME_RATES, PRESETS, VARIANTS, WIDE_FRAME_RATES, draw_larva_config,
    simulate_domain, simulate_recording,
)

WIDE = PRESETS["wide"]


def wide(**changes):
    return dataclasses.replace(WIDE, **changes)


def median_length(spine: np.ndarray) -> float:
    return float(np.median(np.linalg.norm(np.diff(spine, axis=1), axis=2).sum(axis=1)))


# ------------------------------------------------------------ default
def test_default_configuration_is_bit_identical_to_before():
    """Hash of the default simulator's output, recorded before the domain options existed
    (coordinates rounded to 1e-6 mm so that the last bit of libm does not matter)."""
    r = simulate(SimulationConfig(n_larvae=5, duration=20.0, seed=4))
    digest = hashlib.sha256(
        np.round(r.run.spine, 6).tobytes() + np.round(r.run.outline.astype(np.float64), 4).tobytes()
        + r.behaviour.tobytes() + np.round(r.run.t, 3).tobytes()).hexdigest()
    assert r.run.n_steps == 595
    assert digest == "4c5666749d135086bc154d4369747ed0c73571d6fb65c9ff03dedb7b9a9be4b4"
    assert "domain" not in r.run.metadata["simulation"]


# ------------------------------------------------------------- domains
def test_wide_recordings_vary_rig_within_the_documented_ranges():
    results = simulate_domain("wide", n_larvae=36, duration=12.0, seed=5, n_recordings=12)
    rates = {r.run.frame_rate for r in results}
    assert rates <= set(WIDE_FRAME_RATES) and len(rates) >= 4
    assert {r.run.n_points for r in results} == {5, 11, 12}
    assert {r.run.space_unit for r in results} == {"mm", "px"}
    assert any(r.run.outline is None for r in results) and any(r.run.outline is not None for r in results)
    assert {r.run.spine_head for r in results} == {"first", "last"}
    for r in results:
        r.run.validate()
        assert len(r.behaviour) == r.run.n_steps
        lengths = [median_length(tr.spine) for tr in r.run]
        if r.run.space_unit == "mm":
            assert 2.0 < min(lengths) and max(lengths) < 6.5
        else:  # 5-25 px/mm: far from mm, scale unknown to the reader
            assert min(lengths) > 10.0


def test_frame_rates_are_honoured():
    for rate in (5.0, 7.5, 30.0):
        r = simulate_recording(wide(regular_frames_prob=1.0, frame_drop_prob=(0, 0), burst_drop_prob=0.0,
                                    camera_drop_prob=(0, 0)),
                               n_larvae=2, duration=10.0, seed=1, frame_rate=rate)
        assert r.run.frame_rate == rate
        for tr in r.run:
            assert np.allclose(np.diff(tr.t), 1.0 / rate, atol=1.5e-3)
    assert not set(HELDOUT_FRAME_RATES) & set(WIDE_FRAME_RATES)
    held = simulate_domain("heldout", n_larvae=12, duration=8.0, seed=2, n_recordings=6)
    assert {r.run.frame_rate for r in held} <= set(HELDOUT_FRAME_RATES)
    assert {r.run.n_points for r in held} <= {8, 15}


def test_same_seed_same_recording_different_seed_differs():
    a = simulate_recording("wide", n_larvae=3, duration=8.0, seed=9)
    b = simulate_recording("wide", n_larvae=3, duration=8.0, seed=9)
    c = simulate_recording("wide", n_larvae=3, duration=8.0, seed=10)
    assert np.array_equal(a.run.spine, b.run.spine) and np.array_equal(a.behaviour, b.behaviour)
    assert a.run.n_steps != c.run.n_steps or not np.array_equal(a.run.spine, c.run.spine)


def _rig(**changes):
    """A wide rig at 16 fps, mm, 11 points, no artefact unless ``changes`` asks for it."""
    base = dict(frame_rates=(16.0,), regular_frames_prob=1.0, camera_drop_prob=(0, 0), spine_points=(11,),
                head_first_prob=0.0, pixel_prob=0.0, outline_prob=1.0, outlier_prob=(0, 0),
                smoothing_prob=0.0, frame_drop_prob=(0, 0), median_track_duration=(1e9, 1e9),
                full_track_fraction=1.0, swap_prob=0.0, fragment_prob=0.0, burst_drop_prob=0.0,
                spine_noise=(0.005, 0.005), end_noise_ratio=(1.0, 1.0))
    base.update(changes)
    return wide(**base)


def _max_end_jump(run) -> float:
    """Largest frame-to-frame jump of the first spine point, in body lengths."""
    return max(float(np.max(np.linalg.norm(np.diff(tr.spine[:, 0], axis=0), axis=1)) / median_length(tr.spine))
               for tr in run)


def test_head_tail_swaps_are_there_when_claimed():
    clean = simulate_recording(_rig(), n_larvae=4, duration=20.0, seed=3)
    swapped = simulate_recording(_rig(swap_prob=1.0, swap_duration=(2.0, 4.0)), n_larvae=4, duration=20.0, seed=3)
    assert _max_end_jump(clean.run) < 0.3
    assert _max_end_jump(swapped.run) > 0.7  # the "tail" point jumps to the other end
    assert np.array_equal(clean.behaviour, swapped.behaviour)  # ground truth unchanged


def test_fragments_bursts_smoothing_pixels_and_missing_outlines():
    base = simulate_recording(_rig(), n_larvae=4, duration=30.0, seed=4)
    frag = simulate_recording(_rig(fragment_prob=1.0, fragment_gap=(1.0, 2.0)), n_larvae=4, duration=30.0, seed=4)
    assert base.run.n_tracks == 4 and frag.run.n_tracks == 8
    assert frag.run.n_steps < base.run.n_steps
    burst = simulate_recording(_rig(burst_drop_prob=1.0, burst_duration=(0.5, 0.6)), n_larvae=4,
                               duration=30.0, seed=4)
    assert all(np.diff(tr.t).max() > 0.45 for tr in burst.run)
    smooth = simulate_recording(_rig(smoothing_prob=1.0, smoothing_frames=(5, 5)), n_larvae=4,
                                duration=30.0, seed=4)

    def roughness(run):
        return np.median([np.abs(np.diff(tr.spine[:, 5], n=2, axis=0)).mean() for tr in run])
    assert roughness(smooth.run) < 0.6 * roughness(base.run)
    px = simulate_recording(_rig(pixel_prob=1.0, pixel_scale=(10.0, 10.0), outline_prob=0.0),
                            n_larvae=4, duration=30.0, seed=4)
    assert px.run.space_unit == "px" and px.run.outline is None
    ratio = median_length(px.run.spine) / median_length(base.run.spine)
    assert ratio == pytest.approx(10.0, rel=0.02)
    five = simulate_recording(_rig(spine_points=(5,)), n_larvae=2, duration=5.0, seed=4)
    twelve = simulate_recording(_rig(spine_points=(12,)), n_larvae=2, duration=5.0, seed=4)
    assert five.run.n_points == 5 and twelve.run.n_points == 12


def test_variants_change_the_parameters_and_heldout_avoids_wide_ranges():
    kin = SimulationConfig().kinematics
    for behaviour, variants in VARIANTS.items():
        names = list(variants)
        assert variants[names[0]](kin) == kin  # the first variant is the base model
        for name in names[1:]:
            assert variants[name](kin) != kin, (behaviour, name)
    for b, names in WIDE.variants.items():
        assert set(names) <= set(VARIANTS[b])
        if b != "stop":  # every other behaviour has a held-out variant wide never uses
            assert set(PRESETS["heldout"].variants[b]) - set(names), b
    rng = np.random.default_rng(0)
    for _ in range(50):
        cfg = draw_larva_config(PRESETS["heldout"], SimulationConfig(), rng)
        lo, hi = WIDE.body_length_mm
        assert not lo < cfg.body_length_mean < hi
        s = cfg.kinematics.run.speed
        assert not WIDE.run_speed[0] < s < WIDE.run_speed[1]


def test_artefacts_on_short_tracks_never_fail():
    spec = dataclasses.replace(PRESETS["heldout"], fragment_prob=1.0, swap_prob=1.0, burst_drop_prob=1.0,
                               median_track_duration=(3.0, 6.0), full_track_fraction=0.0)
    for seed in range(3):
        r = simulate_recording(spec, n_larvae=10, duration=15.0, seed=seed)
        r.run.validate()
        assert len(r.behaviour) == r.run.n_steps


def test_unknown_domain_is_refused():
    with pytest.raises(ValueError, match="unknown simulation domain"):
        simulate_recording("nowhere", n_larvae=1, duration=5.0)


# ------------------------------------------------------------------ CLI
def test_cli_simulate_domain_writes_files_that_read_back(tmp_path, capsys):
    out = tmp_path / "wide"
    with pytest.raises(SystemExit) as ok:
        cli_main(["simulate", str(out), "--domain", "wide", "-n", "3", "--duration", "8",
                  "--seed", "2", "--format", "trxmat", "--frame-rate", "7.5"])
    assert ok.value.code == 0
    run = load(out / "trx.mat")
    labels = Labels.load(out / "groundtruth.label")
    assert run.n_steps == labels.n_steps > 0
    assert labels.metadata["simulation"]["domain"] == "wide"
    assert labels.metadata["simulation"]["recording"]["frame_rate"] == 7.5
    assert labels.metadata["simulation"]["domain_spec"]["spine_points"] == [5, 11, 12]
    with pytest.raises(SystemExit) as err:
        cli_main(["simulate", str(tmp_path / "bad"), "--domain", "nowhere"])
    assert err.value.code != 0


# ------------------------------------------------------ kinematic stats
def _synthetic_segment(rate=10.0, duration=8.0, speed=0.3, freq=1.5, amp=0.04, bend_deg=20.0):
    """A larva of length 1 crawling along +x at ``speed`` BL/s, its length oscillating at
    ``freq`` Hz by ±``amp``, its anterior half bent by ``bend_deg`` at the midpoint."""
    t = np.arange(0, duration, 1.0 / rate)
    length = 1.0 + amp * np.sin(2 * np.pi * freq * t)
    n = 11
    u = np.linspace(0, 1, n)
    b = np.radians(bend_deg)
    spines = []
    for tt, L in zip(t, length):
        pts = []
        for uu in u:
            s = (uu - 0.5) * L
            pts.append([s, 0.0] if s <= 0 else [s * np.cos(b), s * np.sin(b)])
        spines.append(np.array(pts) + [speed * tt, 0.0])
    return t, np.array(spines)


def test_kinematic_statistics_recover_a_known_larva():
    t, spine = _synthetic_segment()
    seg = Segment("x", t, spine, 10.0)
    st = frame_stats(seg)
    assert np.median(st.speed) == pytest.approx(0.3, rel=0.03)
    assert np.median(st.forward) == pytest.approx(0.3 * np.cos(np.radians(10)), rel=0.05)
    assert np.median(np.abs(st.bend)) == pytest.approx(20.0, abs=0.5)
    f, power = stride(st.length, 10.0)
    assert f == pytest.approx(1.5, abs=0.05) and power > 0.8
    feats = window_features(seg, st)
    assert feats.shape[1] == len(FEATURE_NAMES)
    osc = feats[:, FEATURE_NAMES.index("length_oscillation")]
    assert np.allclose(osc, 100 * 0.04 / np.sqrt(2), rtol=0.1)
    assert np.all(feats[:, FEATURE_NAMES.index("bend_over_30")] == 0)


def test_statistics_do_not_depend_on_point_count_order_units_or_rate():
    r = simulate(SimulationConfig(n_larvae=2, duration=20.0, frame_rate=16.0, frame_jitter=0.0, seed=7,
                                  spine_noise=0, spine_end_noise=0, outlier_prob=0))
    ref = kinematics([r.run])
    run12 = dataclasses.replace(r.run, spine=resample_arc(r.run.spine, 12) * 25.0, space_unit="px",
                                spine_head="unknown", outline=None)
    other = kinematics([run12])
    assert np.allclose(np.median(ref.speed), np.median(other.speed), rtol=0.02)
    assert np.allclose(np.median(ref.bend), np.median(other.bend), rtol=0.05)
    flipped = dataclasses.replace(r.run, spine=r.run.spine[:, ::-1], spine_head="last")
    assert np.allclose(kinematics([flipped]).features, ref.features)
    # resampling: 5 points of a straight line are equally spaced
    line = np.stack([np.linspace(0, 4, 21), np.zeros(21)], axis=1)[None]
    assert np.allclose(resample_arc(line, 5)[0, :, 0], [0, 1, 2, 3, 4])
    assert head_angle(resample_arc(line, 11)).item() == pytest.approx(0.0)
    assert body_bend(resample_arc(line, 11)).item() == pytest.approx(0.0)
    segs = track_segments(r.run, rate=10.0)
    assert all(abs(np.median(np.linalg.norm(np.diff(s.spine, axis=1), axis=2).sum(axis=1)) - 1) < 1e-9
               for s in segs)
