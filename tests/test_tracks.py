"""The Run data model: construction, validation, views."""

from __future__ import annotations

import numpy as np
import pytest

from taggingbackends.data.tracks import Run, outline_vertex_counts, pad_outlines
from taggingbackends.errors import ValidationError


def make(times=None, spines=None, **kwargs) -> Run:
    times = times if times is not None else [np.array([0.0, 0.1, 0.2]), np.array([5.0, 5.1])]
    spines = spines if spines is not None else [np.zeros((len(t), 11, 2)) for t in times]
    return Run.from_tracks("20200101_000000", list(range(1, len(times) + 1)), times, spines, **kwargs)


def test_concatenated_layout_and_views():
    run = make()
    assert run.n_tracks == 2 and run.n_steps == 5 and run.n_points == 11
    assert run.offsets.tolist() == [0, 3, 5]
    assert run.track_index.tolist() == [0, 0, 0, 1, 1]
    track = run[2]
    assert track.t.tolist() == [5.0, 5.1]
    assert np.shares_memory(track.spine, run.spine)  # a view, not a copy
    assert [t.larva_id for t in run] == [1, 2]
    assert run.nbytes > 0 and "tracks=2" in repr(run)
    with pytest.raises(KeyError):
        run[99]


def test_time_may_restart_across_tracks_but_not_within():
    make([np.array([5.0, 6.0]), np.array([0.0, 1.0])])
    with pytest.raises(ValidationError, match="larva 2 are not strictly increasing"):
        make([np.array([0.0, 1.0]), np.array([3.0, 3.0])])


@pytest.mark.parametrize("change, problem", [
    (lambda t, s: (t, [np.full_like(s[0], np.nan), s[1]]), "larva 1 has no spine data"),
    (lambda t, s: (t, [np.full_like(s[0], np.inf), s[1]]), "infinite spine"),
    (lambda t, s: ([np.array([0.0, np.nan, 0.2]), t[1]], s), "non-finite timestamps"),
    (lambda t, s: (t, [np.zeros((3, 11, 3)), np.zeros((2, 11, 3))]), "spine has shape"),
    (lambda t, s: (t, [np.zeros((3, 1, 2)), np.zeros((2, 1, 2))]), "at least 2 points"),
])
def test_validation_errors(change, problem):
    times = [np.array([0.0, 0.1, 0.2]), np.array([5.0, 5.1])]
    spines = [np.zeros((3, 11, 2)), np.zeros((2, 11, 2))]
    t, s = change(times, spines)
    with pytest.raises(ValidationError, match=problem):
        make(t, s)


def test_partly_missing_spines_are_allowed():
    spines = [np.zeros((3, 11, 2)), np.zeros((2, 11, 2))]
    spines[0][1] = np.nan
    run = make(spines=spines)
    assert np.isnan(run.track(0).spine[1]).all()


def test_duplicate_ids_and_bad_offsets():
    run = make()
    with pytest.raises(ValidationError, match="duplicate larva ids"):
        Run(id="x", larva_ids=[1, 1], offsets=run.offsets, t=run.t, spine=run.spine)
    with pytest.raises(ValidationError, match="at least one time step"):
        Run(id="x", larva_ids=[1, 2], offsets=[0, 0, 5], t=run.t, spine=run.spine)


def test_tags_shape_checked_and_with_tags():
    run = make()
    tagged = run.with_tags(np.ones((5, 2), dtype=bool), ["run", "cast"])
    assert tagged.track(1).active_tags(0) == ["run", "cast"]
    assert tagged.spine is run.spine
    with pytest.raises(ValidationError, match="tags have shape"):
        run.with_tags(np.ones((4, 2), dtype=bool), ["run", "cast"])
    with pytest.raises(ValidationError, match="tag names given without tags"):
        run.with_tags(None, ["run"])


def test_outline_padding_and_vertex_counts():
    per_step = [[np.ones((3, 2)), np.ones((5, 2))], np.ones((1, 4, 2))]
    padded = pad_outlines(per_step)
    assert padded.shape == (3, 5, 2) and padded.dtype == np.float32
    assert outline_vertex_counts(padded).tolist() == [3, 5, 4]
    run = make([np.array([0.0, 0.1]), np.array([1.0])],
               [np.zeros((2, 11, 2)), np.zeros((1, 11, 2))], outlines=per_step)
    assert run.outline.shape == (3, 5, 2)
