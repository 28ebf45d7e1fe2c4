"""Training-set selection: labelled files, selectors, ratio-based sampling, balancing."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from taggingbackends import datasets as ds
from taggingbackends.data.labels import Labels
from taggingbackends.data.tracks import Run
from taggingbackends.datasets import (
    BalancedSelection,
    Selector,
    admissible,
    balance,
    class_index,
    class_index_from_tags,
    count_classes,
    inverse_frequency_weights,
    label_counts,
    labelled_files,
    ratio_based_sampling,
    steps_with,
)
from taggingbackends.formats import load, save


# ---------------------------------------------------------------- helpers
def tagged_run(entries: list[list[str]], names: list[str], n_tracks: int = 1) -> Run:
    """A run whose steps carry the given label lists (split over ``n_tracks`` tracks)."""
    n = len(entries)
    tags = np.zeros((n, len(names)), dtype=bool)
    for i, entry in enumerate(entries):
        for name in entry:
            tags[i, names.index(name)] = True
    bounds = np.linspace(0, n, n_tracks + 1).astype(int)
    times = [np.arange(hi - lo) * 0.1 for lo, hi in pairwise(bounds)]
    spines = [np.zeros((hi - lo, 5, 2)) for lo, hi in pairwise(bounds)]
    run = Run.from_tracks("r", list(range(1, n_tracks + 1)), times, spines)
    return run.with_tags(tags, names)


def combo_tags(spec: list[tuple[tuple[str, ...], int]], names: list[str]):
    """Tag matrix with ``count`` steps of each label combination, rows shuffled."""
    rows = []
    for combo, count in spec:
        row = np.zeros(len(names), dtype=bool)
        row[[names.index(n) for n in combo]] = True
        rows.append(np.repeat(row[None], count, axis=0))
    tags = np.concatenate(rows)
    return tags[np.random.default_rng(123).permutation(len(tags))]


def tiny_tracking_run(run_id: str = "20150701_105504") -> Run:
    times = [np.round(np.arange(10) * 0.1, 4), np.round(1 + np.arange(8) * 0.1, 4)]
    spines = [np.random.default_rng(0).normal(size=(len(t), 5, 2)) for t in times]
    return Run.from_tracks(run_id, [3, 8], times, spines)


def write_label(path: Path, tracking: list[Path], label: str = "run") -> None:
    labels = Labels(["run", "cast"], tracking=tracking)
    labels[tiny_tracking_run().id, 3] = {round(0.1 * i, 3): label for i in range(10)}
    labels.dump(path)


# --------------------------------------------------------------- selectors
NAMES = ["run", "run_large", "cast", "cast_weak", "small_motion", "roll", "edited"]


def test_plain_negated_and_regex_selectors():
    run = tagged_run([["run", "run_large"], ["cast", "cast_weak", "small_motion"], ["roll"], [],
                      ["run", "edited"]], NAMES)
    assert Selector("run").match(run.tags, run.tag_names).tolist() == [True, False, False, False, True]
    for prefix in ("¬", "~", "!"):
        # complement over labelled steps only: the unlabelled step never matches
        assert Selector(prefix + "roll").match(run.tags, run.tag_names).tolist() == [
            True, True, False, False, True]
    assert Selector("re:_weak$").match(run.tags, run.tag_names).tolist() == [
        False, True, False, False, False]
    assert Selector("¬re:^run").match(run.tags, run.tag_names).tolist() == [
        False, True, True, False, False]
    assert Selector(["run", "¬edited"]).match(run.tags, run.tag_names).tolist() == [
        True, False, False, False, False]
    # a label that the run does not have
    assert not Selector("hunch").match(run.tags, run.tag_names).any()
    assert Selector("¬hunch").match(run.tags, run.tag_names).sum() == 4


def test_class_index_first_match_wins_and_mask():
    run = tagged_run([["run", "run_large"], ["cast", "small_motion"], ["small_motion"], [], ["roll"]],
                     NAMES)
    idx = class_index(run, ["re:^run", "run", "small_motion", "cast"])
    assert idx.dtype == np.int64
    assert idx.tolist() == [0, 2, 2, -1, -1]
    idx = class_index(run, ["cast", "small_motion"])
    assert idx.tolist() == [-1, 0, 1, -1, -1]
    mask = np.array([True, False, True, True, True])
    assert class_index(run, ["cast", "small_motion"], mask=mask).tolist() == [-1, -1, 1, -1, -1]
    assert class_index(run, ["roll", "¬roll"]).tolist() == [1, 1, 1, -1, 0]


def test_class_index_without_tags_and_bad_selectors():
    run = tiny_tracking_run()
    assert (class_index(run, ["run"]) == -1).all() and class_index(run, ["run"]).shape == (18,)
    for bad in ("", "¬", "re:", "re:("):
        with pytest.raises(ValueError):
            Selector(bad)


def test_count_classes_and_label_counts():
    assert count_classes(np.array([0, 2, -1, 2, 2]), 4).tolist() == [1, 0, 3, 0]
    with pytest.raises(ValueError):
        count_classes(np.array([0, 4]), 4)
    run = tagged_run([["run", "run_large"], ["run_large", "run"], ["run", "edited"], [], ["roll"]], NAMES)
    assert label_counts(run, ignore=["edited"]) == {("roll",): 1, ("run",): 1, ("run", "run_large"): 2}
    assert label_counts(run, mask=np.array([1, 0, 0, 0, 1], bool)) == {
        ("roll",): 1, ("run", "run_large"): 1}


# ----------------------------------------------------- ratio-based sampling
# label totals of PlanarLarvae's Dataloaders test (5 s windows, SPEC §5.3)
SPEC_COMBOS = [
    (("run", "run_large", "run_strong"), 112655), (("run", "run_weak", "small_motion"), 5189),
    (("cast", "cast_large", "cast_strong"), 44140), (("cast", "cast_weak", "small_motion"), 4151),
    (("stop", "stop_large", "stop_strong"), 1213), (("small_motion", "stop", "stop_weak"), 354),
    (("back", "back_large", "back_strong"), 2816), (("back", "back_weak", "small_motion"), 601),
    (("hunch", "hunch_large", "hunch_strong"), 50), (("hunch", "hunch_weak", "small_motion"), 50),
    (("roll", "roll_large", "roll_strong"), 10),
]
SPEC_NAMES = sorted({n for combo, _ in SPEC_COMBOS for n in combo})
SPEC_CLASSES = ["run", "cast", "stop", "back", "hunch"]


def spec_files(n_files: int):
    tags = combo_tags(SPEC_COMBOS, SPEC_NAMES)
    parts = np.array_split(np.arange(len(tags)), n_files)
    idx = [class_index_from_tags(tags[p], SPEC_NAMES, SPEC_CLASSES) for p in parts]
    prio = [tags[p][:, SPEC_NAMES.index("small_motion")] for p in parts]
    return idx, prio


@pytest.mark.parametrize("n_files", [1, 4])
def test_spec_priority_example(n_files):
    """Ratio 2, priority small_motion, minority hunch (100 steps): every class is
    capped at 200 and filled from its small_motion variants first."""
    idx, prio = spec_files(n_files)
    rows = ratio_based_sampling(idx, 5, ratio=2, seed=1, priority=prio)
    kept = np.concatenate([i[r] for i, r in zip(idx, rows)])
    kept_prio = np.concatenate([p[r] for p, r in zip(prio, rows)])
    totals = count_classes(kept, 5)
    tolerance = 0 if n_files == 1 else n_files  # per-file rounding of each part
    for c, name in enumerate(SPEC_CLASSES):
        if name == "hunch":
            assert totals[c] == 100  # the minority class is kept whole, both variants
            assert kept_prio[kept == c].sum() == 50
        else:
            assert abs(totals[c] - 200) <= tolerance, (name, totals[c])
            assert kept_prio[kept == c].all(), name  # only small_motion variants
    # roll is not a class: never selected
    assert (kept >= 0).all()


def test_ratio_sampling_without_priority_caps_classes():
    idx = [np.repeat(np.arange(3), [1000, 50, 10]), np.repeat(np.arange(3), [1000, 50, 10])]
    rows = ratio_based_sampling(idx, 3, ratio=3, seed=0)
    totals = sum(count_classes(i[r], 3) for i, r in zip(idx, rows))
    assert totals.tolist() == [60, 60, 20]
    # per-file application of the class ratio
    assert [count_classes(i[r], 3).tolist() for i, r in zip(idx, rows)] == [[30, 30, 10]] * 2


def test_priority_fills_cap_from_other_steps_when_short():
    # class 0: 300 steps, 150 priority; class 1: 100 steps -> cap 200 = 150 priority + 50 others
    idx = [np.repeat([0, 1], [300, 100])]
    prio = [np.zeros(400, dtype=bool)]
    prio[0][:150] = True
    rows = ratio_based_sampling(idx, 2, ratio=2, seed=3, priority=prio)[0]
    assert count_classes(idx[0][rows], 2).tolist() == [200, 100]
    assert prio[0][rows].sum() == 150


def test_sampling_is_deterministic_per_seed():
    idx, _ = spec_files(3)
    a = ratio_based_sampling(idx, 5, 2, seed=7)
    b = ratio_based_sampling(idx, 5, 2, seed=7)
    c = ratio_based_sampling(idx, 5, 2, seed=8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    assert all(r.dtype == np.int64 and np.all(np.diff(r) > 0) for r in a)
    # the seed is reset per file: two identical files get different draws
    twin = ratio_based_sampling([idx[0], idx[0]], 5, 2, seed=7)
    assert not np.array_equal(twin[0], twin[1])
    assert count_classes(idx[0][twin[0]], 5).tolist() == count_classes(idx[0][twin[1]], 5).tolist()


def test_include_steps_always_kept():
    idx = [np.repeat([0, 1], [500, 20])]
    include = [np.zeros(520, dtype=bool)]
    include[0][[5, 17, 499]] = True
    include[0][519] = True
    rows = ratio_based_sampling(idx, 2, ratio=1, seed=0, include=include)[0]
    assert set(np.flatnonzero(include[0])) <= set(rows.tolist())
    assert 20 <= count_classes(idx[0][rows], 2)[0] <= 23
    # an included step outside every class is not a sample
    idx2 = [np.array([0, 0, -1, 1])]
    rows2 = ratio_based_sampling(idx2, 2, 1, seed=0, include=[np.array([0, 0, 1, 0], bool)])[0]
    assert 2 not in rows2.tolist()


def test_sampling_input_checks():
    with pytest.raises(ValueError):
        ratio_based_sampling([np.zeros(3, np.int64)], 1, ratio=0)
    with pytest.raises(ValueError):
        ratio_based_sampling([np.zeros(3, np.int64)], 1, priority=[np.zeros(2, bool)])
    empty = ratio_based_sampling([np.full(4, -1)], 2)
    assert empty[0].size == 0


# ------------------------------------------------------------- balancing
def test_inverse_frequency_weights_normalisation():
    w = inverse_frequency_weights([100, 50, 10, 0])
    assert w[3] == 0
    assert w.sum() == pytest.approx(4)
    assert (w[:3] * [100, 50, 10]) == pytest.approx([w[0] * 100] * 3)
    assert inverse_frequency_weights([7, 7, 7]) == pytest.approx([1, 1, 1])
    assert inverse_frequency_weights([0, 0]).tolist() == [0, 0]


def test_balance_strategies():
    idx = [np.repeat([0, 1, 2, -1], [600, 60, 30, 5]), np.repeat([0, 1, -1], [300, 30, 2])]
    auto = balance(idx, 3, "auto", seed=0)
    assert isinstance(auto, BalancedSelection)
    assert auto.counts_before.tolist() == auto.counts_after.tolist() == [900, 90, 30]
    assert auto.n_samples == 1020
    assert auto.class_weights == pytest.approx(inverse_frequency_weights([900, 90, 30]))
    assert auto.class_weights[2] > auto.class_weights[1] > auto.class_weights[0]

    none = balance(idx, 3, "none", seed=0)
    assert none.class_weights.tolist() == [1, 1, 1] and none.n_samples == 1020

    mag = balance(idx, 3, "maggotuba", seed=0)
    assert mag.class_weights.tolist() == [1, 1, 1]
    assert mag.counts_after.tolist() == [60, 60, 30]  # default ratio 2 of the minority (30)
    assert mag.strategy == "maggotuba"
    assert ds.DEFAULT_MAJORITY_MINORITY_RATIO == 2
    mag20 = balance(idx, 3, "maggotuba", seed=0, ratio=20)
    assert mag20.counts_after.tolist() == [600, 90, 30]

    with pytest.raises(ValueError, match="unknown balancing strategy"):
        balance(idx, 3, "smote")


def test_balance_class_weight_override():
    idx = [np.array([0, 1, 1, 1])]
    sel = balance(idx, 2, "auto", class_weights=[1.0, 3.0])
    assert sel.class_weights.tolist() == [1.0, 3.0]
    with pytest.raises(ValueError, match="3 class weights given for 2 classes"):
        balance(idx, 2, "auto", class_weights=[1, 2, 3])
    with pytest.raises(ValueError):
        balance(idx, 2, "none", class_weights=[1, -1])


def test_balance_sample_size_keeps_included_steps():
    idx = [np.repeat([0, 1], [800, 200]), np.repeat([0, 1], [400, 100])]
    include = [np.zeros(1000, bool), np.zeros(500, bool)]
    include[0][[3, 900]] = True
    include[1][[10]] = True
    sel = balance(idx, 2, "none", seed=4, sample_size=150, include=include)
    assert sel.n_samples == 150
    assert {3, 900} <= set(sel.rows_per_file[0].tolist()) and 10 in sel.rows_per_file[1]
    assert sel.counts_before.tolist() == [1200, 300]
    assert sel.counts_after.sum() == 150
    again = balance(idx, 2, "none", seed=4, sample_size=150, include=include)
    assert all(np.array_equal(a, b) for a, b in zip(sel.rows_per_file, again.rows_per_file))
    other = balance(idx, 2, "none", seed=5, sample_size=150, include=include)
    assert not all(np.array_equal(a, b) for a, b in zip(sel.rows_per_file, other.rows_per_file))
    # auto weights follow the final counts
    auto = balance(idx, 2, "auto", seed=4, sample_size=150)
    assert auto.class_weights == pytest.approx(inverse_frequency_weights(auto.counts_after))
    # a cap above the selection changes nothing
    assert balance(idx, 2, "none", sample_size=10_000).n_samples == 1500
    with pytest.raises(ValueError):
        balance(idx, 2, "none", sample_size=0)


def test_balance_priority_and_include_from_runs():
    names = ["run", "cast", "small_motion", "edited"]
    entries = [["run"]] * 40 + [["run", "small_motion"]] * 10 + [["cast"]] * 4 + [["cast", "edited"]]
    run = tagged_run(entries, names, n_tracks=3)
    idx = [class_index(run, ["run", "cast"])]
    sel = balance(idx, 2, "maggotuba", seed=0, priority=[steps_with(run, "small_motion")],
                  include=[steps_with(run, "edited")])
    assert sel.counts_after.tolist() == [10, 5]
    assert steps_with(run, "small_motion")[sel.rows_per_file[0]].sum() == 10
    assert 54 in sel.rows_per_file[0].tolist()


# ------------------------------------------------------------ admissible
def test_admissible_at_track_edges():
    times = [np.round(np.arange(21) * 0.1, 4), np.round(5 + np.arange(5) * 0.1, 4)]
    run = Run.from_tracks("r", [1, 2], times, [np.zeros((len(t), 5, 2)) for t in times])
    ok = admissible(run, 1.0, 0.0)
    first, second = ok[:21], ok[21:]
    assert np.flatnonzero(first).tolist() == list(range(5, 16))  # t in [0.5, 1.5]
    assert not second.any()  # 0.4 s long: no 1 s window fits
    ok = admissible(run, 1.0, 0.3)
    assert np.flatnonzero(ok[:21]).tolist() == list(range(8, 13))
    assert admissible(run, 0.0, 0.0).all()
    # float error at the edges: 0.1 * 3 != 0.3, still admissible
    t = np.array([0.0, 0.1, 0.2, 0.30000000000000004, 0.4, 0.5, 0.6])
    run = Run.from_tracks("r", [1], [t], [np.zeros((7, 5, 2))])
    assert admissible(run, 0.6, 0.0).tolist() == [False, False, False, True, False, False, False]
    with pytest.raises(ValueError):
        admissible(run, -1, 0)


# -------------------------------------------------------- labelled files
def test_labelled_files_discovery(tmp_path):
    run = tiny_tracking_run()
    a = tmp_path / "a"
    a.mkdir()
    save(run, a / "trx.mat")
    write_label(a / "predicted.label", [a / "trx.mat"])
    write_label(a / "groundtruth.label", [a / "trx.mat"])  # same dependency: last name wins
    (a / "notes.json").write_text('{"hello": 1}')          # JSON but no label signature
    (a / "bad.label").write_text("not json at all")
    lone = tmp_path / "b" / "c"
    lone.mkdir(parents=True)
    save(run, lone / "trx.mat")                             # no label file: kept
    (lone / "other.mat").write_bytes(b"not a MAT-file at all")
    d = tmp_path / "d"
    d.mkdir()
    save(run, d / "trx.mat")
    write_label(d / "x.label", [d / "trx.mat"])
    save(tiny_tracking_run("20150701_110000"), d / "other_trx.mat")
    write_label(d / "y.label", [d / "other_trx.mat"])       # different dependency: both kept

    found = labelled_files(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        "a/predicted.label", "b/c/trx.mat", "d/x.label", "d/y.label"]
    chunks = labelled_files(tmp_path, chunks=True)
    assert [p.relative_to(tmp_path).as_posix() for p in chunks] == [
        "a/groundtruth.label", "a/predicted.label", "b/c/trx.mat", "d/x.label", "d/y.label"]
    assert labelled_files(tmp_path) == found  # deterministic

    # pattern replaces discovery
    gt = labelled_files(tmp_path, pattern="**/groundtruth.label")
    assert gt == [a / "groundtruth.label"]
    assert labelled_files(tmp_path / "**" / "groundtruth.label") == gt
    labels = labelled_files(tmp_path, pattern="**.label")
    assert [p.name for p in labels] == ["bad.label", "groundtruth.label", "predicted.label",
                                        "x.label", "y.label"]
    assert labelled_files(tmp_path, select=lambda name: name != "predicted.label")[0] == \
        a / "groundtruth.label"

    # the collected label files load as tagged runs usable by the selectors
    tagged = load(found[0])
    idx = class_index(tagged, ["run", "cast"])
    assert count_classes(idx, 2).tolist() == [10, 0]


def test_labelled_files_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        labelled_files(tmp_path / "missing")
    assert labelled_files(tmp_path) == []
