"""K-fold cross-validation of a tagger, grouped by larva or by file.

A larva's windows overlap in time, so a random split of windows would put near-copies of
a test window in the training set and flatter the scores. Folds are therefore made of
whole groups: ``larva`` (one group per file and larva, the dataset's ``groups``) or
``file`` (every larva of a recording together, for recording-to-recording variation).
No group is ever on both sides of a fold (checked).

Groups are dealt to folds largest first (ties broken by a seeded shuffle), each to the
fold holding the fewest windows so far, so folds have similar sizes. For each fold a
tagger is trained on the other folds (with its own inner validation split by larva for
model selection, as ``train`` does) and scored on the held-out fold; per-class precision,
recall and F1 are summarised as mean ± sample standard deviation over the folds where
they are defined. The result is saved as ``metrics.json`` beside the final model, which
is trained on all the data as without cross-validation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from taggingbackends.errors import TaggingError
from taggingbackends.fileio import atomic_write_text

GROUPINGS = ("larva", "file")
METRICS_FILE = "metrics.json"


def group_ids(dataset, group_by: str) -> np.ndarray:
    """Per-sample group id: ``larva`` → (file, larva) groups, ``file`` → source file."""
    if group_by == "larva":
        return np.asarray(dataset.groups)
    if group_by == "file":
        return np.asarray(dataset.file)
    raise TaggingError(f"--group-by {group_by!r}: choose {' or '.join(GROUPINGS)}")


def fold_assignment(groups: np.ndarray, k: int, seed: int = 0, what: str = "larva") -> np.ndarray:
    """Per-sample fold index in ``0..k-1``; all samples of a group share a fold."""
    if k < 2:
        raise TaggingError(f"--cross-validate {k}: needs at least 2 folds")
    unique, inverse, sizes = np.unique(groups, return_inverse=True, return_counts=True)
    if len(unique) < k:
        raise TaggingError(f"--cross-validate {k}: only {len(unique)} {what} group(s) in the training data; "
                           f"use fewer folds{' or --group-by larva' if what == 'file' else ''}")
    jitter = np.random.default_rng([int(seed), k]).permutation(len(unique))
    order = np.lexsort((jitter, -sizes))
    load = np.zeros(k, dtype=np.int64)
    fold_of_group = np.empty(len(unique), dtype=np.int64)
    for g in order:
        fold = int(np.argmin(load))
        fold_of_group[g] = fold
        load[fold] += sizes[g]
    return fold_of_group[inverse]


def _mean_sd(values: Sequence[float | None]) -> dict:
    defined = [float(v) for v in values if v is not None]
    if not defined:
        return {"mean": None, "sd": None, "folds": 0}
    sd = float(np.std(defined, ddof=1)) if len(defined) > 1 else 0.0
    return {"mean": float(np.mean(defined)), "sd": sd, "folds": len(defined)}


def summarise(folds: list[dict], labels: Sequence[str]) -> dict:
    """Mean ± sd per class and metric, and of macro-F1 and accuracy, over fold results."""
    per_class = {name: {key: _mean_sd([f["per_class"][name][key] for f in folds])
                        for key in ("precision", "recall", "f1")} for name in labels}
    return {"per_class": per_class, "macro_f1": _mean_sd([f["macro_f1"] for f in folds]),
            "accuracy": _mean_sd([f["accuracy"] for f in folds])}


def cross_validate(dataset, k: int, group_by: str, *, seed: int, validation_fraction: float,
                   fit: Callable, predict: Callable, progress: Callable | None = None) -> dict:
    """Train and score one tagger per fold; the metrics document (see module docstring).

    ``fit(train, validation, progress)`` returns a model, ``predict(model, windows)`` its
    class indices; ``train``/``validation`` are :class:`maggotuba.dataset.LarvaDataset`."""
    from .dataset import split
    from .model_card import validation_scores

    labels = list(dataset.label_names)
    groups = group_ids(dataset, group_by)
    folds = fold_assignment(groups, k, seed, group_by)
    results = []
    for fold in range(k):
        test_mask = folds == fold
        if np.intersect1d(groups[test_mask], groups[~test_mask]).size:
            raise AssertionError(f"fold {fold + 1}: a {group_by} on both sides")  # cannot happen
        train, inner = split(dataset.subset(~test_mask), validation_fraction, seed=seed)
        if inner.n_samples == 0:
            inner = train
        stage = (lambda name, done, loss, f=fold: progress(f"fold {f + 1}/{k}, {name}", done, loss)) \
            if progress is not None else None
        model = fit(train, inner, stage)
        test = dataset.subset(test_mask)
        scores = validation_scores(test.labels, predict(model, test.windows), labels)
        results.append({"fold": fold + 1, "test_samples": int(test.n_samples),
                        "test_groups": int(np.unique(groups[test_mask]).size), **scores})
    return {"kind": "cross_validation", "folds": k, "group_by": group_by, "seed": int(seed), "labels": labels,
            **summarise(results, labels), "fold_results": results}


def save_metrics(metrics: dict, directory: Path) -> Path:
    path = Path(directory) / METRICS_FILE
    atomic_write_text(path, json.dumps(metrics, indent=1))
    return path
