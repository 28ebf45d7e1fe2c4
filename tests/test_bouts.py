"""Bouts: runs of one primary label, with unlabelled steps breaking them."""

import numpy as np
import pytest

from taggingbackends.data.bouts import bouts_of_sequence, label_bouts, step_interval
from taggingbackends.data.labels import Labels, TrackLabels


def test_bouts_split_on_label_changes_and_gaps():
    t = np.arange(8) * 0.1
    names = ["run", "run", "cast", None, "cast", "cast", "run", "run"]
    bouts = list(bouts_of_sequence(3, t, names))
    assert [(b.label, b.first, b.last) for b in bouts] == [
        ("run", 0, 1), ("cast", 2, 2), ("cast", 4, 5), ("run", 6, 7)]
    assert bouts[1].duration == pytest.approx(0.1)        # one step lasts one frame
    assert bouts[0].start == 0.0 and bouts[0].end == pytest.approx(0.2)
    assert sum(b.n_steps for b in bouts) == 7              # the unlabelled step is in none


def test_label_bouts_reads_primary_labels_of_every_track():
    labels = Labels(["run", "cast", "edited"])
    labels.tracks[2] = TrackLabels([0.0, 0.5, 1.0], ["run", ["run", "edited"], "cast"])
    labels.tracks[1] = TrackLabels([0.0], [[]])
    bouts = label_bouts(labels)
    assert [(b.larva, b.label, b.n_steps) for b in bouts] == [(2, "run", 2), (2, "cast", 1)]
    assert step_interval(np.array([0.0])) == 0.0


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError):
        list(bouts_of_sequence(1, np.arange(3.0), ["run"]))
