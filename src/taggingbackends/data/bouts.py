"""Bouts: maximal runs of consecutive steps of one larva that share a primary label.

Ethologists count and time behaviour in bouts (a cast of 1.2 s, a run of 8 s). Evaluation
(bout-level agreement), export (the bouts table), reports (bout durations, transitions) and
review (segments to correct) all use this one definition.

A bout's ``start`` is the time of its first step and its ``end`` the time of its last step
plus one step interval (the median interval of the track), so that ``duration = end - start``
counts every step, and a one-step bout lasts one frame. Unlabelled steps (``[]``) and
missing steps end a bout and start none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from .labels import TrackLabels, primary


@dataclass(frozen=True)
class Bout:
    """One bout of one larva: label, step indices ``[first, last]`` and times in seconds."""

    larva: int
    label: str
    first: int          # index of the first step in the track
    last: int           # index of the last step (inclusive)
    start: float        # time of the first step
    end: float          # time of the last step plus one step interval

    @property
    def duration(self) -> float:
        return self.end - self.start

    @property
    def n_steps(self) -> int:
        return self.last - self.first + 1


def step_interval(t: np.ndarray) -> float:
    """The track's typical time between steps (median; 0 for a one-step track)."""
    t = np.asarray(t, dtype=np.float64)
    return float(np.median(np.diff(t))) if t.size > 1 else 0.0


def bouts_of_sequence(larva: int, t: np.ndarray, names: Sequence[str | None]) -> Iterator[Bout]:
    """Bouts of one track given its times and one primary label (or None) per step."""
    t = np.asarray(t, dtype=np.float64)
    if len(names) != t.size:
        raise ValueError(f"{t.size} times but {len(names)} labels")
    dt = step_interval(t)
    first = None
    for i, name in enumerate(list(names) + [None]):
        if first is not None and (name is None or name != names[first]):
            yield Bout(larva, names[first], first, i - 1, float(t[first]), float(t[i - 1] + dt))
            first = None
        if first is None and name is not None:
            first = i


def track_bouts(larva: int, track: TrackLabels) -> list[Bout]:
    """Bouts of one track of a ``.label`` file (primary labels; secondary ones ignored)."""
    return list(bouts_of_sequence(larva, track.t, [primary(e) for e in track.labels]))


def label_bouts(labels) -> list[Bout]:
    """Bouts of every track of a :class:`~taggingbackends.data.labels.Labels`, by larva."""
    return [bout for larva in sorted(labels.tracks) for bout in track_bouts(larva, labels.tracks[larva])]
