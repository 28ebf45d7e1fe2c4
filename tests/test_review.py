"""review: segment ranking on hand-built probabilities with a known answer, the review label
file, and the command end to end (with and without a probabilities sidecar)."""

from __future__ import annotations

import subprocess
import sys

import h5py
import numpy as np
import pytest

from taggingbackends.data.labels import Labels
from taggingbackends.review import (NO_PROBABILITY_WEIGHTS, Probabilities, mark_review, neighbour_disagreement,
                                    rank_segments)

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
    # the near tie first, then larva 2's doubtful run, then the sure runs (the shorter one,
    # with more of its steps next to the cast, before the longer one)
    assert [(s.larva, s.label, s.first, s.last) for s in segments] == [
        (1, "cast", 10, 11), (2, "run", 0, 19), (1, "run", 12, 19), (1, "run", 0, 9)]
    cast = segments[0]
    assert cast.parts["uncertainty"] == pytest.approx(0.5)
    assert cast.parts["margin"] == pytest.approx(0.95)
    assert cast.parts["rarity"] == pytest.approx(1 - 2 / 38)
    # larva 2's doubtful stretch outranks larva 1's sure run once disagreement is switched off
    only_probabilities = rank_segments(labels, probabilities, weights={"uncertainty": 1.0, "margin": 1.0})
    assert [(s.larva, s.first) for s in only_probabilities][:2] == [(1, 10), (2, 0)]
    assert only_probabilities[-1].score < only_probabilities[1].score


def test_ranking_without_probabilities_uses_disagreement_and_rarity():
    labels, _ = hand_built()
    segments = rank_segments(labels)
    assert segments[0].label == "cast" and segments[0].larva == 1
    assert set(segments[0].parts) == {"disagreement", "rarity", "uncertainty", "margin"}
    assert segments[0].parts["uncertainty"] == 0
    expected = sum(NO_PROBABILITY_WEIGHTS[k] * v for k, v in segments[0].parts.items())
    assert segments[0].score == pytest.approx(expected)
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
