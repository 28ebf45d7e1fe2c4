"""Data for the report tests: a realistic evaluation JSON (the schema `evaluate --json`
writes, see the evaluation module) and small predicted label files with a sidecar."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from taggingbackends.cli import main, write_simulation
from taggingbackends.data.labels import Labels, TrackLabels
from taggingbackends.data.predicted import sidecar_path
from taggingbackends.simulate import SimulationConfig, simulate

def cli(*args) -> int:
    """Run the command line in-process; its exit status."""
    try:
        main([str(a) for a in args])
    except SystemExit as done:
        return int(done.code or 0)
    return 0


TAGGER_LABELS = ["back_large", "cast_large", "hunch_large", "roll_large", "run_large", "stop_large",
                 "small_motion"]
RENAME = {"run": "run_large", "cast": "cast_large", "back": "back_large", "stop": "stop_large",
          "hunch": "hunch_large", "roll": "roll_large", "small_motion": "small_motion"}


def _ratio(a: float, b: float):
    return float(a / b) if b else None


def realistic_evaluation(seed: int = 3) -> dict:
    """An evaluation at natural base rates: run ~65 %, cast ~25 %, roll never in the truth
    (its recall and F1 are null), hunch over-called; bouts with onset/offset errors."""
    rng = np.random.default_rng(seed)
    support = np.array([400, 5200, 60, 0, 13000, 600, 900])
    counts = np.zeros((7, 7), dtype=np.int64)
    for i, n in enumerate(support):
        if n:
            p = np.full(7, 0.02)
            p[i] = 0.8 + 0.1 * rng.random()
            p[2] += 0.03  # hunch over-called
            counts[i] = rng.multinomial(n, p / p.sum())
    predicted = counts.sum(axis=0)
    per_class, weighted = {}, {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    for i, name in enumerate(TAGGER_LABELS):
        precision = _ratio(counts[i, i], predicted[i])
        recall = _ratio(counts[i, i], support[i])
        f1 = (2 * precision * recall / (precision + recall)
              if precision is not None and recall is not None and precision + recall else None)
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": int(support[i])}
        for key, value in (("precision", precision), ("recall", recall), ("f1", f1)):
            weighted[key] += (value or 0.0) * support[i] / support.sum()
    macro = {key: float(np.mean([v[key] for v in per_class.values() if v[key] is not None]))
             for key in ("precision", "recall", "f1")}
    totals = counts.sum(axis=1, keepdims=True)
    normalised = np.divide(counts, totals, out=np.zeros((7, 7)), where=totals > 0).tolist()
    bouts = {}
    for i, name in enumerate(TAGGER_LABELS):
        true = int(support[i] // 25)
        found = int(round(true * (0.6 + 0.3 * rng.random())))
        predicted_bouts = int(found + rng.integers(0, 6))
        bouts[name] = {"true": true, "predicted": predicted_bouts, "found": found,
                       "recall": _ratio(found, true), "precision": _ratio(found, predicted_bouts),
                       "onset_error_s": float(rng.random() * 0.3) if found else None,
                       "offset_error_s": float(rng.random() * 0.4) if found else None}
    return {
        "kind": "evaluation",
        "labels": TAGGER_LABELS,
        "steps": {"matched": int(counts.sum() + 340), "compared": int(counts.sum()), "unpredicted": 290,
                  "unlabelled_truth": 50},
        "per_class": per_class,
        "macro": macro,
        "weighted": {k: float(v) for k, v in weighted.items()},
        "accuracy": float(np.trace(counts) / counts.sum()),
        "confusion": {"labels": TAGGER_LABELS, "counts": counts.tolist(), "normalised": normalised},
        "bouts": {"per_class": bouts,
                  "macro": {k: float(np.mean([b[k] for b in bouts.values() if b[k] is not None]))
                            for k in ("precision", "recall")}},
        "files": [{"predicted": "run1/predicted.label", "truth": "run1/groundtruth.label",
                   "run": "20260101_120100", "larvae": 12, "steps": int(counts.sum())}],
        "provenance": {"software": "taggingbackends", "command": "evaluate"},
    }


def predicted_run(folder: Path, n_larvae: int = 4, duration: float = 20.0, seed: int = 5) -> Path:
    """A simulated run (trx.mat, ground truth) and a predicted.label in the tagger's names,
    with colours and a probabilities sidecar. Returns the predicted label file."""
    result = simulate(SimulationConfig(n_larvae=n_larvae, duration=duration, seed=seed))
    write_simulation(result, folder, "trxmat")
    truth = Labels.load(folder / "groundtruth.label")
    colours = ["#2ca02c", "#d62728", "#9467bd", "#ff7f0e", "#1f77b4", "#7f7f7f", "#bcbd22"]
    predicted = Labels(TAGGER_LABELS, colors=colours, metadata={"id": truth.run_id},
                       tracking=[folder / "trx.mat"])
    rng = np.random.default_rng(seed)
    ids, times, probabilities = [], [], []
    for larva, track in truth.tracks.items():
        entries = [RENAME[e] for e in track.labels]
        for step in range(3, len(entries), 11):  # the tagger errs now and then
            entries[step] = "stop_large" if entries[step] != "stop_large" else "run_large"
        predicted.tracks[larva] = TrackLabels(track.t.copy(), entries)
        ids.append(np.full(len(track), larva))
        times.append(track.t)
        probabilities.append(rng.dirichlet(np.ones(7), size=len(track)).astype(np.float32))
    path = folder / "predicted.label"
    predicted.dump(path)
    write_sidecar(path, ids, times, probabilities, TAGGER_LABELS, truth.run_id)
    return path


def write_sidecar(label_path: Path, larva_ids: list, times: list, probabilities: list,
                  labels: list, run_id: str) -> None:
    """A minimal probabilities sidecar beside ``label_path`` (per-larva arrays concatenated)."""
    with h5py.File(sidecar_path(label_path), "w") as f:
        f["larva_id"] = np.concatenate(larva_ids).astype(np.int32)
        f["t"] = np.concatenate(times)
        f["probabilities"] = np.concatenate(probabilities)
        f.attrs["labels"] = labels
        f.attrs["run_id"] = run_id
