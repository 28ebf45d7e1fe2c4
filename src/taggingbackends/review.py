"""Review: which predicted segments a person should look at (and correct) first.

A *segment* is a bout (:mod:`taggingbackends.data.bouts`): a run of steps of one larva with
one primary label. A correction is most useful where the tagger is likely wrong, where it
puts many steps right, and where it teaches the tagger something the corrections before it
did not. So each segment gets:

1. a **doubt** in [0, 1] (``parts["doubt"]``), the weighted sum (:data:`WEIGHTS`) of four
   signs that the tagger is wrong there:

   * ``uncertainty``: 1 - the mean probability the tagger gave the segment's own label;
   * ``margin``: 1 - the mean gap between the two most probable classes (a near tie);
   * ``disagreement``: the mean fraction of neighbouring steps (±2 steps) carrying another
     label (flickering, very short segments);
   * ``rarity``: 1 - the label's frequency over the file / the most frequent label's
     frequency (rare classes are where taggers err most and where each corrected step
     teaches most);

2. a **length** factor ``log2(1 + steps)`` (``parts["length"]``): a long doubtful segment
   puts more steps right per look than a one-step flicker, with diminishing returns (its
   doubt is spread over more steps, and it takes longer to check);

3. a **spread**: the queue is built greedily, best first, and a segment's value is
   multiplied by :data:`SPREAD` (0.8) for every segment of the same label, and again for
   every segment of the same larva, already ahead of it in the queue. Without it the top of
   the queue clusters in one doubtful label or one badly tracked larva; with it the first
   corrections cover several labels and larvae (a tagger is scored, and fine-tuned, over
   every class). The first :data:`SPREAD_DEPTH` (1000) places are built this way; the rest
   follow by value with the multipliers reached by then (far beyond what a person reviews,
   and it keeps a file of 50,000 segments to about a second).

The segment's ``score`` is its value when it was queued: ``doubt × length × spread``. Scores
are non-increasing along the queue (and comparable across files of one recording setup).

Measured by ``benchmarks/active_learning.py`` (a simulated user who corrects the top N
segments, then fine-tunes; see docs/review.md, "Does the ranking pay?"): the doubt alone
(no length, no spread) lost to correcting random segments; doubt × length × spread beats
random segments at 10, 30 and 100 corrections on two simulated recordings, and 30 ranked
corrections do as well as 100 random ones.

Probabilities come from the ``<stem>.probabilities.h5`` sidecar written by ``predict``.
Without one, only ``disagreement`` and ``rarity`` remain (weights :data:`NO_PROBABILITY_WEIGHTS`).
Segments whose steps all carry ``edited`` are already reviewed and are left out.

>>> from taggingbackends.review import load_probabilities, rank_segments
>>> segments = rank_segments(labels, load_probabilities("predicted.probabilities.h5"))
>>> segments[0].larva, segments[0].start, segments[0].label, segments[0].score
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .data.bouts import bouts_of_sequence
from .data.labels import MANUAL_LABEL, Labels, entry_names, is_edited, match_times, primary
from .errors import FormatError

REVIEW_LABEL = "review"
NEIGHBOURHOOD = 2  # steps on each side for the disagreement score
WEIGHTS = {"uncertainty": 0.35, "margin": 0.25, "disagreement": 0.25, "rarity": 0.15}
NO_PROBABILITY_WEIGHTS = {"uncertainty": 0.0, "margin": 0.0, "disagreement": 0.6, "rarity": 0.4}
#: Factor on a segment's value per segment of the same label, and per segment of the same
#: larva, already queued ahead of it (1: no spreading, pure doubt × length order).
SPREAD = 0.8
#: Queue places built greedily with the spread; the rest follow by value (see _spread_queue).
SPREAD_DEPTH = 1000


@dataclass(frozen=True)
class ReviewSegment:
    """One segment to review: where it is, its label, its score and the score's parts."""

    larva: int
    label: str
    first: int            # index of the first step in the label track
    last: int             # index of the last step (inclusive)
    start: float          # s, time of the first step
    end: float            # s, time of the last step + one step interval
    score: float
    parts: Mapping[str, float] = field(default_factory=dict)

    @property
    def n_steps(self) -> int:
        return self.last - self.first + 1

    def as_dict(self) -> dict:
        return {"larva": self.larva, "label": self.label, "first": self.first, "last": self.last,
                "start": self.start, "end": self.end, "score": round(self.score, 4),
                "parts": {k: round(v, 4) for k, v in self.parts.items()}}


@dataclass
class Probabilities:
    """Per-step class probabilities of one run (the rows of a ``.probabilities.h5`` sidecar)."""

    labels: list[str]
    larva_id: np.ndarray       # (n_steps,)
    t: np.ndarray              # (n_steps,)
    values: np.ndarray         # (n_steps, n_labels) float32
    run_id: str | None = None
    path: Path | None = None

    def __post_init__(self) -> None:
        self.larva_id = np.asarray(self.larva_id, dtype=np.int64)
        self.t = np.asarray(self.t, dtype=np.float64)
        self.values = np.asarray(self.values, dtype=np.float32)
        order = np.lexsort((self.t, self.larva_id))  # by larva, then time: one slice per larva
        self.larva_id, self.t, self.values = self.larva_id[order], self.t[order], self.values[order]
        ids, starts = np.unique(self.larva_id, return_index=True)
        ends = np.append(starts[1:], self.larva_id.size)
        self._rows = {int(i): (int(a), int(b)) for i, a, b in zip(ids, starts, ends)}

    @classmethod
    def from_run(cls, run, labels: Sequence[str], values: np.ndarray) -> "Probabilities":
        """Probabilities given as one row per step of ``run`` (e.g. a maggotuba ``Prediction``'s
        ``prediction.probabilities`` with ``prediction.labels``), without a sidecar file."""
        return cls(list(labels), np.repeat(run.larva_ids, run.lengths), run.t, values, run_id=run.id)

    def for_track(self, larva: int, t: np.ndarray, names: Sequence[str] | None = None) -> np.ndarray:
        """``(len(t), len(names))`` probabilities of ``larva`` at times ``t`` (±1 ms), columns
        in the order of ``names`` (default: the sidecar's); NaN rows where no step matches,
        zero columns for names the tagger does not know."""
        names = list(names) if names is not None else self.labels
        out = np.full((len(t), len(names)), np.nan, dtype=np.float32)
        if larva not in self._rows:
            return out
        lo, hi = self._rows[larva]
        pos, ok = match_times(self.t[lo:hi], np.asarray(t, dtype=np.float64))
        column = {name: j for j, name in enumerate(self.labels)}
        rows = self.values[lo:hi][pos[ok]]
        block = np.zeros((rows.shape[0], len(names)), dtype=np.float32)
        for j, name in enumerate(names):
            if name in column:
                block[:, j] = rows[:, column[name]]
        out[ok] = block
        return out


def load_probabilities(path: str | os.PathLike) -> Probabilities:
    """Read a ``.probabilities.h5`` sidecar written by ``predict``."""
    import h5py

    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            labels = [v.decode() if isinstance(v, bytes) else str(v) for v in f.attrs["labels"]]
            run_id = f.attrs.get("run_id")
            return Probabilities(labels, f["larva_id"][()], f["t"][()], f["probabilities"][()],
                                 run_id=str(run_id) if run_id is not None else None, path=path)
    except (OSError, KeyError) as err:
        raise FormatError(path, f"not a probabilities sidecar ({err})") from err


def sidecar_candidates(label_path: Path, labels: Labels | None = None) -> list[Path]:
    """Where the probabilities of a label file may be, most specific first: the file named in
    its metadata (``probabilities``, written by ``view`` on save), ``<stem>.probabilities.h5``
    and, for derived files such as ``predicted.edited.label``, ``predicted.probabilities.h5``."""
    label_path = Path(label_path)
    found: list[Path] = []
    named = labels.metadata.get("probabilities") if labels is not None else None
    if isinstance(named, str) and named and Path(named).name == named:
        found.append(label_path.parent / named)
    found.append(label_path.with_name(label_path.name.rsplit(".", 1)[0] + ".probabilities.h5"))
    found.append(label_path.with_name(label_path.name.split(".", 1)[0] + ".probabilities.h5"))
    return list(dict.fromkeys(found))


def find_probabilities(label_path: Path, labels: Labels) -> Probabilities | None:
    """The sidecar of ``label_path`` for the same run, or None if there is none."""
    for candidate in sidecar_candidates(label_path, labels):
        if candidate.is_file():
            probabilities = load_probabilities(candidate)
            if probabilities.run_id in (None, "", labels.run_id):
                return probabilities
    return None


# ------------------------------------------------------------------ ranking
def label_frequencies(labels: Labels) -> dict[str, float]:
    """Fraction of labelled steps carrying each primary label."""
    counts: dict[str, int] = {}
    for track in labels.tracks.values():
        for entry in track.labels:
            name = primary(entry)
            if name is not None:
                counts[name] = counts.get(name, 0) + 1
    total = sum(counts.values())
    return {name: n / total for name, n in counts.items()} if total else {}


def neighbour_disagreement(names: Sequence[str | None], width: int = NEIGHBOURHOOD) -> np.ndarray:
    """Per step, the fraction of the steps within ±``width`` (inside the track) whose label
    differs from its own."""
    codes = {name: i for i, name in enumerate(dict.fromkeys(names))}
    values = np.array([codes[n] for n in names], dtype=np.int64)
    n = values.size
    differ = np.zeros(n, dtype=np.float64)
    count = np.zeros(n, dtype=np.float64)
    for shift in range(1, width + 1):
        if shift >= n:
            break
        d = (values[shift:] != values[:-shift]).astype(np.float64)
        differ[shift:] += d
        differ[:-shift] += d
        count[shift:] += 1
        count[:-shift] += 1
    return np.divide(differ, count, out=np.zeros(n), where=count > 0)


def rank_segments(labels: Labels, probabilities: Probabilities | None = None, *,
                  weights: Mapping[str, float] | None = None, spread: float = SPREAD) -> list[ReviewSegment]:
    """Every not-yet-edited segment of ``labels``, most useful to correct first.

    ``probabilities`` (a sidecar, see :func:`load_probabilities`) adds the uncertainty and
    margin parts of the doubt; without it the doubt uses neighbour disagreement and class
    rarity only. ``weights`` replaces the doubt's weights; ``spread`` (in (0, 1]) the factor
    per segment of the same label or larva queued ahead (see the module docstring).
    Ties are broken by larva and time, so the order is deterministic.
    """
    if not 0.0 < spread <= 1.0:
        raise ValueError(f"spread must be in (0, 1], got {spread}")
    if weights is None:
        weights = WEIGHTS if probabilities is not None else NO_PROBABILITY_WEIGHTS
    frequency = label_frequencies(labels)
    most = max(frequency.values(), default=1.0)
    candidates: list[ReviewSegment] = []
    for larva in sorted(labels.tracks):
        track = labels.tracks[larva]
        names = [primary(e) for e in track.labels]
        edited = np.fromiter((is_edited(e) for e in track.labels), dtype=bool, count=len(names))
        disagreement = np.cumsum(np.concatenate([[0.0], neighbour_disagreement(names)]))
        own, margin, covered = _step_doubts(track.t, names, larva, probabilities)
        for bout in bouts_of_sequence(larva, track.t, names):
            a, b = bout.first, bout.last + 1
            if edited[a:b].all():
                continue
            parts = {"disagreement": float((disagreement[b] - disagreement[a]) / (b - a)),
                     "rarity": 1.0 - frequency.get(bout.label, 0.0) / most,
                     "uncertainty": 0.0, "margin": 0.0}
            n = covered[b] - covered[a]
            if n > 0:
                parts["uncertainty"] = float(1.0 - (own[b] - own[a]) / n)
                parts["margin"] = float(1.0 - (margin[b] - margin[a]) / n)
            parts["doubt"] = float(sum(weights.get(k, 0.0) * v for k, v in parts.items()))
            parts["length"] = float(np.log2(1.0 + (b - a)))
            candidates.append(ReviewSegment(larva, bout.label, bout.first, bout.last, bout.start, bout.end,
                                            parts["doubt"] * parts["length"], parts))
    return _spread_queue(candidates, spread)


def _spread_queue(candidates: Sequence[ReviewSegment], spread: float,
                  depth: int = SPREAD_DEPTH) -> list[ReviewSegment]:
    """Greedy queue: repeatedly the candidate of highest ``score × spread^(same label queued)
    × spread^(same larva queued)`` (ties: larva, then time), its ``score`` set to that value.

    Segments sharing a label and a larva share their multiplier, so only the best remaining
    one of each (label, larva) group can be next: each pick compares the group heads (one
    vectorised pass). After ``depth`` picks the rest follow by their value with the
    multipliers reached by then (one sort): the spread matters where a person starts, and a
    file of tens of thousands of segments would otherwise cost seconds per thousand picks.
    Either way scores never increase along the queue."""
    key = lambda s: (-s.score, s.larva, s.start)  # noqa: E731
    if spread == 1.0 or not candidates:
        return sorted(candidates, key=key)
    groups: dict[tuple, list[int]] = {}
    for i in sorted(range(len(candidates)), key=lambda i: key(candidates[i])):
        groups.setdefault((candidates[i].label, candidates[i].larva), []).append(i)
    members = list(groups.values())
    label_code = {label: k for k, label in enumerate(dict.fromkeys(label for label, _ in groups))}
    larva_code = {larva: k for k, larva in enumerate(dict.fromkeys(larva for _, larva in groups))}
    group_label = np.array([label_code[label] for label, _ in groups], dtype=np.int64)
    group_larva = np.array([larva_code[larva] for _, larva in groups], dtype=np.int64)
    queued_label = np.zeros(len(label_code), dtype=np.int64)
    queued_larva = np.zeros(len(larva_code), dtype=np.int64)
    head = np.zeros(len(members), dtype=np.int64)          # next member of each group
    head_score = np.array([candidates[m[0]].score for m in members], dtype=np.float64)
    queue: list[ReviewSegment] = []
    while len(queue) < min(depth, len(candidates)):
        value = head_score * spread ** queued_label[group_label] * spread ** queued_larva[group_larva]
        value[np.isinf(head_score)] = -np.inf               # exhausted groups (0 × -inf would be NaN)
        best = np.flatnonzero(value == value.max())
        g = int(min(best, key=lambda k: key(candidates[members[k][head[k]]])[1:]))
        queue.append(replace(candidates[members[g][head[g]]], score=float(value[g])))
        queued_label[group_label[g]] += 1
        queued_larva[group_larva[g]] += 1
        head[g] += 1
        head_score[g] = candidates[members[g][head[g]]].score if head[g] < len(members[g]) else -np.inf
    rest = [replace(candidates[i], score=float(candidates[i].score * spread ** queued_label[group_label[g]]
                                               * spread ** queued_larva[group_larva[g]]))
            for g, m in enumerate(members) for i in m[head[g]:]]
    return queue + sorted(rest, key=key)


def _step_doubts(t: np.ndarray, names: Sequence[str | None], larva: int,
                 probabilities: Probabilities | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative sums (length n + 1) of, per step covered by the sidecar: the probability of
    the step's own label, the gap between the two best classes, and 1 (the count)."""
    n = len(names)
    if probabilities is None:
        zeros = np.zeros(n + 1)
        return zeros, zeros, zeros
    p = probabilities.for_track(larva, t).astype(np.float64)
    column = {name: j for j, name in enumerate(probabilities.labels)}
    index = np.array([column.get(name, -1) for name in names], dtype=np.int64)
    covered = np.isfinite(p).all(axis=1) & (np.array([name is not None for name in names], dtype=bool))
    own = np.where(index >= 0, p[np.arange(n), np.clip(index, 0, None)], 0.0)
    best = np.sort(np.nan_to_num(p), axis=1)
    gap = best[:, -1] - best[:, -2] if p.shape[1] > 1 else best[:, -1]
    cumulate = lambda v: np.concatenate([[0.0], np.cumsum(np.where(covered, v, 0.0))])  # noqa: E731
    return cumulate(own), cumulate(gap), cumulate(np.ones(n))


def mark_review(labels: Labels, segments: Sequence[ReviewSegment], label: str = REVIEW_LABEL) -> Labels:
    """A copy of ``labels`` with the secondary label ``review`` on every step of ``segments``
    (so LarvaTagger users can jump to them too)."""
    marked = labels.copy()
    if label not in marked.secondarylabels:
        marked.secondarylabels.append(label)
    for segment in segments:
        track = marked.tracks[segment.larva]
        for i in range(segment.first, segment.last + 1):
            names = entry_names(track.labels[i])
            if names and label not in names:
                track.labels[i] = names + [label]
    return marked


__all__ = ["REVIEW_LABEL", "WEIGHTS", "NO_PROBABILITY_WEIGHTS", "SPREAD", "MANUAL_LABEL", "ReviewSegment",
           "Probabilities", "load_probabilities", "find_probabilities", "sidecar_candidates",
           "rank_segments", "mark_review", "neighbour_disagreement", "label_frequencies"]
