"""How good are the tags? Predicted `.label` files scored against true ones.

Pure numpy (no torch), so that ``evaluate``, ``report`` and tests stay light.

**Pairing.** Predicted and true files are paired by run id (``metadata.id``), tracks by
larva id, and steps by time: a true step is matched to the nearest predicted step of the
same larva when they lie within half a frame (half the true track's median step
interval), so predictions on a resampled or slightly shifted clock still count.

**Steps.** Every true step is counted once, in exactly one of:

* ``unlabelled_truth``: the true entry is ``[]`` (nothing to score);
* ``unpredicted``: the true step has a label, but no predicted step within half a frame,
  no predicted track for that larva, or the prediction is ``[]`` (coverage; never dropped
  silently, also counted per class);
* ``compared``: both have a primary label; these fill the confusion matrix.

``matched`` counts true steps that have a predicted step within half a frame (whatever
the labels). Secondary labels (``edited``...) are ignored: the primary label is scored.

**Step scores** (per class): precision ``tp / predicted``, recall ``tp / support``,
``F1 = 2 tp / (2 tp + fp + fn)``; a value is ``None`` where undefined (precision of a class
never predicted, recall of a class absent from the truth). Macro averages run over the
classes present in the truth (a class present but never predicted counts as precision 0);
weighted averages weight them by support. Accuracy is the share of compared steps with
the right label.

**Bouts** (:mod:`taggingbackends.data.bouts`): a true bout is *found* when a predicted bout
of the same label overlaps it by at least half the true bout's duration; a predicted bout
is *correct* when a true bout of the same label overlaps it by at least half the predicted
bout's duration. Bout recall = found / true bouts, bout precision = correct / predicted
bouts, where only predicted bouts that overlap labelled true time count (sparse manual
labels do not turn every predicted bout elsewhere into an error). Onset and offset errors
are the mean absolute differences, in seconds, between a found true bout's start (end) and
that of the predicted bout overlapping it most.

The result is the dict described in ``docs/evaluation.md`` (keys shared with ``report``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from .data.bouts import Bout, bouts_of_sequence, step_interval
from .data.labels import LABEL_SUFFIXES, Labels, match_times, primary
from .errors import TaggingError
from .fileio import atomic_write_text

#: The simulator's behaviour names → the upstream tagger's names (``--map simulator``).
SIMULATOR_TO_UPSTREAM = {"run": "run_large", "cast": "cast_large", "back": "back_large",
                         "hunch": "hunch_large", "roll": "roll_large", "stop": "stop_large",
                         "small_motion": "small_motion"}
LABEL_MAP_PRESETS = {"simulator": SIMULATOR_TO_UPSTREAM}
MIN_TOLERANCE = 0.001  # s, time tolerance of a one-step track (no interval to halve)


# ------------------------------------------------------------------ inputs
@dataclass
class LabelledRun:
    """One run of a label file, with the file it came from."""

    labels: Labels
    path: Path

    @property
    def run_id(self) -> str:
        return str(self.labels.run_id)


def label_files(paths: Iterable[Path], pattern: str = "*.label") -> list[Path]:
    """Files given, and the label files matching ``pattern`` under directories given
    (recursively, sorted). A missing path is an error."""
    found: list[Path] = []
    for path in map(Path, paths):
        if not path.exists():
            raise TaggingError(f"{path}: no such file or directory")
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob(pattern)
                                if p.is_file() and p.suffix.lower() in LABEL_SUFFIXES))
        else:
            found.append(path)
    return found


def load_runs(paths: Sequence[Path], *, verify: bool = False) -> list[LabelledRun]:
    """Every run of every label file (a multi-run file gives several)."""
    return [LabelledRun(labels, Path(path)) for path in paths
            for labels in Labels.load_all(path, verify=verify).values()]


def pair_runs(predicted: Sequence[LabelledRun], truth: Sequence[LabelledRun]
              ) -> list[tuple[LabelledRun, LabelledRun]]:
    """(predicted, true) pairs by run id; TaggingError for a run on one side only or
    a run given twice on one side (naming the files)."""
    def by_run(runs: Sequence[LabelledRun], side: str) -> dict[str, LabelledRun]:
        out: dict[str, LabelledRun] = {}
        for run in runs:
            if run.run_id in out:
                raise TaggingError(f"run {run.run_id} has two {side} files: {out[run.run_id].path} and "
                                   f"{run.path}; give the files rather than their directory")
            out[run.run_id] = run
        return out

    if not predicted:
        raise TaggingError("no predicted label files to evaluate")
    if not truth:
        raise TaggingError("no true label files to compare with")
    pred, true = by_run(predicted, "predicted"), by_run(truth, "true")
    lonely = [f"{pred[r].path} (run {r})" for r in pred if r not in true]
    if lonely:
        raise TaggingError(f"no true labels for {', '.join(lonely)}; true runs: {', '.join(true)}")
    missing = [f"{true[r].path} (run {r})" for r in true if r not in pred]
    if missing:
        raise TaggingError(f"no predicted labels for {', '.join(missing)}; predicted runs: {', '.join(pred)}")
    return [(pred[r], true[r]) for r in pred]


def parse_label_map(text: str | None) -> dict[str, str]:
    """``"run=run_large,cast=cast_large"`` or a preset name (``simulator``) → a dict."""
    if not text:
        return {}
    if text in LABEL_MAP_PRESETS:
        return dict(LABEL_MAP_PRESETS[text])
    mapping = {}
    for item in text.split(","):
        old, sep, new = item.partition("=")
        if not sep or not old.strip() or not new.strip():
            raise TaggingError(f"--map {text!r}: expected OLD=NEW pairs separated by commas, or one of "
                               f"{', '.join(LABEL_MAP_PRESETS)}")
        mapping[old.strip()] = new.strip()
    return mapping


# ------------------------------------------------------------- step level
@dataclass
class _Tally:
    """Counts accumulated over every pair of runs."""

    names: list[str] = field(default_factory=list)
    pairs: dict[tuple[int, int], int] = field(default_factory=dict)   # (truth, pred) → steps
    unpredicted: dict[int, int] = field(default_factory=dict)          # truth class → steps
    truth_steps: int = 0
    matched: int = 0
    unlabelled_truth: int = 0
    predicted_unmatched: int = 0
    true_bouts: list = field(default_factory=list)       # (truth Bout, list of predicted Bouts)
    predicted_bouts: list = field(default_factory=list)  # (predicted Bout, list of true Bouts)

    def index(self, name: str) -> int:
        if name not in self.names:
            self.names.append(name)
        return self.names.index(name)


def _tolerance(t: np.ndarray) -> float:
    return max(step_interval(t) / 2, MIN_TOLERANCE)


def _tally_run(tally: _Tally, predicted: Labels, truth: Labels, label_map: Mapping[str, str]) -> int:
    """Add one run's steps and bouts to ``tally``; returns its number of true steps."""
    steps = 0
    for larva, true_track in truth.tracks.items():
        true_names = [_mapped(primary(e), label_map) for e in true_track.labels]
        steps += len(true_names)
        pred_track = predicted.tracks.get(larva)
        tolerance = _tolerance(true_track.t)
        if pred_track is None or len(pred_track) == 0:
            pred_names: list = [None] * len(true_names)
            ok = np.zeros(len(true_names), dtype=bool)
            pred_bouts: list[Bout] = []
        else:
            pos, ok = match_times(pred_track.t, true_track.t, tolerance=tolerance)
            all_pred = [primary(e) for e in pred_track.labels]
            pred_names = [all_pred[p] if hit else None for p, hit in zip(pos.tolist(), ok.tolist())]
            pred_bouts = list(bouts_of_sequence(larva, pred_track.t, all_pred))
            tally.predicted_unmatched += len(pred_track) - len(set(pos[ok].tolist()))
        tally.matched += int(ok.sum())
        for true_name, pred_name in zip(true_names, pred_names):
            if pred_name is not None:
                tally.index(pred_name)  # every class predicted at a true step is listed
            if true_name is None:
                tally.unlabelled_truth += 1
                continue
            i = tally.index(true_name)
            if pred_name is None:
                tally.unpredicted[i] = tally.unpredicted.get(i, 0) + 1
                continue
            key = (i, tally.index(pred_name))
            tally.pairs[key] = tally.pairs.get(key, 0) + 1
        _tally_bouts(tally, list(bouts_of_sequence(larva, true_track.t, true_names)), pred_bouts)
    for larva, pred_track in predicted.tracks.items():
        if larva not in truth.tracks:
            tally.predicted_unmatched += len(pred_track)
    tally.truth_steps += steps
    return steps


def _mapped(name: str | None, label_map: Mapping[str, str]) -> str | None:
    return None if name is None else label_map.get(name, name)


def _overlap(a: Bout, b: Bout) -> float:
    return max(0.0, min(a.end, b.end) - max(a.start, b.start))


def _tally_bouts(tally: _Tally, true_bouts: list[Bout], pred_bouts: list[Bout]) -> None:
    for bout in true_bouts:
        tally.index(bout.label)
        tally.true_bouts.append((bout, [p for p in pred_bouts if _overlap(bout, p) > 0]))
    for bout in pred_bouts:
        overlapping = [t for t in true_bouts if _overlap(bout, t) > 0]
        if overlapping:  # only predicted bouts over labelled true time are judged
            tally.index(bout.label)
            tally.predicted_bouts.append((bout, overlapping))


# ------------------------------------------------------------------ scores
def _ratio(num: float, den: float) -> float | None:
    return float(num) / float(den) if den else None


def class_scores(confusion: np.ndarray, names: Sequence[str]) -> dict:
    """Per-class precision, recall, F1 and support from a confusion matrix (rows truth)."""
    out = {}
    for i, name in enumerate(names):
        tp = int(confusion[i, i])
        support, called = int(confusion[i].sum()), int(confusion[:, i].sum())
        out[name] = {"precision": _ratio(tp, called), "recall": _ratio(tp, support),
                     "f1": _ratio(2 * tp, support + called), "support": support}
    return out


def averages(per_class: Mapping[str, Mapping]) -> tuple[dict, dict]:
    """(macro, weighted) precision, recall and F1 over classes present in the truth."""
    present = [s for s in per_class.values() if s["support"] > 0]
    if not present:
        empty = {"precision": None, "recall": None, "f1": None}
        return dict(empty), dict(empty)
    support = np.array([s["support"] for s in present], dtype=np.float64)
    macro, weighted = {}, {}
    for key in ("precision", "recall", "f1"):
        values = np.array([s[key] or 0.0 for s in present])
        macro[key] = float(values.mean())
        weighted[key] = float((values * support).sum() / support.sum())
    return macro, weighted


def bout_scores(tally: _Tally) -> dict:
    """Per-class bout precision, recall and onset/offset errors, with macro averages."""
    stats = {name: {"true": 0, "predicted": 0, "found": 0, "correct": 0, "onset": [], "offset": []}
             for name in tally.names}
    for bout, candidates in tally.true_bouts:
        entry = stats[bout.label]
        entry["true"] += 1
        same = [p for p in candidates if p.label == bout.label]
        best = max(same, key=lambda p: _overlap(bout, p), default=None)
        if best is not None and _overlap(bout, best) >= bout.duration / 2 - 1e-9:
            entry["found"] += 1
            entry["onset"].append(abs(best.start - bout.start))
            entry["offset"].append(abs(best.end - bout.end))
    for bout, candidates in tally.predicted_bouts:
        entry = stats[bout.label]
        entry["predicted"] += 1
        if any(t.label == bout.label and _overlap(bout, t) >= bout.duration / 2 - 1e-9 for t in candidates):
            entry["correct"] += 1
    per_class = {}
    for name, s in stats.items():
        per_class[name] = {"true": s["true"], "predicted": s["predicted"], "found": s["found"],
                           "correct": s["correct"],
                           "recall": _ratio(s["found"], s["true"]),
                           "precision": _ratio(s["correct"], s["predicted"]),
                           "onset_error_s": float(np.mean(s["onset"])) if s["onset"] else None,
                           "offset_error_s": float(np.mean(s["offset"])) if s["offset"] else None}
    present = [v for v in per_class.values() if v["true"] > 0]
    macro = {"precision": float(np.mean([v["precision"] or 0.0 for v in present])) if present else None,
             "recall": float(np.mean([v["recall"] for v in present])) if present else None}
    return {"per_class": per_class, "macro": macro}


def _ordered_names(tally: _Tally, preferred: Sequence[str]) -> list[str]:
    """Classes seen in the truth or the predictions: the predicted files' declared order
    first, then the others in order of appearance."""
    seen = set(tally.names)
    return [n for n in preferred if n in seen] + [n for n in tally.names if n not in preferred]


# ---------------------------------------------------------------- evaluate
def evaluate(pairs: Sequence[tuple[LabelledRun, LabelledRun]], *,
             label_map: Mapping[str, str] | None = None, provenance: Mapping | None = None) -> dict:
    """Score predicted runs against true ones (see the module docstring); returns the
    evaluation dict (``kind: evaluation``) that ``--json`` writes and ``report`` reads.

    ``label_map`` renames true labels before comparison (e.g. the simulator's ``run`` to
    the tagger's ``run_large``)."""
    label_map = dict(label_map or {})
    tally = _Tally()
    files, preferred = [], []
    for predicted, truth in pairs:
        for name in predicted.labels.names:
            if name not in preferred:
                preferred.append(name)
        steps = _tally_run(tally, predicted.labels, truth.labels, label_map)
        files.append({"predicted": str(predicted.path), "truth": str(truth.path), "run": truth.run_id,
                      "larvae": len(truth.labels.tracks), "steps": steps})
    names = _ordered_names(tally, preferred)
    order = [tally.names.index(n) for n in names]
    remap = {old: new for new, old in enumerate(order)}
    confusion = np.zeros((len(names), len(names)), dtype=np.int64)
    for (i, j), count in tally.pairs.items():
        confusion[remap[i], remap[j]] += count
    per_class = class_scores(confusion, names)
    for old, count in tally.unpredicted.items():
        per_class[names[remap[old]]]["unpredicted"] = count
    for name in names:
        per_class[name].setdefault("unpredicted", 0)
    macro, weighted = averages(per_class)
    compared = int(confusion.sum())
    rows = confusion.sum(axis=1, keepdims=True)
    normalised = np.divide(confusion, rows, out=np.zeros(confusion.shape), where=rows > 0)
    tally.names = names  # bouts carry label names: only their order changes
    result = {
        "kind": "evaluation",
        "labels": names,
        "steps": {"truth": tally.truth_steps, "matched": tally.matched, "compared": compared,
                  "unpredicted": int(sum(tally.unpredicted.values())),
                  "unlabelled_truth": tally.unlabelled_truth,
                  "predicted_unmatched": tally.predicted_unmatched},
        "per_class": per_class,
        "macro": macro,
        "weighted": weighted,
        "accuracy": _ratio(np.trace(confusion), compared),
        "confusion": {"labels": names, "counts": confusion.tolist(),
                      "normalised": [[float(x) for x in row] for row in normalised]},
        "bouts": bout_scores(tally),
        "files": files,
        "provenance": dict(provenance or {}),
    }
    if label_map:
        result["label_map"] = label_map
    return result


def evaluate_files(predicted: Sequence[Path], truth: Sequence[Path], *,
                   label_map: Mapping[str, str] | None = None, verify: bool = False,
                   provenance: Mapping | None = None) -> dict:
    """Load, pair by run id and :func:`evaluate` label files."""
    pairs = pair_runs(load_runs(predicted, verify=verify), load_runs(truth, verify=verify))
    _check_vocabularies(pairs, dict(label_map or {}))
    return evaluate(pairs, label_map=label_map, provenance=provenance)


def _check_vocabularies(pairs, label_map: Mapping[str, str]) -> None:
    """Predicted and true labels that share no name cannot be compared: say so, and how."""
    for predicted, truth in pairs:
        true_names = {_mapped(n, label_map) for n in truth.labels.used_names()} - set(truth.labels.secondarylabels)
        pred_names = set(predicted.labels.used_names()) - set(predicted.labels.secondarylabels)
        if true_names and pred_names and not true_names & pred_names:
            hint = " (--map simulator renames the simulator's names to the tagger's)" \
                if true_names <= set(SIMULATOR_TO_UPSTREAM) else ""
            raise TaggingError(f"{predicted.path} and {truth.path} share no label name (predicted: "
                               f"{', '.join(sorted(pred_names))}; true: {', '.join(sorted(true_names))}); "
                               f"rename the true labels with --map OLD=NEW,...{hint}")


# ------------------------------------------------------------------ output
def weakest_first(result: Mapping) -> list[str]:
    """Classes present in the truth by ascending F1 (then the absent ones)."""
    per_class = result["per_class"]
    present = [n for n in result["labels"] if per_class[n]["support"] > 0]
    absent = [n for n in result["labels"] if per_class[n]["support"] == 0]
    return sorted(present, key=lambda n: (per_class[n]["f1"] or 0.0, n)) + absent


def to_json(result: Mapping, path: str | os.PathLike | None = None) -> str:
    """The evaluation as JSON text (written atomically to ``path`` when given)."""
    text = json.dumps(result, indent=1, allow_nan=False)
    if path is not None:
        atomic_write_text(Path(path), text + "\n")
    return text


CSV_COLUMNS = ("label", "precision", "recall", "f1", "support", "unpredicted",
               "bout_true", "bout_predicted", "bout_recall", "bout_precision",
               "onset_error_s", "offset_error_s")


def class_table(result: Mapping) -> list[dict]:
    """One row per class (the ``--csv`` table): step and bout scores."""
    rows = []
    for name in result["labels"]:
        s, b = result["per_class"][name], result["bouts"]["per_class"].get(name, {})
        rows.append({"label": name, "precision": s["precision"], "recall": s["recall"], "f1": s["f1"],
                     "support": s["support"], "unpredicted": s.get("unpredicted", 0),
                     "bout_true": b.get("true"), "bout_predicted": b.get("predicted"),
                     "bout_recall": b.get("recall"), "bout_precision": b.get("precision"),
                     "onset_error_s": b.get("onset_error_s"), "offset_error_s": b.get("offset_error_s")})
    return rows


def to_csv(result: Mapping, path: str | os.PathLike) -> None:
    """The per-class table as CSV (csv module; written atomically; empty cell = undefined)."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in class_table(result):
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    atomic_write_text(Path(path), buffer.getvalue())
