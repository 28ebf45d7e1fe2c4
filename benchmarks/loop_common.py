"""Shared pieces of ``finetune_benchmark.py`` and ``active_learning.py``: a held-out
synthetic domain, label files of chosen larvae or corrected steps, and scoring.

The held-out domain: the simulator at natural base rates (no oversampling), 20 Hz
(the default model saw 11 and 16 Hz in training, 25 Hz in its evaluation), seeds
7000+ (it saw 100-951), twice the default tracking noise with five times the outliers
(a noisier rig) and longer tracks; written as trx.mat and read back, as a user's file
would be. The shipped default scores a macro-F1 of about 0.68 there (stop and
small_motion suffer most), so there is room for fine-tuning to show.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from taggingbackends.data.labels import Labels, TrackLabels
from taggingbackends.formats import load, save
from taggingbackends.simulate import SimulationConfig, simulate

from maggotuba.default_model import DEFAULT_LABELS, label_classes

EDITED = "edited"
#: What makes the held-out domain's rig differ from the ones the default model saw.
HELD_OUT = dict(spine_noise=0.011, spine_end_noise=0.018, outlier_prob=0.01, median_track_duration=40.0)


@dataclass
class Domain:
    """A simulated recording written as trx.mat and read back, with its ground truth."""

    directory: Path
    tracking: Path
    run: object               # taggingbackends Run read back from trx.mat
    truth: np.ndarray         # (n_steps,) index into DEFAULT_LABELS
    larvae: np.ndarray        # larva ids, in track order

    def rows(self, larva_ids) -> np.ndarray:
        """Step rows of the given larvae."""
        keep = np.isin(self.run.larva_ids[self.run.track_index], np.asarray(list(larva_ids)))
        return np.flatnonzero(keep)


def make_domain(directory: Path, *, seed: int = 7000, frame_rate: float = 20.0, n_larvae: int = 60,
                duration: float = 120.0) -> Domain:
    """Simulate the held-out recording into ``directory/trx.mat`` and read it back."""
    directory.mkdir(parents=True, exist_ok=True)
    result = simulate(SimulationConfig(n_larvae=n_larvae, duration=duration, frame_rate=frame_rate,
                                       seed=seed, frame_jitter=0.0, **HELD_OUT))
    tracking = directory / "trx.mat"
    save(result.run, tracking)
    run = load(tracking)
    if run.n_steps != result.run.n_steps:
        raise RuntimeError("trx.mat round trip changed the number of steps")
    truth = label_classes(result.behaviour)
    order = np.argsort(result.run.larva_ids[result.run.track_index], kind="stable")
    order_back = np.argsort(run.larva_ids[run.track_index], kind="stable")
    aligned = np.empty_like(truth)
    aligned[order_back] = truth[order]
    larvae = np.asarray(run.larva_ids)
    return Domain(directory, tracking, run, aligned, larvae)


def write_labels(domain: Domain, path: Path, classes: np.ndarray, labelled: np.ndarray,
                 edited: np.ndarray | None = None) -> Path:
    """A `.label` file on ``domain.tracking``: step ``i`` tagged ``DEFAULT_LABELS[classes[i]]``
    where ``labelled[i]``, plus the secondary ``edited`` label where ``edited[i]``.
    Larvae with no labelled step are left out (as a user labelling some larvae would)."""
    run = domain.run
    labels = Labels(list(DEFAULT_LABELS), secondarylabels=[EDITED], metadata={"id": run.id},
                    tracking=[domain.tracking])
    for track in range(run.n_tracks):
        rows = np.flatnonzero(run.track_index == track)
        rows = rows[labelled[rows]]
        if rows.size == 0:
            continue
        entries = []
        for row in rows:
            name = DEFAULT_LABELS[int(classes[row])]
            entries.append([name, EDITED] if edited is not None and edited[row] else name)
        labels.tracks[int(run.larva_ids[track])] = TrackLabels(run.t[rows].copy(), entries)
    labels.dump(path)
    return path


def scores(truth: np.ndarray, predicted: np.ndarray) -> dict:
    """Macro-F1 (classes present in truth) and per-class F1."""
    n = len(DEFAULT_LABELS)
    matrix = np.bincount(truth * n + predicted, minlength=n * n).reshape(n, n)
    per_class = {}
    for i, name in enumerate(DEFAULT_LABELS):
        tp = matrix[i, i]
        if matrix[i].sum() == 0:
            continue
        precision = tp / max(matrix[:, i].sum(), 1)
        recall = tp / matrix[i].sum()
        per_class[name] = 0.0 if tp == 0 else float(2 * precision * recall / (precision + recall))
    return {"macro_f1": float(np.mean(list(per_class.values()))), "per_class": per_class}


class Evaluator:
    """Scores taggers on fixed step rows of a domain (the larvae never trained on).

    The windows of those rows are built once (as ``predict`` builds them: edges clamped);
    a tagger is scored on the argmax of its classifier over its encoder's embeddings
    (the fast CPU encoder), per step, without the ``abc_aac`` post-processing: the same
    measure for every tagger compared, at a fraction of a full ``predict``'s cost.
    """

    def __init__(self, domain: Domain, rows: np.ndarray, spec) -> None:
        from maggotuba.features import make_windows

        self.rows = np.asarray(rows)
        self.truth = domain.truth[self.rows]
        self.windows = make_windows(domain.run, spec, rows=self.rows).data

    def latents(self, model) -> np.ndarray:
        """Embeddings of the windows, cached per encoder (a fast fine-tune keeps the encoder)."""
        import hashlib

        from maggotuba.finetune import embed

        digest = hashlib.sha1()
        for name, value in sorted(model.encoder.state_dict().items()):
            digest.update(name.encode())
            digest.update(value.detach().cpu().numpy().tobytes())
        key = digest.hexdigest()
        cache = self.__dict__.setdefault("_cache", {})
        if key not in cache:
            cache[key] = embed(model.encoder, self.windows)
        return cache[key]

    def classes(self, model) -> np.ndarray:
        return self.probabilities(model).argmax(axis=1)

    def probabilities(self, model) -> np.ndarray:
        import torch

        with torch.inference_mode():
            logits = model.classifier(torch.from_numpy(self.latents(model)))
            return torch.softmax(logits, dim=1).numpy()

    def __call__(self, model_or_dir) -> dict:
        from maggotuba.instances import load_tagger

        model = load_tagger(model_or_dir).model if isinstance(model_or_dir, (str, Path)) else model_or_dir
        return scores(self.truth, self.classes(model))


def temp_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))
