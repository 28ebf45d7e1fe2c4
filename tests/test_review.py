"""review: segment ranking on hand-built probabilities with a known answer, the review label
file, and the command end to end (with and without a probabilities sidecar)."""

from __future__ import annotations

import subprocess
import sys

import h5py
import numpy as np
import pytest

from taggingbackends.data.labels import Labels
from taggingbackends.review import (NO_PROBABILITY_WEIGHTS, SPREAD, WEIGHTS, Probabilities, mark_review,
                                    neighbour_disagreement, rank_segments)

NAMES = ["run", "cast", "stop"]


def hand_built():
    """Two larvae, 20 steps at 10 Hz. Larva 1: run 0-9 (sure), cast 10-11 (near tie with run),
    run 12-19 (sure). Larva 2: run 0-19, sure except steps 5-14 (p = 0.55)."""
    labels = Labels(NAMES, metadata={"id": "20260101_000000"})
    t = np.round(np.arange(20) * 0.1, 3)
    labels.set_track(1, t, ["run"] * 10 + ["cast"] * 2 + ["run"] * 8)
    labels.set_track(2, t, ["run"] * 20)
    p = np.zeros((40, 3), dtype=np.float32)
    p[:, 0] = 0.95
    p[:, 2] = 0.05
    p[10:12] = [0.45, 0.5, 0.05]            # larva 1's cast: own 0.5, margin 0.05
    p[20 + 5:20 + 15] = [0.55, 0.0, 0.45]   # larva 2: doubtful middle
    probabilities = Probabilities(NAMES, np.repeat([1, 2], 20), np.concatenate([t, t]), p,
                                  run_id="20260101_000000")
    return labels, probabilities


def test_ranking_known_answer():
    labels, probabilities = hand_built()
    segments = rank_segments(labels, probabilities)
    # the near tie first, then larva 2's long doubtful run, then the sure runs (the longer
    # one first: same doubt-ish, more steps)
    assert [(s.larva, s.label, s.first, s.last) for s in segments] == [
        (1, "cast", 10, 11), (2, "run", 0, 19), (1, "run", 0, 9), (1, "run", 12, 19)]
    cast = segments[0]
    assert cast.parts["uncertainty"] == pytest.approx(0.5)
    assert cast.parts["margin"] == pytest.approx(0.95)
    assert cast.parts["rarity"] == pytest.approx(1 - 2 / 38)
    assert cast.parts["length"] == pytest.approx(np.log2(3))
    doubt = sum(WEIGHTS[k] * cast.parts[k] for k in WEIGHTS)
    assert cast.parts["doubt"] == pytest.approx(doubt)
    assert cast.score == pytest.approx(doubt * np.log2(3))          # first queued: nothing to spread from
    # larva 2's run: another label, another larva than the cast ahead of it, so no spread
    assert segments[1].score == pytest.approx(segments[1].parts["doubt"] * np.log2(21))
    # larva 1's first run: a run (larva 2's) and a larva-1 segment (the cast) are ahead of it
    third = segments[2]
    assert third.score == pytest.approx(third.parts["doubt"] * np.log2(11) * SPREAD * SPREAD)
    assert [s.score for s in segments] == sorted((s.score for s in segments), reverse=True)
    # larva 2's doubtful stretch outranks larva 1's sure runs once disagreement is switched off
    only_probabilities = rank_segments(labels, probabilities, weights={"uncertainty": 1.0, "margin": 1.0})
    assert {(s.larva, s.first) for s in only_probabilities[:2]} == {(1, 10), (2, 0)}
    assert only_probabilities[-1].parts["doubt"] < only_probabilities[1].parts["doubt"]


def many_larvae(n_larvae=6):
    """Larvae of 30 steps at 10 Hz: run, then one 4-step segment of ``stop`` (larvae 1-3) or
    ``cast`` (larvae 4-6), then run. Larva 1 also has a second, 4-step stop. Every stop is a
    little more doubtful (own probability 0.50) than every cast (0.52)."""
    labels = Labels(NAMES, metadata={"id": "20260101_000000"})
    t = np.round(np.arange(30) * 0.1, 3)
    rows, ids = [], []
    for larva in range(1, n_larvae + 1):
        other = "stop" if larva <= n_larvae // 2 else "cast"
        names = ["run"] * 30
        names[10:14] = [other] * 4
        if larva == 1:
            names[20:24] = [other] * 4
        labels.set_track(larva, t, names)
        p = np.tile(np.float32([0.96, 0.02, 0.02]), (30, 1))
        column = NAMES.index(other)
        own = 0.50 if other == "stop" else 0.52
        for i, name in enumerate(names):
            if name == other:
                p[i] = (1 - own) / 2
                p[i, column] = own
        rows.append(p)
        ids.append(np.full(30, larva))
    probabilities = Probabilities(NAMES, np.concatenate(ids), np.tile(t, n_larvae), np.concatenate(rows))
    return labels, probabilities


def test_spread_covers_labels_and_larvae_when_doubt_is_comparable():
    labels, probabilities = many_larvae()
    pure = rank_segments(labels, probabilities, spread=1.0)
    # by doubt alone the four stops (larva 1 twice) come first, every cast after them
    assert [s.label for s in pure[:4]] == ["stop"] * 4
    assert [s.larva for s in pure[:4]].count(1) == 2
    spread = rank_segments(labels, probabilities)
    top = spread[:4]
    assert {s.label for s in top} == {"stop", "cast"}        # both doubtful labels early
    assert len({s.larva for s in top}) == 4                 # four larvae, not larva 1 twice
    # the same segments, only reordered; scores still non-increasing
    assert sorted((s.larva, s.first) for s in spread) == sorted((s.larva, s.first) for s in pure)
    assert [s.score for s in spread] == sorted((s.score for s in spread), reverse=True)
    with pytest.raises(ValueError, match="spread"):
        rank_segments(labels, probabilities, spread=0.0)


def test_spread_depth_keeps_the_head_of_the_queue_and_sorts_the_rest():
    from taggingbackends.review import _spread_queue

    labels, probabilities = many_larvae()
    full = rank_segments(labels, probabilities)
    unspread = rank_segments(labels, probabilities, spread=1.0)
    shallow = _spread_queue(unspread, SPREAD, depth=2)
    assert shallow[:2] == full[:2]
    assert sorted((s.larva, s.first) for s in shallow) == sorted((s.larva, s.first) for s in full)
    assert [s.score for s in shallow] == sorted((s.score for s in shallow), reverse=True)


def test_long_doubtful_segment_outranks_a_slightly_more_doubtful_flicker():
    labels = Labels(NAMES, metadata={"id": "20260101_000000"})
    t = np.round(np.arange(40) * 0.1, 3)
    labels.set_track(1, t, ["run"] * 10 + ["cast"] + ["run"] * 29)            # a one-step flicker
    labels.set_track(2, t, ["run"] * 10 + ["cast"] * 20 + ["run"] * 10)       # a long doubtful cast
    p = np.tile(np.float32([0.95, 0.03, 0.02]), (80, 1))
    p[10] = [0.40, 0.45, 0.15]                      # the flicker: own 0.45
    p[40 + 10:40 + 30] = [0.35, 0.55, 0.10]         # the long cast: own 0.55
    probabilities = Probabilities(NAMES, np.repeat([1, 2], 40), np.concatenate([t, t]), p)
    segments = rank_segments(labels, probabilities)
    flicker = next(s for s in segments if s.larva == 1 and s.label == "cast")
    long = next(s for s in segments if s.larva == 2 and s.label == "cast")
    assert flicker.parts["doubt"] > long.parts["doubt"]
    assert segments[0] == long


def test_ranking_without_probabilities_uses_disagreement_and_rarity():
    labels, _ = hand_built()
    segments = rank_segments(labels)
    assert segments[0].label == "cast" and segments[0].larva == 1
    assert set(segments[0].parts) == {"disagreement", "rarity", "uncertainty", "margin", "doubt", "length"}
    assert segments[0].parts["uncertainty"] == 0
    expected = sum(NO_PROBABILITY_WEIGHTS[k] * segments[0].parts[k] for k in NO_PROBABILITY_WEIGHTS)
    assert segments[0].parts["doubt"] == pytest.approx(expected)
    assert segments[0].score == pytest.approx(expected * segments[0].parts["length"])
    assert segments[-1].larva == 2   # a steady run of the most common label: nothing to doubt


def test_edited_segments_are_left_out_and_ties_are_deterministic():
    labels, probabilities = hand_built()
    labels.tracks[1].labels[10:12] = [["cast", "edited"], ["cast", "edited"]]
    segments = rank_segments(labels, probabilities)
    assert (1, 10) not in [(s.larva, s.first) for s in segments]
    assert rank_segments(labels, probabilities) == segments


def test_probabilities_from_run_rows():
    from taggingbackends.data.tracks import Run

    labels, probabilities = hand_built()
    t = labels.tracks[1].t
    run = Run(id="20260101_000000", larva_ids=[1, 2], offsets=[0, 20, 40], t=np.concatenate([t, t]),
              spine=np.zeros((40, 2, 2)) + np.arange(2)[None, :, None])
    rows = Probabilities.from_run(run, NAMES, probabilities.values)
    assert rank_segments(labels, rows) == rank_segments(labels, probabilities)


def test_neighbour_disagreement():
    values = neighbour_disagreement(["a", "a", "b", "a", "a"], width=1)
    assert values.tolist() == [0.0, 0.5, 1.0, 0.5, 0.0]


def test_mark_review_marks_exactly_the_segments():
    labels, probabilities = hand_built()
    segments = rank_segments(labels, probabilities)[:1]
    marked = mark_review(labels, segments)
    assert "review" in marked.secondarylabels
    entries = marked.tracks[1].labels
    assert entries[10] == ["cast", "review"] and entries[11] == ["cast", "review"]
    assert entries[9] == "run" and entries[12] == "run"
    assert labels.tracks[1].labels[10] == "cast"   # the input is untouched


def write_case(directory, with_sidecar=True):
    labels, probabilities = hand_built()
    path = directory / "predicted.label"
    labels.dump(path)
    if with_sidecar:
        with h5py.File(directory / "predicted.probabilities.h5", "w") as f:
            f["larva_id"] = probabilities.larva_id.astype(np.int32)
            f["t"] = probabilities.t
            f["probabilities"] = probabilities.values
            f.attrs["labels"] = NAMES
            f.attrs["run_id"] = "20260101_000000"
    return path


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "taggingbackends.cli", *map(str, args)],
                          capture_output=True, text=True, env={"COLUMNS": "200", **__import__("os").environ})


def test_cli_end_to_end(tmp_path):
    path = write_case(tmp_path)
    result = run_cli("review", path, "--top", "2")
    assert result.returncode == 0, result.stderr
    assert "segments to review" in result.stdout and "cast" in result.stdout
    assert "no probabilities sidecar" not in result.stderr
    out = tmp_path / "predicted.review.label"
    marked = Labels.load(out)
    assert marked.metadata["review"]["command"] == "review"
    reviewed = {(larva, i) for larva, track in marked.tracks.items()
                for i, e in enumerate(track.labels) if isinstance(e, list) and "review" in e}
    assert reviewed == {(1, 10), (1, 11)} | {(2, i) for i in range(20)}
    again = run_cli("review", path)
    assert again.returncode == 1 and "already exists" in again.stderr
    assert run_cli("review", path, "--overwrite", "-o", "{dir}/other.label").returncode == 0
    assert (tmp_path / "other.label").is_file()


def test_cli_without_sidecar_says_so(tmp_path):
    path = write_case(tmp_path, with_sidecar=False)
    result = run_cli("review", path, "--top", "1")
    assert result.returncode == 0, result.stderr
    assert "no probabilities sidecar" in result.stderr
    marked = Labels.load(tmp_path / "predicted.review.label")
    assert marked.tracks[1].labels[10] == ["cast", "review"]


def test_cli_bad_input(tmp_path):
    missing = run_cli("review", tmp_path / "nope.label")
    assert missing.returncode == 1 and "nope.label" in missing.stderr
    bad = tmp_path / "bad.label"
    bad.write_text("{not json")
    result = run_cli("review", bad)
    assert result.returncode == 1 and "bad.label" in result.stderr and "Traceback" not in result.stderr
