"""What a model instance is, in writing: ``model_card.md`` and the training class frequencies.

Every trained or fine-tuned instance gets a ``model_card.md`` beside its weights (labels,
window, frame interval, training data with SHA-1, larvae, steps per class, balancing,
iterations, validation metrics, cross-validation when run, software versions, weights
hash, date), so a tagger found on a disk says how it was made.

**Training class frequencies.** ``clf_config.json`` stores, per label,
``training_class_frequencies`` (share of the training samples) and
``training_effective_priors`` (the share weighted by the loss's class weights,
renormalised). A classifier trained with a weighted cross-entropy learns posteriors for
the *effective* priors (``auto`` balancing makes them uniform), which is what
``predict --priors`` divides by before multiplying by the target base rates (Bayes' rule).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import platform
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from taggingbackends.fileio import atomic_write_text

CARD_FILE = "model_card.md"
CONFIG_FILE = "clf_config.json"
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".bin", ".npz", ".joblib", ".forest", ".json")
NOT_WEIGHTS = ("clf_config.json", "autoencoder_config.json", "training_log.json", "metrics.json",
               "evaluation.json")


def class_frequencies(labels: Sequence[str], counts: Sequence[float],
                      class_weights: Sequence[float] | None = None) -> dict:
    """``{"training_class_frequencies": {label: share}, "training_effective_priors": {...}}``
    from the training samples per class and the loss weights (``None``: unweighted)."""
    counts = np.asarray(counts, dtype=np.float64)
    if counts.sum() <= 0:
        raise ValueError("no training samples")
    weights = np.ones_like(counts) if class_weights is None else np.asarray(class_weights, dtype=np.float64)
    effective = counts * weights
    return {"training_class_frequencies": {n: float(c) for n, c in zip(labels, counts / counts.sum())},
            "training_effective_priors": {n: float(c) for n, c in zip(labels, effective / effective.sum())}}


def weights_sha1(directory: Path) -> dict[str, str]:
    """SHA-1 of each weights file of a model instance (members of an ensemble included)."""
    out = {}
    for path in sorted(Path(directory).rglob("*")):
        if path.is_file() and path.suffix.lower() in WEIGHT_SUFFIXES and path.name not in NOT_WEIGHTS:
            out[path.relative_to(directory).as_posix()] = hashlib.sha1(path.read_bytes()).hexdigest()
    return out


def software_versions() -> dict[str, str]:
    from taggingbackends import __version__ as framework

    from . import __version__ as backend

    versions = {"python": platform.python_version(), "taggingbackends": framework, "maggotuba": backend,
                "numpy": np.__version__}
    try:
        import torch

        versions["torch"] = torch.__version__
    except ImportError:  # pragma: no cover - torch is a dependency of maggotuba
        pass
    return versions


def add_to_config(directory: Path, entries: Mapping) -> None:
    """Merge ``entries`` into a model instance's ``clf_config.json`` (atomically)."""
    path = Path(directory) / CONFIG_FILE
    document = json.loads(path.read_text())
    document.update(entries)
    atomic_write_text(path, json.dumps(document, indent=2))


def training_summary(dataset) -> dict:
    """Training data facts from a :class:`maggotuba.dataset.LarvaDataset`."""
    names = list(dataset.label_names)
    return {"files": [{"path": str(p), "sha1": s} for p, s in zip(dataset.sources, dataset.source_sha1)],
            "larvae": int(len(np.unique(dataset.groups))),
            "labelled_steps": {n: int(c) for n, c in zip(names, dataset.counts_before)},
            "samples": {n: int(c) for n, c in zip(names, dataset.counts_after)},
            "class_weights": {n: float(w) for n, w in zip(names, dataset.class_weights)}}


def validation_scores(truth: np.ndarray, predicted: np.ndarray, labels: Sequence[str]) -> dict:
    """Per-class precision, recall, F1 and support on the validation windows."""
    from taggingbackends.evaluation import averages, class_scores

    n = len(labels)
    confusion = np.bincount(np.asarray(truth) * n + np.asarray(predicted), minlength=n * n).reshape(n, n)
    per_class = class_scores(confusion, list(labels))
    macro, _ = averages(per_class)
    return {"per_class": per_class, "macro_f1": macro["f1"],
            "accuracy": float(np.trace(confusion) / max(confusion.sum(), 1))}


def _num(value, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def render(directory: Path, *, name: str, how: str, training: Mapping | None, validation: Mapping | None,
           cross_validation: Mapping | None = None) -> str:
    """The Markdown text of a model card, from the instance's ``clf_config.json`` and the
    facts given (training summary, validation scores, cross-validation metrics)."""
    config = json.loads((Path(directory) / CONFIG_FILE).read_text())
    labels = list(config.get("labels", []))
    window = config.get("window", {})
    lines = [f"# Model card: {name}", "",
             f"{how}. Kind: `{config.get('kind', '?')}`; created {config.get('created', '?')}.", "",
             "## Model", "",
             f"- labels ({len(labels)}): {', '.join(f'`{n}`' for n in labels)}",
             f"- window: {window.get('len_traj', '?')} points every {window.get('frame_interval', '?')} s "
             f"(frame interval), head `{window.get('head', '?')}`, edges `{window.get('edge', '?')}`",
             f"- post-processing: {', '.join(config.get('post_processing') or []) or 'none'}",
             f"- pretrained encoder: `{config.get('pretrained_model', '?')}`",
             f"- balancing: `{config.get('balancing', '?')}`; iterations (frozen encoder, fine-tuning): "
             f"{config.get('iterations', '?')}; seed {config.get('seed', '?')}"]
    calibration = config.get("calibration")
    if isinstance(calibration, dict) and "temperature" in calibration:
        lines.append(f"- calibration: temperature {calibration['temperature']} (ECE "
                     f"{calibration.get('ece_before', '?')} → {calibration.get('ece_after', '?')} on held-out larvae"
                     f"{'; ' + calibration['fitted_on'] if calibration.get('fitted_on') else ''}); "
                     "predict divides the logits by it")
    lines.append("")
    if training:
        lines += ["## Training data", "",
                  f"- {len(training['files'])} file(s), {training['larvae']} larvae", ""]
        if training.get("note"):
            lines += [training["note"], ""]
        if training["files"]:
            lines += ["| file | SHA-1 |", "|---|---|"]
            lines += [f"| `{f['path']}` | `{f['sha1'] or '(directory)'}` |" for f in training["files"]]
        lines += ["", "| label | labelled steps | samples | loss weight | frequency | effective prior |",
                  "|---|---:|---:|---:|---:|---:|"]
        freq = config.get("training_class_frequencies", {})
        prior = config.get("training_effective_priors", {})
        for n in labels:
            lines.append(f"| {n} | {training['labelled_steps'].get(n, 0)} | {training['samples'].get(n, 0)} | "
                         f"{_num(training['class_weights'].get(n))} | {_num(freq.get(n), 4)} | "
                         f"{_num(prior.get(n), 4)} |")
        lines.append("")
    if validation:
        lines += [f"## {validation.get('title', 'Validation (held-out larvae)')}", "",
                  f"macro-F1 {_num(validation.get('macro_f1'))}, accuracy {_num(validation.get('accuracy'))}", ""]
        if validation.get("per_class"):
            lines += ["| label | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
            for n, s in validation["per_class"].items():
                lines.append(f"| {n} | {_num(s['precision'])} | {_num(s['recall'])} | {_num(s['f1'])} | "
                             f"{s['support']} |")
            lines.append("")
    if cross_validation:
        lines += cross_validation_lines(cross_validation)
    lines += ["## Software and weights", ""]
    lines += [f"- {k} {v}" for k, v in software_versions().items()]
    lines += [f"- weights `{path}` SHA-1 `{digest}`" for path, digest in weights_sha1(directory).items()]
    lines += [f"- card written {_dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()}", ""]
    return "\n".join(lines)


def cross_validation_lines(metrics: Mapping) -> list[str]:
    """The cross-validation section (mean ± sd over folds, per class)."""
    lines = ["## Cross-validation", "",
             f"{metrics['folds']} folds grouped by {metrics['group_by']} (no {metrics['group_by']} on both sides); "
             f"macro-F1 {_num(metrics['macro_f1']['mean'])} ± {_num(metrics['macro_f1']['sd'])}", "",
             "| label | precision | recall | F1 |", "|---|---:|---:|---:|"]
    for n, s in metrics["per_class"].items():
        lines.append(f"| {n} | " + " | ".join(f"{_num(s[k]['mean'])} ± {_num(s[k]['sd'])}"
                                              for k in ("precision", "recall", "f1")) + " |")
    return lines + [""]


def write_card(directory: Path, **kwargs) -> Path:
    """Write ``model_card.md`` in ``directory`` (atomically); see :func:`render`."""
    path = Path(directory) / CARD_FILE
    atomic_write_text(path, render(directory, **kwargs))
    return path
