"""maggotuba.dataset: building, balancing, grouped split and HDF5 I/O of labelled windows."""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np
import pytest

from maggotuba.dataset import (
    LarvaDataset,
    build_dataset,
    read_hdf5,
    split,
    split_groups,
    window_quality,
    write_hdf5,
)
from maggotuba.features import FULL, WindowSpec, prepare, windows_for_rows
from taggingbackends.cli import write_simulation
from taggingbackends.data.labels import Labels
from taggingbackends.datasets import inverse_frequency_weights, labelled_files
from taggingbackends.errors import FormatError, TaggingError
from taggingbackends.formats import load
from taggingbackends.simulate import (
    BEHAVIOURS,
    SimulationConfig,
    balanced_weights,
    simulate,
)

LABELS = list(BEHAVIOURS)
SPEC = WindowSpec(len_traj=20, frame_interval=0.1)
N_EDITED = 40


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> Path:
    """Two simulated recordings (seeds 1 and 6, behaviours balanced so that every class
    occurs in several larvae); in the first, the ground truth is replaced by a copy in
    which ``N_EDITED`` run steps in the middle of a track carry ``edited``."""
    root = tmp_path_factory.mktemp("repository")
    weights = balanced_weights()
    for name, seed in (("a", 1), ("b", 6)):
        result = simulate(SimulationConfig(n_larvae=6, duration=30.0, seed=seed,
                                           behaviour_weights=weights))
        written = write_simulation(result, root / name, "chore")
        assert written[-1].name == "groundtruth.label"
    labels = Labels.load(root / "a" / "groundtruth.label")
    labels.secondarylabels.append("edited")
    larva = max(labels.tracks, key=lambda k: len(labels.tracks[k]))
    track = labels.tracks[larva]
    middle = np.flatnonzero((track.t > track.t[0] + 3) & (track.t < track.t[-1] - 3))
    runs = [i for i in middle if track.labels[i] == "run"][:N_EDITED]
    assert len(runs) == N_EDITED
    for i in runs:
        track.labels[i] = ["run", "edited"]
    labels.dump(root / "a" / "groundtruth_edited.label")
    return root


@pytest.fixture(scope="module")
def edited_steps(repository) -> set[tuple[int, float]]:
    run = load(repository / "a" / "groundtruth_edited.label")
    rows = np.flatnonzero(run.tags[:, run.tag_names.index("edited")])
    larva = run.larva_ids[run.track_index[rows]]
    return {(int(l), round(float(t), 4)) for l, t in zip(larva, run.t[rows])}


@pytest.fixture(scope="module")
def auto(repository) -> LarvaDataset:
    return build_dataset(repository, LABELS, SPEC, balancing="auto", seed=0)


def keys(data: LarvaDataset, file: int | None = None) -> set[tuple[int, float]]:
    mask = np.ones(len(data), bool) if file is None else data.file == file
    return {(int(l), round(float(t), 4)) for l, t in zip(data.larva[mask], data.t[mask])}


def assert_same(a: LarvaDataset, b: LarvaDataset) -> None:
    for name in ("windows", "labels", "class_weights", "groups", "file", "larva", "t",
                 "counts_before", "counts_after"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
        assert getattr(a, name).dtype == getattr(b, name).dtype, name
    assert a.label_names == b.label_names
    assert a.spec == b.spec
    assert [p.resolve() for p in a.sources] == [p.resolve() for p in b.sources]
    assert a.source_sha1 == b.source_sha1
    assert a.provenance == b.provenance


# ------------------------------------------------------------------ build
def test_discovery_keeps_the_newest_label_file_per_recording(repository, auto):
    assert [p.relative_to(repository).as_posix() for p in labelled_files(repository)] == [
        "a/groundtruth_edited.label", "b/groundtruth.label"]
    assert [p.name for p in auto.sources] == ["groundtruth_edited.label", "groundtruth.label"]
    assert all(p.is_absolute() for p in auto.sources)
    assert all(re.fullmatch(r"[0-9a-f]{40}", s) for s in auto.source_sha1)


def test_shapes_dtypes_and_metadata(auto):
    n = len(auto)
    assert n > 1000
    assert auto.windows.shape == (n, 2, 5, 20) and auto.windows.dtype == np.float32
    assert np.isfinite(auto.windows).all()
    for name, dtype in (("labels", np.int64), ("groups", np.int64), ("file", np.int64),
                        ("larva", np.int64), ("t", np.float64)):
        assert getattr(auto, name).shape == (n,) and getattr(auto, name).dtype == dtype
    assert auto.label_names == LABELS
    assert auto.class_weights.shape == (7,)
    np.testing.assert_array_equal(auto.counts_after, np.bincount(auto.labels, minlength=7))
    assert auto.provenance["balancing"] == "auto" and auto.provenance["seed"] == 0
    assert auto.provenance["version"]
    # every labelled step is counted; anchors are a subset
    assert np.all(np.asarray(auto.provenance["counts_labelled"]) >= auto.counts_before)


def test_every_class_present_is_represented(auto):
    assert np.all(auto.counts_before > 0)          # the simulation produces all 7 behaviours
    assert np.all(auto.counts_after == auto.counts_before)  # auto keeps every anchor


def test_groups_are_unique_per_file_and_larva(auto):
    pairs = {(int(f), int(l)) for f, l in zip(auto.file, auto.larva)}
    by_group = {int(g): (int(f), int(l)) for g, f, l in zip(auto.groups, auto.file, auto.larva)}
    assert len(by_group) == len(pairs) == len(set(by_group.values()))
    for g, f, l in zip(auto.groups, auto.file, auto.larva):
        assert by_group[int(g)] == (int(f), int(l))


def test_windows_are_the_features_windows_of_full_anchors(auto):
    for f, source in enumerate(auto.sources):
        run = load(source)
        prepared = prepare(run, SPEC.head)
        row_of = {(int(run.larva_ids[k]), round(float(run.t[r]), 4)): r
                  for r, k in enumerate(run.track_index)}
        mine = np.flatnonzero(auto.file == f)
        rows = np.array([row_of[(int(auto.larva[i]), round(float(auto.t[i]), 4))] for i in mine])
        expected = windows_for_rows(prepared, rows, SPEC)
        assert np.all(expected.quality == FULL)
        np.testing.assert_array_equal(auto.windows[mine], expected.data)


def test_window_quality_matches_features(repository):
    for source in labelled_files(repository):
        run = load(source)
        prepared = prepare(run, "auto")
        rows = np.arange(run.n_steps)
        for spec in (SPEC, WindowSpec(len_pred=20), WindowSpec(frame_interval=1 / 11, max_gap=0.1),
                     WindowSpec(edge="invalid", len_traj=5)):
            np.testing.assert_array_equal(window_quality(prepared, rows, spec, batch_size=333),
                                          windows_for_rows(prepared, rows, spec).quality)


def test_context_restricts_anchors(repository, auto):
    wide = build_dataset(repository, LABELS, WindowSpec(len_traj=20, len_pred=20))
    assert wide.windows.shape[1:] == (2, 5, 60)
    assert len(wide) < len(auto)
    assert keys(wide) <= keys(auto)


def test_auto_class_weights(auto):
    np.testing.assert_allclose(auto.class_weights, inverse_frequency_weights(auto.counts_after))
    product = auto.class_weights * auto.counts_after
    np.testing.assert_allclose(product, product[0])
    assert auto.class_weights[int(np.argmax(auto.counts_after))] == auto.class_weights.min()


def test_balancing_strategies_change_counts(repository, auto):
    none = build_dataset(repository, LABELS, SPEC, balancing="none")
    capped = build_dataset(repository, LABELS, SPEC, balancing="maggotuba", include_all=None)
    np.testing.assert_array_equal(none.counts_after, auto.counts_after)
    np.testing.assert_array_equal(none.class_weights, np.ones(7))
    np.testing.assert_array_equal(capped.counts_before, auto.counts_before)
    np.testing.assert_array_equal(capped.class_weights, np.ones(7))
    cap = round(2.0 * auto.counts_before.min())
    # the cap is applied per file with rounding: at most half a step per file off
    assert np.all(capped.counts_after <= cap + 1)
    small = auto.counts_before <= cap
    np.testing.assert_array_equal(capped.counts_after[small], auto.counts_before[small])
    assert np.all(np.abs(capped.counts_after[~small] - cap) <= 1)
    assert (~small).any() and len(capped) < len(auto)
    ratio3 = build_dataset(repository, LABELS, SPEC, balancing="maggotuba", ratio=3.0,
                           include_all=None)
    assert len(capped) < len(ratio3) <= len(auto)
    assert keys(capped) <= keys(auto)


def test_balancing_is_deterministic_and_seeded(repository):
    a = build_dataset(repository, LABELS, SPEC, balancing="maggotuba", seed=3)
    b = build_dataset(repository, LABELS, SPEC, balancing="maggotuba", seed=3)
    c = build_dataset(repository, LABELS, SPEC, balancing="maggotuba", seed=4)
    np.testing.assert_array_equal(a.windows, b.windows)
    np.testing.assert_array_equal(a.t, b.t)
    assert keys(a) != keys(c)


def test_include_all_keeps_edited_steps(repository, edited_steps):
    with_edits = build_dataset(repository, LABELS, SPEC, balancing="maggotuba")
    without = build_dataset(repository, LABELS, SPEC, balancing="maggotuba", include_all=None)
    assert edited_steps <= keys(with_edits, file=0)
    assert len(edited_steps & keys(without, file=0)) < N_EDITED
    run = LABELS.index("run")
    assert with_edits.counts_after[run] > without.counts_after[run]


def test_sample_size_respected(repository, edited_steps):
    small = build_dataset(repository, LABELS, SPEC, sample_size=300)
    assert len(small) == 300 == small.counts_after.sum()
    assert edited_steps <= keys(small, file=0)  # always-included steps survive the cap
    np.testing.assert_allclose(small.class_weights, inverse_frequency_weights(small.counts_after))


def test_class_weights_override_and_selectors(repository):
    weights = [1, 2, 3, 4, 5, 6, 7]
    data = build_dataset(repository, LABELS, SPEC, class_weights=weights)
    np.testing.assert_array_equal(data.class_weights, weights)
    with pytest.raises(ValueError):
        build_dataset(repository, LABELS, SPEC, class_weights=[1, 2])
    roll = build_dataset(repository, ["roll", "¬roll"], SPEC, balancing="none")
    assert roll.label_names == ["roll", "¬roll"]
    full = build_dataset(repository, LABELS, SPEC, balancing="none")
    assert roll.counts_after[0] == full.counts_after[LABELS.index("roll")]
    assert roll.counts_after.sum() == full.counts_after.sum()


def test_frame_interval_and_source_forms(repository):
    files = labelled_files(repository)
    data = build_dataset([str(f) for f in files[1:]], LABELS, SPEC, frame_interval=0.2)
    assert data.spec.frame_interval == 0.2 and data.spec.len_traj == 20
    assert [p.name for p in data.sources] == ["groundtruth.label"]
    uncached = build_dataset(files[1], LABELS, data.spec, cache_bytes=0, batch_size=100)
    np.testing.assert_array_equal(uncached.windows, data.windows)


def test_build_errors(tmp_path, repository):
    with pytest.raises(TaggingError):
        build_dataset(tmp_path, LABELS, SPEC)             # no labelled file
    with pytest.raises(FormatError):
        build_dataset(tmp_path / "missing", LABELS, SPEC)
    with pytest.raises(ValueError):
        build_dataset(repository, LABELS, SPEC, balancing="oversample")
    with pytest.raises(TaggingError):
        build_dataset(repository, ["no_such_label"], SPEC)


# ------------------------------------------------------------------ split
def test_grouped_split(auto):
    train, validation = split(auto, 0.2, seed=0)
    assert len(train) + len(validation) == len(auto)
    assert not set(train.groups.tolist()) & set(validation.groups.tolist())
    both = {(int(f), k) for f, k in zip(np.r_[train.file, validation.file],
                                        zip(np.r_[train.larva, validation.larva],
                                            np.round(np.r_[train.t, validation.t], 4)))}
    assert len(both) == len(auto)
    assert 0.1 < len(validation) / len(auto) < 0.35
    # every class found in two or more larvae is on both sides
    assert np.all(train.counts_after > 0) and np.all(validation.counts_after > 0)
    np.testing.assert_array_equal(train.counts_after + validation.counts_after, auto.counts_after)
    np.testing.assert_array_equal(train.class_weights, auto.class_weights)
    assert validation.provenance["split"]["part"] == "validation"
    again_train, again_validation = split(auto, 0.2, seed=0)
    np.testing.assert_array_equal(again_train.groups, train.groups)
    np.testing.assert_array_equal(again_validation.t, validation.t)
    other = [set(split(auto, 0.2, seed=s)[1].groups.tolist()) for s in range(1, 6)]
    assert any(o != set(validation.groups.tolist()) for o in other)


def test_split_groups_stratifies_many_groups():
    rng = np.random.default_rng(0)
    counts = rng.poisson(rng.gamma(0.5, 20, (300, 7)) * np.array([10, 5, 2, 1, 0.3, 2, 3]))
    totals = counts.sum(axis=0)
    for seed in range(3):
        validation = split_groups(counts, 0.2, seed)
        share = counts[validation].sum(axis=0) / totals
        assert np.all(np.abs(share - 0.2) < 0.03), share
    assert not np.array_equal(split_groups(counts, 0.2, 0), split_groups(counts, 0.2, 1))


def test_split_groups_repairs_class_presence():
    # class 1 occurs in two small groups only; whatever the greedy pass does with them,
    # each side must get one, and no other class may disappear from a side
    counts = np.array([[100, 0], [100, 0], [100, 0], [100, 0], [100, 1], [100, 1]])
    for seed in range(10):
        validation = split_groups(counts, 0.2, seed)
        for c in range(2):
            assert counts[validation, c].sum() > 0 and counts[~validation, c].sum() > 0
    assert not split_groups(counts[:1], 0.5).any()  # one group: all in train


def test_split_edge_cases(auto):
    train, validation = split(auto, 0.0)
    assert len(validation) == 0 and len(train) == len(auto)
    one_larva = auto.subset(auto.groups == auto.groups[0])
    train, validation = split(one_larva, 0.5)
    assert len(validation) == 0 and len(train) == len(one_larva)
    with pytest.raises(ValueError):
        split(auto, 1.0)


# ------------------------------------------------------------------- HDF5
def test_hdf5_round_trip_and_name(tmp_path, auto):
    path = write_hdf5(auto, tmp_path / "interim")
    assert path.parent == tmp_path / "interim"
    match = re.fullmatch(r"larva_dataset_(\d{4})_(\d{2})_(\d{2})_20_0_(\d+)\.hdf5", path.name)
    assert match and int(match.group(4)) == len(auto)
    assert not [p for p in path.parent.iterdir() if p != path]  # no temporary file left
    assert_same(read_hdf5(path), auto)
    with h5py.File(path, "r") as h5:
        samples = h5["samples"]
        assert dict(samples.attrs) == {"len_traj": 20, "len_pred": 0, "n_samples": len(auto),
                                       "frame_interval": 0.1, "registered": 1,
                                       "rescaled": "median body length"}
        assert samples["windows"].shape == (len(auto), 2, 5, 20)
        assert samples["windows"].chunks is not None and samples["windows"].compression == "gzip"
        assert list(h5.attrs["labels"]) == LABELS
    explicit = write_hdf5(auto, tmp_path / "mine.hdf5", compression="lzf")
    assert explicit == tmp_path / "mine.hdf5"
    assert_same(read_hdf5(explicit), auto)


def test_hdf5_round_trip_of_split_and_context(tmp_path, repository):
    data = build_dataset(repository, ["roll", "¬roll"], WindowSpec(len_traj=10, len_pred=5),
                         balancing="maggotuba", sample_size=200)
    _, validation = split(data, 0.3, seed=2)
    path = write_hdf5(validation, tmp_path)
    assert path.name.endswith(f"_10_5_{len(validation)}.hdf5")
    assert_same(read_hdf5(path), validation)


def test_read_errors(tmp_path, auto):
    good = write_hdf5(auto.subset(np.arange(50)), tmp_path / "good.hdf5", compression=None)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.hdf5"
    for cut in (len(data) // 2, len(data) - 64, 5):
        truncated.write_bytes(data[:cut])
        with pytest.raises(FormatError) as err:
            read_hdf5(truncated)
        assert err.value.path == truncated
    other = tmp_path / "other.hdf5"
    with h5py.File(other, "w") as h5:
        h5.create_dataset("x", data=np.arange(3))
    with pytest.raises(FormatError, match="samples"):
        read_hdf5(other)
    missing = tmp_path / "missing_key.hdf5"
    missing.write_bytes(data)
    with h5py.File(missing, "a") as h5:
        del h5["samples/labels"]
        del h5.attrs["class_weights"]
    with pytest.raises(FormatError, match="samples/labels.*class_weights"):
        read_hdf5(missing)
    inconsistent = tmp_path / "inconsistent.hdf5"
    inconsistent.write_bytes(data)
    with h5py.File(inconsistent, "a") as h5:
        del h5["samples/t"]
        h5["samples/t"] = np.zeros(7)
    with pytest.raises(FormatError, match="t has shape"):
        read_hdf5(inconsistent)
    text = tmp_path / "text.hdf5"
    text.write_text("not hdf5")
    with pytest.raises(FormatError):
        read_hdf5(text)
    with pytest.raises(FormatError, match="no such file"):
        read_hdf5(tmp_path / "absent.hdf5")
