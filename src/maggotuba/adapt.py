"""Unsupervised adaptation of a tagger to a user's recordings (``tagging-backend adapt``).

A tagger trained on one rig meets another with different class base rates (label shift)
and different-looking larvae (covariate shift). With no labels at all, two things can
still be learnt from the user's tracking files:

1. **Their class base rates** (label shift), by the EM algorithm of Saerens, Latinne &
   Decaestecker (2002, "Adjusting the outputs of a classifier to new a priori
   probabilities", Neural Computation 14:21-41): starting from the tagger's training
   priors, repeat *priors ← mean over steps of the prior-corrected posteriors* (Bayes'
   rule, :class:`maggotuba.predict.PriorShift`) until it settles. Each class keeps at
   least ``prior_floor`` so that none vanishes (a vanished class can never come back:
   its corrected posterior is 0 everywhere). The estimate is stored in the new
   instance (``adapted_priors`` in ``clf_config.json``); ``predict -m NEW --priors adapted``
   uses it (``predict``'s default stays ``natural``: the estimate measured worse, since it
   inherits the tagger's off-domain errors; docs/maggotuba.md).
2. **Self-training of the classifier head** (optional, ``self_train``): pseudo-labels are
   the prior-corrected argmax on fully tracked steps whose corrected top probability is
   at least ``confidence``; each class keeps at most ``per_class_cap`` of them (drawn at
   random, seeded) and only if they come from at least ``min_larvae`` larvae. The head
   is retrained on the frozen encoder's cached embeddings (the fast fine-tune's stage,
   :func:`maggotuba.finetune._train_head`), class-balanced (so its effective training
   priors stay uniform and the stored priors are not counted twice), pulled towards its
   original weights (``anchor``), for a few hundred seeded iterations. The iteration
   kept is the one agreeing best (macro-F1) with the pseudo-labels of held-out larvae
   of the user's files: there are no labels to judge it by. The priors are then
   estimated again with the new head.

Everything is seeded and single-threaded where it trains, so a given seed gives the
same weights on a given machine. What was done is recorded in ``clf_config.json``
(``adaptation``: inputs with SHA-1, settings, seed, priors, pseudo-label counts, the
source instance) and in ``model_card.md``.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from taggingbackends.errors import TaggingError
from taggingbackends.fileio import sha1sum

from .features import FULL, device_windows, prepare
from .models.tagger import SavedTagger


# ------------------------------------------------------------------ settings
@dataclass(frozen=True)
class AdaptSettings:
    """How ``adapt`` adapts. The defaults were chosen before measuring, not tuned: what they
    give is in docs/maggotuba.md (``benchmarks/adapt_benchmark.py``)."""

    prior_floor: float = 0.001           # each class's estimated base rate is at least this
    em_iterations: int = 500
    em_tolerance: float = 1e-7
    self_train: bool = True
    confidence: float = 0.9              # corrected top probability a pseudo-label needs
    per_class_cap: int = 3000            # pseudo-labels per class at most
    min_larvae: int = 2                  # a class's pseudo-labels come from this many larvae at least
    head_iterations: int = 300
    head_learning_rate: float = 0.002
    anchor: float = 0.01                 # L2 pull of the head towards its original weights
    validation_fraction: float = 0.25    # larvae held out to choose the iteration
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.prior_floor < 0.1:
            raise ValueError("prior_floor must be in [0, 0.1)")
        if not 0 < self.confidence < 1:
            raise ValueError("confidence must be between 0 and 1")
        for name in ("em_iterations", "per_class_cap", "min_larvae"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")
        if self.head_iterations < 0 or self.anchor < 0:
            raise ValueError("head_iterations and anchor must not be negative")
        if not 0 < self.validation_fraction < 1:
            raise ValueError("validation_fraction must be between 0 and 1")


# --------------------------------------------------------------- label shift
@dataclass(frozen=True)
class PriorEstimate:
    """Class base rates estimated by EM, and how the iteration went."""

    priors: np.ndarray
    iterations: int
    converged: bool


def floor_priors(priors: np.ndarray, floor: float) -> np.ndarray:
    """``priors`` mixed with the uniform floor so every class has at least ``floor``
    (``floor + (1 − K·floor)·priors``: sums to 1, order and ratios of large classes kept)."""
    priors = np.asarray(priors, dtype=np.float64)
    priors = priors / priors.sum()
    return floor + (1.0 - len(priors) * floor) * priors


def estimate_priors(probabilities: np.ndarray, training: np.ndarray, *, floor: float = 0.001,
                    max_iterations: int = 500, tolerance: float = 1e-7) -> PriorEstimate:
    """Class base rates of the data behind ``probabilities`` (posteriors of a classifier
    trained at class priors ``training``), by Saerens et al.'s EM: priors ← mean of the
    posteriors re-weighted by priors / training. Rows that are not finite probabilities
    are ignored; each estimate is floored (:func:`floor_priors`)."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise TaggingError(f"probabilities must be (n_steps, n_classes ≥ 2), got shape {p.shape}")
    training = np.asarray(training, dtype=np.float64)
    if training.shape != (p.shape[1],) or np.any(training <= 0) or not np.all(np.isfinite(training)):
        raise TaggingError("training priors must be positive, one per class")
    training = training / training.sum()
    p = p[np.all(np.isfinite(p), axis=1) & (p.sum(axis=1) > 0)]
    if len(p) == 0:
        raise TaggingError("no usable steps to estimate class base rates from")
    priors = floor_priors(training, floor)
    for iteration in range(1, max_iterations + 1):
        corrected = p * (priors / training)[None, :]
        corrected /= corrected.sum(axis=1, keepdims=True)
        updated = floor_priors(corrected.mean(axis=0), floor)
        change = float(np.abs(updated - priors).max())
        priors = updated
        if change < tolerance:
            return PriorEstimate(priors, iteration, True)
    return PriorEstimate(priors, max_iterations, False)


def corrected(probabilities: np.ndarray, priors: np.ndarray, training: np.ndarray) -> np.ndarray:
    """Posteriors under base rates ``priors`` of a classifier trained at ``training``."""
    shifted = np.asarray(probabilities, dtype=np.float64) * (np.asarray(priors) / np.asarray(training))[None, :]
    return shifted / np.maximum(shifted.sum(axis=1, keepdims=True), 1e-300)


# ------------------------------------------------------------ embedded steps
@dataclass
class EmbeddedSteps:
    """Every fully tracked step of the user's files: its embedding and its larva."""

    latents: np.ndarray       # (n, latent) float32, frozen encoder (eval mode)
    larvae: np.ndarray        # (n,) int64 larva index over all files
    n_larvae: int
    n_steps_read: int         # all steps, tracked or not


def embed_runs(saved: SavedTagger, runs: Sequence, device: str = "cpu", batch_size: int = 2048) -> EmbeddedSteps:
    """Embed every step of ``runs`` whose window is fully inside its track (the steps whose
    probabilities are trustworthy: no clamped ends, no gaps), as ``predict`` does."""
    from .predict import make_encoder

    encode = make_encoder(saved, device, "fp32")
    spec = replace(saved.spec, edge="clamp", len_pred=0)
    latents, larvae, offset, steps = [], [], 0, 0
    for run in runs:
        steps += run.n_steps
        prepared = prepare(run, spec.head).on(device)
        track = np.repeat(np.arange(run.n_tracks), run.lengths)
        for start in range(0, run.n_steps, batch_size):
            rows = torch.arange(start, min(start + batch_size, run.n_steps), device=device)
            data, quality = device_windows(prepared, rows, spec)
            keep = (quality.cpu().numpy() == FULL)
            if not keep.any():
                continue
            latent = encode(data.numpy() if data.device.type == "cpu" else data)
            latent = latent if isinstance(latent, np.ndarray) else latent.float().cpu().numpy()
            latents.append(np.asarray(latent, dtype=np.float32)[keep])
            larvae.append(offset + track[start:start + len(rows)][keep])
        offset += run.n_tracks
    if not latents:
        raise TaggingError("no fully tracked window in the input files: tracks too short or too gappy "
                           f"for {spec.len_traj} points at {spec.frame_interval} s")
    return EmbeddedSteps(np.concatenate(latents), np.concatenate(larvae).astype(np.int64), offset, steps)


@torch.inference_mode()
def head_probabilities(classifier: torch.nn.Module, latents: np.ndarray) -> np.ndarray:
    """Softmax of the classifier head on cached embeddings (float64)."""
    classifier = classifier.eval()
    logits = classifier(torch.from_numpy(latents))
    return torch.softmax(logits.double(), dim=1).numpy()


# -------------------------------------------------------------- self-training
@dataclass
class PseudoLabels:
    rows: np.ndarray          # indices into EmbeddedSteps
    classes: np.ndarray       # pseudo-label of each row
    confident: np.ndarray     # (K,) confident steps per class before caps
    larvae: np.ndarray        # (K,) larvae those came from
    kept: np.ndarray          # (K,) pseudo-labels kept per class


def pseudo_labels(posteriors: np.ndarray, larvae: np.ndarray, settings: AdaptSettings) -> PseudoLabels:
    """Confident prior-corrected argmax, class-balanced caps, classes seen in enough larvae."""
    n_classes = posteriors.shape[1]
    top, best = posteriors.max(axis=1), posteriors.argmax(axis=1)
    rng = np.random.default_rng([settings.seed, 7])
    rows, classes = [], []
    confident, n_larvae, kept = (np.zeros(n_classes, dtype=np.int64) for _ in range(3))
    for c in range(n_classes):
        candidates = np.flatnonzero((best == c) & (top >= settings.confidence))
        confident[c] = len(candidates)
        n_larvae[c] = len(np.unique(larvae[candidates]))
        if n_larvae[c] < settings.min_larvae:
            continue
        if len(candidates) > settings.per_class_cap:
            candidates = np.sort(rng.choice(candidates, settings.per_class_cap, replace=False))
        kept[c] = len(candidates)
        rows.append(candidates)
        classes.append(np.full(len(candidates), c, dtype=np.int64))
    if not rows:
        return PseudoLabels(np.zeros(0, np.int64), np.zeros(0, np.int64), confident, n_larvae, kept)
    return PseudoLabels(np.concatenate(rows), np.concatenate(classes), confident, n_larvae, kept)


def held_out_larvae(n_larvae: int, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask over larvae: True for the ones held out for validation (≥ 1, < all)."""
    rng = np.random.default_rng([seed, 11])
    n_out = min(max(int(round(fraction * n_larvae)), 1), n_larvae - 1)
    mask = np.zeros(n_larvae, dtype=bool)
    mask[rng.permutation(n_larvae)[:n_out]] = True
    return mask


def self_train_head(saved: SavedTagger, steps: EmbeddedSteps, labels: PseudoLabels, settings: AdaptSettings,
                    progress: Callable[[str, int, float], None] | None = None) -> tuple[dict, dict]:
    """Retrain the head on the pseudo-labels; returns (best head state, log)."""
    from torch import nn

    from .finetune import FastSettings, _train_head
    from .models.tagger import TaggerConfig

    n_classes = len(saved.config.labels)
    held_out = held_out_larvae(steps.n_larvae, settings.validation_fraction, settings.seed)[
        steps.larvae[labels.rows]]
    train_rows, validation_rows = labels.rows[~held_out], labels.rows[held_out]
    train_classes, validation_classes = labels.classes[~held_out], labels.classes[held_out]
    counts = np.bincount(train_classes, minlength=n_classes).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / max((counts > 0).sum(), 1), 0.0)
    config = replace(TaggerConfig(labels=list(saved.config.labels)), seed=settings.seed,
                     grad_clip=saved.config.grad_clip)
    fast = FastSettings(head_iterations=settings.head_iterations, head_learning_rate=settings.head_learning_rate,
                        anchor=settings.anchor)
    log: dict = {"train_loss": [], "validation": [], "best_macro_f1": -1.0, "best": None}
    torch.manual_seed(settings.seed)
    loss_fn = nn.CrossEntropyLoss(weight=torch.as_tensor(weights, dtype=torch.float32))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices; one thread is also what makes runs repeatable
    try:
        state = _train_head(saved.model, torch.from_numpy(steps.latents[train_rows]),
                            torch.from_numpy(train_classes), torch.from_numpy(steps.latents[validation_rows]),
                            validation_classes, loss_fn, config, fast, log, progress)
    finally:
        torch.set_num_threads(threads)
    log.update(train_counts=counts.astype(int).tolist(), class_weights=weights.tolist(),
               validation_steps=int(len(validation_rows)), train_steps=int(len(train_rows)))
    return state, log


# --------------------------------------------------------------------- whole
def read_inputs(sources: Sequence[Path], reader: dict | None) -> list:
    """Every input read; a file that cannot be read is an error naming it."""
    from taggingbackends.errors import FormatError
    from taggingbackends.formats import load

    runs = []
    for path in sources:
        try:
            run = load(Path(path), **(reader or {}))
        except TaggingError as err:
            message = str(err)
            raise (err if str(path) in message else TaggingError(f"{path}: {message}")) from None
        except (ValueError, KeyError, IndexError, OSError) as err:
            raise FormatError(Path(path), f"cannot be read as tracking data ({str(err).splitlines()[0]})") \
                from None
        if run.n_steps == 0:
            raise TaggingError(f"{path}: no tracked steps")
        runs.append(run)
    return runs


def _named(labels: Sequence[str], values) -> dict:
    return {n: round(float(v), 6) for n, v in zip(labels, values)}


def adapt_tagger(saved: SavedTagger, runs: Sequence, settings: AdaptSettings, device: str = "cpu",
                 progress: Callable[[str, int, float], None] | None = None) -> dict:
    """Adapt ``saved`` (in place: its head may be retrained) to ``runs``; returns what was
    done (priors, pseudo-label counts, validation agreement) for provenance and the card."""
    from .predict import _usable_training_priors

    labels = list(saved.config.labels)
    if getattr(saved, "members", None) is not None or saved.metadata.get("kind") != "maggotuba-dense":
        raise TaggingError(f"{saved.directory}: only dense taggers can be adapted (this one is "
                           f"{saved.metadata.get('kind')!r})")
    stored = saved.metadata.get("training_effective_priors")
    if not stored or list(stored) != labels:
        raise TaggingError(f"{saved.directory}: stores no training class priors; adapt needs them "
                           "(train or fine-tune it again with this version)")
    training, _ = _usable_training_priors(np.array([float(stored[n]) for n in labels]), labels)
    timings: dict = {}
    tick = time.perf_counter()
    steps = embed_runs(saved, runs, device)
    timings["embed"] = time.perf_counter() - tick
    probabilities = head_probabilities(saved.model.classifier.cpu(), steps.latents)
    first = estimate_priors(probabilities, training, floor=settings.prior_floor,
                            max_iterations=settings.em_iterations, tolerance=settings.em_tolerance)
    record: dict = {"steps_read": steps.n_steps_read, "steps_used": int(len(steps.latents)),
                    "larvae": steps.n_larvae, "training_priors": _named(labels, training),
                    "initial_estimate": {"priors": _named(labels, first.priors), "iterations": first.iterations,
                                         "converged": first.converged},
                    "mean_posterior": _named(labels, probabilities.mean(axis=0))}
    final, new_training = first, training
    if settings.self_train and settings.head_iterations > 0:
        tick = time.perf_counter()
        chosen = pseudo_labels(corrected(probabilities, first.priors, training), steps.larvae, settings)
        record["pseudo_labels"] = {"confident": _named(labels, chosen.confident), "larvae": _named(labels, chosen.larvae),
                                   "kept": _named(labels, chosen.kept)}
        trained_classes = int((chosen.kept > 0).sum())
        if steps.n_larvae < 2 or trained_classes < 2:
            record["self_training"] = {"skipped": f"{steps.n_larvae} larva(e), {trained_classes} class(es) with "
                                                  "confident pseudo-labels: need 2 of each"}
        else:
            state, log = self_train_head(saved, steps, chosen, settings, progress)
            saved.model.load_state_dict(state)
            saved.model.eval()
            counts = np.asarray(log["train_counts"], dtype=np.float64)
            effective = counts * np.asarray(log["class_weights"])
            new_training, note = _usable_training_priors(effective / effective.sum(), labels)
            record["self_training"] = {"agreement_macro_f1": {"before": log["validation"][0][2],
                                                              "best": log["best_macro_f1"]},
                                       "best_iteration": log["best"][1], "train_steps": log["train_steps"],
                                       "validation_steps": log["validation_steps"],
                                       "train_counts": _named(labels, counts), **({"note": note} if note else {})}
            probabilities = head_probabilities(saved.model.classifier, steps.latents)
            final = estimate_priors(probabilities, new_training, floor=settings.prior_floor,
                                    max_iterations=settings.em_iterations, tolerance=settings.em_tolerance)
            timings["self_training"] = time.perf_counter() - tick
    posteriors = corrected(probabilities, final.priors, new_training)
    record.update(priors=_named(labels, final.priors), em_iterations=final.iterations, em_converged=final.converged,
                  new_training_priors=_named(labels, new_training),
                  mean_entropy=float(-(posteriors * np.log(np.clip(posteriors, 1e-12, 1))).sum(axis=1).mean()),
                  timings={k: round(v, 2) for k, v in timings.items()})
    return record


def adapt_instance(sources: Sequence[Path], output_dir: Path, settings: AdaptSettings, *, start_from: Path,
                   device: str = "cpu", reader: dict | None = None, source_name: str | None = None,
                   instance_name: str | None = None,
                   progress: Callable[[str, int, float], None] | None = None) -> dict:
    """Read ``sources``, adapt the tagger in ``start_from`` to them and save the result as
    a new model instance in ``output_dir`` (weights, config with ``adapted_priors`` and
    ``adaptation`` provenance, model card). ``instance_name``: the name the instance will
    have (default: ``output_dir``'s; the command line writes into a temporary directory)."""
    from .model_card import software_versions
    from .instances import load_tagger
    from .models.tagger import LOG_FILE, save_tagger

    started = time.perf_counter()
    saved = load_tagger(start_from, device="cpu")
    runs = read_inputs(sources, reader)
    record = adapt_tagger(saved, runs, settings, device=device, progress=progress)
    labels = list(saved.config.labels)
    files = [{"path": str(p), "sha1": sha1sum(p) if Path(p).is_file() else None, "larvae": r.n_tracks, "steps": r.n_steps}
             for p, r in zip(sources, runs)]
    adaptation = {"method": "EM label-shift priors (Saerens et al. 2002)"
                            + (" + self-trained head" if "agreement_macro_f1" in record.get("self_training", {})
                               else ""),
                  "source_instance": {"name": source_name or Path(start_from).name, "path": str(start_from),
                                      "weights_sha1": saved.weights_sha1},
                  "inputs": files, "reader": reader or {}, "settings": asdict(settings), "seed": settings.seed,
                  "device": device, "software": software_versions(), **record}
    adaptation["seconds"] = round(time.perf_counter() - started, 2)
    metadata = {k: v for k, v in saved.metadata.items()
                if k not in ("kind", "window", "created", *saved.config.__dataclass_fields__)}
    extra = {**metadata, "training_effective_priors": record["new_training_priors"],
             "adapted_priors": record["priors"], "adaptation": adaptation}
    kept = record.get("self_training", {}).get("train_counts")
    if kept:  # the head was retrained: its training data are the pseudo-labels
        total = sum(kept.values())
        extra["training_class_frequencies"] = {n: v / total for n, v in kept.items()}
    config = replace(saved.config, seed=settings.seed)
    save_tagger(saved.model.cpu(), config, saved.model_config, saved.spec, output_dir, None, extra=extra)
    source_log = Path(start_from) / LOG_FILE
    if source_log.is_file():  # the source's training history still describes the encoder
        (output_dir / LOG_FILE).write_bytes(source_log.read_bytes())
    write_adaptation_card(output_dir, adaptation, labels, instance_name or output_dir.name)
    weights = (output_dir / "tagger.safetensors").read_bytes()
    return {"output": output_dir, "labels": labels, "priors": record["priors"],
            "pseudo_labels": record.get("pseudo_labels", {}).get("kept"), "self_training": record.get("self_training"),
            "larvae": record["larvae"], "steps": record["steps_used"], "seconds": adaptation["seconds"],
            "weights_sha1": hashlib.sha1(weights).hexdigest()}


def write_adaptation_card(output_dir: Path, adaptation: dict, labels: Sequence[str], name: str) -> Path:
    """``model_card.md``: the usual card plus what the adaptation estimated and kept."""
    from taggingbackends.fileio import atomic_write_text

    from .model_card import CARD_FILE, render

    source = adaptation["source_instance"]
    training = {"files": [{"path": f["path"], "sha1": f["sha1"]} for f in adaptation["inputs"]],
                "larvae": adaptation["larvae"],
                "note": "Unlabelled tracking files: the counts below are pseudo-labels (confident, "
                        "prior-corrected predictions of the source tagger), not annotations.",
                "labelled_steps": {n: int(v) for n, v in adaptation.get("pseudo_labels", {}).get("confident",
                                                                                                  {}).items()},
                "samples": {n: int(v) for n, v in adaptation.get("pseudo_labels", {}).get("kept", {}).items()},
                "class_weights": {}}
    self_training = adaptation.get("self_training", {})
    validation = None
    if "agreement_macro_f1" in self_training:
        agreement = self_training["agreement_macro_f1"]
        validation = {"title": "Agreement with pseudo-labels on held-out larvae (no ground truth exists)",
                      "macro_f1": agreement["best"], "accuracy": None}
    text = render(output_dir, name=name,
                  how=f"Adapted without labels by `tagging-backend adapt` from `{source['name']}` "
                      f"(weights SHA-1 `{source['weights_sha1']}`), seed {adaptation['seed']}",
                  training=training, validation=validation)
    lines = ["## Adaptation (no labels)", "",
             f"Method: {adaptation['method']}. {adaptation['steps_used']} fully tracked steps of "
             f"{adaptation['larvae']} larvae; EM converged: {adaptation['em_converged']} "
             f"({adaptation['em_iterations']} iterations). `predict -m {name}` uses the "
             "estimated base rates as its priors unless `--priors` says otherwise.", "",
             "| label | source training prior | estimated base rate | pseudo-labels kept |",
             "|---|---:|---:|---:|"]
    kept = adaptation.get("pseudo_labels", {}).get("kept", {})
    for n in labels:
        lines.append(f"| {n} | {adaptation['training_priors'][n]:.4f} | {adaptation['priors'][n]:.4f} | "
                     f"{int(kept.get(n, 0))} |")
    lines.append("")
    if "skipped" in self_training:
        lines += [f"Self-training skipped: {self_training['skipped']}.", ""]
    elif self_training:
        lines += [f"Self-training: agreement macro-F1 with held-out larvae's pseudo-labels "
                  f"{self_training['agreement_macro_f1']['before']:.3f} → "
                  f"{self_training['agreement_macro_f1']['best']:.3f} (iteration {self_training['best_iteration']}).",
                  ""]
    head, _, tail = text.partition("## Software and weights")
    path = output_dir / CARD_FILE
    atomic_write_text(path, head + "\n".join(lines) + "\n## Software and weights" + tail)
    return path
