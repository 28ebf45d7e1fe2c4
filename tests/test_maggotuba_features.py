"""Window extraction for the MaggotUBA model: reduction, orientation, interpolation, edges."""

from __future__ import annotations

import numpy as np
import pytest

from maggotuba.features import (
    CLAMPED, FULL, GAPPED, INVALID, WindowSpec, infer_head_end, iter_windows, make_windows,
    spine5,
)
from taggingbackends.data.tracks import Run
from taggingbackends.simulate import SimulationConfig, simulate


def straight_run(times, velocity=(1.0, 0.0), length=4.0, points=11, head_first=True) -> Run:
    """One larva: a straight spine along x translating at constant velocity."""
    times = np.asarray(times, dtype=float)
    along = np.linspace(-length / 2, length / 2, points)
    if head_first:
        along = along[::-1]  # point 0 is the head (largest x)
    base = np.stack([along, np.zeros(points)], axis=1)
    spines = base[None] + times[:, None, None] * np.asarray(velocity)[None, None, :]
    return Run.from_tracks("r", [1], [times], [spines], spine_head="first" if head_first else "last")


def test_spine5_matches_planarlarvae_for_11_points():
    spine = np.random.default_rng(0).normal(size=(3, 11, 2))
    expected = np.stack([spine[:, 0], (spine[:, 2] + spine[:, 3]) / 2, spine[:, 5],
                         (spine[:, 7] + spine[:, 8]) / 2, spine[:, 10]], axis=1)
    np.testing.assert_allclose(spine5(spine), expected)
    assert spine5(np.zeros((2, 12, 2))).shape == (2, 5, 2)


def test_normalisation_matches_planarlarvae_example_in_maggotuba_orientation():
    # SPEC §4.7: PlanarLarvae maps the spine (0,0)…(1,1) with scale √2/2 to
    # [-1 0 -.5 0 0 0 .5 0 1 0] (last point at +x). The original MaggotUBA, which we
    # follow, turns the head→tail vector to +x instead: with the tail at (0,0), the
    # same numbers with the sign flipped.
    spine = np.stack([np.linspace(0, 1, 5)] * 2, axis=1)     # tail (0,0) → head (1,1)
    times = np.round(np.arange(0, 3, 0.1), 4)
    run = Run.from_tracks("r", [1], [times], [np.repeat(spine[None], len(times), axis=0)],
                          spine_head="last")
    windows = make_windows(run, WindowSpec(len_traj=5), rows=np.array([15]))
    assert windows.quality[0] == FULL
    body = np.sqrt(2)
    first_step = windows.data[0, :, :, 0] * body / (np.sqrt(2) / 2)   # undo our scale, apply √2/2
    np.testing.assert_allclose(first_step.T.ravel(), [1, 0, .5, 0, 0, 0, -.5, 0, -1, 0], atol=1e-6)


def test_head_order_is_explicit_and_both_orders_give_the_same_windows():
    times = np.round(np.arange(0, 5, 0.1), 4)
    head_first = make_windows(straight_run(times, head_first=True), WindowSpec())
    head_last = make_windows(straight_run(times, head_first=False), WindowSpec())
    np.testing.assert_allclose(head_first.data, head_last.data, atol=1e-6)
    # the head (model point 4) lies at −x after rotation; crawling forward = toward −x
    assert (head_first.data[:, 0, 4, :] < head_first.data[:, 0, 0, :]).all()
    x_mid = head_first.data[20, 0, 2, :]
    assert x_mid[-1] < x_mid[0]
    forced_wrong = make_windows(straight_run(times, head_first=True), WindowSpec(head="last"))
    assert (forced_wrong.data[:, 0, 4, :] < 0).all()  # rotated too, but moving backwards:
    x_mid = forced_wrong.data[20, 0, 2, :]
    assert x_mid[-1] > x_mid[0]  # the midpoint now moves toward the tail (+x)


@pytest.mark.parametrize("head_first", [True, False])
def test_head_end_inferred_from_motion_on_simulated_larvae(head_first):
    result = simulate(SimulationConfig(n_larvae=6, duration=30.0, seed=2, head_first=head_first))
    run = result.run
    unknown = Run(id=run.id, larva_ids=run.larva_ids, offsets=run.offsets, t=run.t,
                  spine=run.spine, spine_head="unknown")
    assert infer_head_end(unknown) == ("first" if head_first else "last")


def test_interpolation_on_irregular_times_is_exact_for_linear_motion():
    rng = np.random.default_rng(1)
    times = np.round(np.cumsum(rng.uniform(0.06, 0.12, size=80)), 4)
    run = straight_run(times, velocity=(0.8, 0.0), length=4.0)
    spec = WindowSpec(len_traj=20, frame_interval=0.1)
    row = 40
    windows = make_windows(run, spec, rows=np.array([row]))
    assert windows.quality[0] == FULL
    # the midpoint moves 0.8 mm/s toward the head (−x), divided by the body length 4
    expected = -0.8 * (spec.grid() - spec.grid().mean()) / 4.0
    np.testing.assert_allclose(windows.data[0, 0, 2, :], expected, atol=1e-6)
    np.testing.assert_allclose(windows.data[0, 1], 0.0, atol=1e-6)


def test_edges_gaps_and_missing_steps():
    times = np.round(np.arange(0, 6, 0.1), 4)
    run = straight_run(times)
    spec = WindowSpec()
    quality = make_windows(run, spec).quality
    assert quality[0] == CLAMPED and quality[-1] == CLAMPED and quality[30] == FULL
    invalid = make_windows(run, WindowSpec(edge="invalid"))
    assert invalid.quality[0] == INVALID and np.isnan(invalid.data[0]).all()
    # untracked steps (NaN) are skipped; a hole longer than max_gap makes windows gapped
    spines = run.spine.copy()
    spines[28:35] = np.nan
    holed = Run.from_tracks("r", [1], [times], [spines], spine_head="first")
    windows = make_windows(holed, spec)
    assert windows.quality[31] == GAPPED and windows.quality[5] in (CLAMPED, FULL)
    assert np.isfinite(windows.data[31]).all()
    short_hole = spines.copy()
    short_hole[28:35] = run.spine[28:35]
    short_hole[30:32] = np.nan  # 0.3 s hole < 0.5 s
    assert make_windows(Run.from_tracks("r", [1], [times], [short_hole], spine_head="first"),
                        spec).quality[31] == FULL


def test_tracks_do_not_leak_into_each_other_and_batches_match():
    times = np.round(np.arange(0, 4, 0.1), 4)
    one = straight_run(times)
    two = Run.from_tracks("r", [1, 2], [times, times + 0.05],
                          [one.spine, one.spine[:, ::-1] * 0 + one.spine + 50.0], spine_head="first")
    windows = make_windows(two, WindowSpec())
    np.testing.assert_allclose(windows.data[:len(times)], make_windows(one, WindowSpec()).data, atol=1e-6)
    batched = np.concatenate([w.data for w in iter_windows(two, WindowSpec(), batch_size=7)])
    np.testing.assert_array_equal(batched, windows.data)


def test_context_windows_for_pretraining():
    times = np.round(np.arange(0, 10, 0.1), 4)
    spec = WindowSpec(len_traj=20, len_pred=20)
    windows = make_windows(straight_run(times), spec, rows=np.array([50]))
    assert windows.data.shape == (1, 2, 5, 60) and windows.quality[0] == FULL
    # centred on the present: the present's mean midpoint is at the origin
    np.testing.assert_allclose(windows.data[0, :, 2, spec.present].mean(axis=1), 0.0, atol=1e-6)


def test_bad_specs_rejected():
    with pytest.raises(ValueError):
        WindowSpec(len_traj=1)
    with pytest.raises(ValueError):
        WindowSpec(edge="pad")
    with pytest.raises(ValueError):
        WindowSpec(head="middle")


def test_our_windows_are_the_original_maggotuba_windows():
    """The original code's windows (fixture made by running it once, see
    tests/data/maggotuba_published/README.md) from its raw Point_dynamics rows."""
    from pathlib import Path

    from maggotuba.features import normalise

    fixture = Path(__file__).parent / "data" / "maggotuba_published"
    rows = np.load(fixture / "point_dynamics_rows.npy")          # (16, 20, 18), points tail→head
    points = rows[:, :, 8:18].reshape(len(rows), rows.shape[1], 5, 2)
    ours = normalise(points, np.load(fixture / "mean_lengths.npy"), WindowSpec(len_traj=20))
    np.testing.assert_allclose(ours, np.load(fixture / "windows.npy"), atol=1e-6)
    torch = pytest.importorskip("torch")
    from maggotuba.models.compat import load_published_encoder

    encoder, _ = load_published_encoder(fixture)
    with torch.no_grad():
        embedded = encoder(torch.from_numpy(ours)).numpy()
    np.testing.assert_allclose(embedded, np.load(fixture / "embeddings.npy"), atol=1e-5)
