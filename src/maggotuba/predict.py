"""Tagging: a label for every time step of every larva of a run.

Each step is the anchor of one window (:mod:`maggotuba.features`); the encoder
embeds it and the classifier gives class probabilities; the label is the most
probable class, then named post-processing steps apply.

Documented choices:

* **Track ends.** A step whose window does not fit inside its track (the first
  and last ``len_traj/2`` frames, about 1 s at each end) is tagged from the
  *clamped* window (grid times beyond the track take its first or last spine)
  with ``edges="label"`` (default), or left unlabelled (``[]``) with
  ``edges="skip"``. Either way the per-step ``quality`` in the probabilities
  sidecar says ``clamped``; windows spanning a tracking hole longer than
  ``max_gap`` say ``gapped``.
* **ABC → AAC** (``abc_aac``, the 20230111 tagger's rule): a behaviour that
  lasts a single step, between two steps with other labels, takes the label of
  the step before it. Applied to the raw predictions in one pass (each
  single-step action takes the *original* previous label).
* **Priors** (``--priors``, :class:`PriorShift`): class probabilities re-weighted by
  target / training class frequencies (Bayes' rule) before the argmax; ``natural`` uses
  the natural base rates of :func:`natural_base_rates`; recorded in provenance and sidecar.
* **Determinism.** Windows are batched in a fixed order with a fixed batch
  size, so a given device gives bit-identical labels run to run. On CUDA,
  "fp32" convolutions run in TF32 (cuDNN's default): probabilities differ from
  the CPU's in the third decimal and labels agree on more than 99.9 % of steps.

Outputs: a `.label` file (upstream layout, label names of the tagger,
provenance in ``metadata.provenance``, the tracking file's SHA-1 as
dependency) and an HDF5 sidecar ``<label stem>.probabilities.h5`` with
datasets ``larva_id``, ``t``, ``probabilities`` (n_steps × n_labels, float32),
``label`` (class index, −1 = unlabelled) and ``quality`` (0 full, 1 clamped,
2 gapped), and attributes ``labels`` and ``quality_names``.
"""

from __future__ import annotations

import datetime as _dt
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import h5py
import numpy as np
import torch

from taggingbackends import __version__ as framework_version
from taggingbackends.data.labels import Labels, TrackLabels
from taggingbackends.data.tracks import Run
from taggingbackends.errors import TaggingError
from taggingbackends.fileio import atomic_path

from . import __version__
from .features import CLAMPED, GAPPED, QUALITY_NAMES, device_windows, prepare
from .models.bagging import BaggingTagger, VoteAccumulator
from .models.tagger import SavedTagger

POST_PROCESSING = ("abc_aac",)
DEFAULT_BATCH_SIZE = 2048
PRIOR_CHOICES = ("natural", "uniform", "none")
DEFAULT_PRIORS = "natural"


# ------------------------------------------------------------------ priors
@dataclass(frozen=True)
class PriorShift:
    """Bayes' rule for a change of class base rates: a classifier trained at class priors
    ``training`` gives posteriors ``p(c|x) ∝ p(x|c) training_c``; at base rates ``target``
    the posterior is ``p(c|x) · target_c / training_c``, renormalised. Applied to the
    probabilities before the argmax, so labels, sidecar and provenance agree.

    ``training`` are the model's *effective* training priors (sample frequencies × loss
    weights, renormalised: uniform under ``auto`` balancing), stored in ``clf_config.json``.
    """

    name: str                      # natural, uniform, none, or the JSON file given
    labels: tuple[str, ...]
    target: np.ndarray | None = None
    training: np.ndarray | None = None
    note: str = ""

    @property
    def active(self) -> bool:
        return self.target is not None

    def apply(self, probabilities: np.ndarray) -> np.ndarray:
        """Re-weighted, renormalised probabilities (float32, same shape)."""
        if not self.active:
            return probabilities
        ratio = (self.target / self.training).astype(np.float64)
        shifted = probabilities.astype(np.float64) * ratio[None, :]
        total = shifted.sum(axis=1, keepdims=True)
        return np.divide(shifted, total, out=np.zeros_like(shifted), where=total > 0).astype(np.float32)

    def record(self) -> dict:
        """What provenance and the sidecar say about the priors."""
        out: dict = {"priors": self.name}
        if self.active:
            out["target"] = {n: round(float(v), 6) for n, v in zip(self.labels, self.target)}
            out["training"] = {n: round(float(v), 6) for n, v in zip(self.labels, self.training)}
        if self.note:
            out["note"] = self.note
        return out


def natural_base_rates() -> dict[str, float]:
    """Natural base rates of the behaviours: the long-run share of time of each in the
    simulator's default (natural) mix (:func:`taggingbackends.simulate.expected_occupancy`):
    run ≈ 65 %, cast ≈ 27 %, small_motion ≈ 4 %, back ≈ 2.5 %, stop ≈ 1.7 %, hunch ≈ 0.06 %,
    roll ≈ 0.04 %. Keyed by the simulator's names and the upstream tagger's (``run_large``)."""
    from taggingbackends.evaluation import SIMULATOR_TO_UPSTREAM
    from taggingbackends.simulate import expected_occupancy

    rates = expected_occupancy()
    return {**rates, **{SIMULATOR_TO_UPSTREAM[name]: share for name, share in rates.items()}}


def _target_priors(choice: str, labels: Sequence[str]) -> np.ndarray:
    if choice == "uniform":
        return np.full(len(labels), 1.0 / len(labels))
    if choice == "natural":
        rates = natural_base_rates()
        unknown = [n for n in labels if n not in rates]
        if unknown:
            raise TaggingError(f"--priors natural: no natural base rate for {', '.join(unknown)} (known: "
                               f"{', '.join(sorted(rates))}); give a JSON file of label frequencies")
        return np.array([rates[n] for n in labels])
    return _priors_file(Path(choice), labels)


def _priors_file(path: Path, labels: Sequence[str]) -> np.ndarray:
    """Target frequencies from a JSON object ``{label: frequency}`` (normalised here)."""
    import json

    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise TaggingError(f"--priors {path}: not natural, uniform, none, nor a readable JSON file "
                           f"({err.strerror or err})") from None
    except ValueError as err:
        raise TaggingError(f"{path}: invalid JSON ({err})") from None
    if not isinstance(document, dict):
        raise TaggingError(f"{path}: expected a JSON object {{label: frequency}}")
    missing = [n for n in labels if n not in document]
    if missing:
        raise TaggingError(f"{path}: no frequency for {', '.join(missing)} (the tagger's labels: "
                           f"{', '.join(labels)})")
    try:
        values = np.array([float(document[n]) for n in labels])
    except (TypeError, ValueError):
        raise TaggingError(f"{path}: frequencies must be numbers") from None
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise TaggingError(f"{path}: frequencies must be positive numbers")
    return values / values.sum()


def resolve_priors(choice: str | None, saved) -> PriorShift:
    """The prior shift for ``--priors CHOICE`` (``None``: the default, :data:`DEFAULT_PRIORS`).

    An explicit choice the model cannot honour (no stored training priors, an ensemble
    that votes, a label without a natural base rate) is an error; the default then falls
    back to ``none`` and says why in the provenance."""
    labels = tuple(saved.config.labels)
    explicit = choice is not None
    choice = DEFAULT_PRIORS if choice is None else choice
    if choice == "none":
        return PriorShift("none", labels)
    try:
        if getattr(saved, "members", None) is not None:
            raise TaggingError("--priors: a bagging ensemble votes on labels; priors apply to single taggers")
        stored = (saved.metadata or {}).get("training_effective_priors")
        if not stored or list(stored) != list(labels):
            raise TaggingError(f"--priors {choice}: {saved.directory} stores no training class priors "
                               "(train it again with this version, or use --priors none)")
        training, note = _usable_training_priors(np.array([float(stored[n]) for n in labels]), labels)
        target = _adapted_priors(saved, labels) if choice == ADAPTED_PRIORS else _target_priors(choice, labels)
        target = target / target.sum()
    except TaggingError as err:
        if explicit:
            raise
        return PriorShift("none", labels, note=f"default {choice} priors not applicable: {err}")
    return PriorShift(choice, labels, target=target, training=training, note=note)


ADAPTED_PRIORS = "adapted"


def _adapted_priors(saved, labels: Sequence[str]) -> np.ndarray:
    """The class base rates stored by ``tagging-backend adapt`` (``adapted_priors``)."""
    stored = (saved.metadata or {}).get("adapted_priors") or {}
    if list(stored) != list(labels):
        raise TaggingError(f"--priors adapted: {saved.directory} stores no adapted base rates "
                           "(made by tagging-backend adapt)")
    return np.array([float(stored[n]) for n in labels])


def _usable_training_priors(training: np.ndarray, labels: Sequence[str]) -> tuple[np.ndarray, str]:
    """Training priors with no zero in them, and a note when some had to be filled in.

    A tagger fine-tuned on a few corrections has seen only some classes: their effective
    training prior is 0 and Bayes' rule would divide by it (infinite weights, NaN labels).
    A class absent from the fine-tuning data keeps what its classifier output learnt
    before, the base tagger's balanced prior (uniform, 1/K), so it gets that prior here."""
    usable = np.where(np.isfinite(training) & (training > 0), training, 0.0)
    missing = [name for name, value in zip(labels, usable) if value <= 0]
    if not missing:
        return usable / usable.sum(), ""
    usable[usable <= 0] = 1.0 / len(labels)
    return usable / usable.sum(), ("no training examples of " + ", ".join(missing)
                                   + ": their training prior taken as uniform (1/K)")



@dataclass
class Prediction:
    """Per-step predictions for one run (rows aligned with ``run``)."""

    run: Run
    labels: list[str]
    classes: np.ndarray          # (n_steps,) int16, -1 = unlabelled
    probabilities: np.ndarray    # (n_steps, n_labels) float32
    quality: np.ndarray          # (n_steps,) int8
    timings: dict = field(default_factory=dict)


# ------------------------------------------------------------------ calibration, doubt
#: Steps whose (calibrated, prior-corrected) top probability is below this are flagged
#: ``uncertain`` in the sidecar by default.
DEFAULT_UNCERTAIN_BELOW = 0.5


def stored_temperature(saved) -> float | None:
    """The temperature stored with the instance (``clf_config.json`` ``calibration``:
    fitted on larvae held out of its training, :mod:`maggotuba.calibration`), or None."""
    calibration = (getattr(saved, "metadata", None) or {}).get("calibration") or {}
    value = calibration.get("temperature")
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) and value > 0 else None


def uncertain_steps(prediction: Prediction, below: float) -> np.ndarray:
    """Boolean per step: the tag should not be trusted, because its probability is below
    ``below`` or its window spans a tracking gap (interpolated over more than ``max_gap``)."""
    if not 0.0 <= below <= 1.0:
        raise TaggingError(f"--uncertain-below must lie in [0, 1], not {below}")
    top = prediction.probabilities.max(axis=1) if prediction.probabilities.size else np.zeros(0)
    return (top < below) | (prediction.quality == GAPPED)


def abc_to_aac(classes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Replace every single-step action (its neighbours both differ from it,
    within one track) by the previous step's label; unlabelled steps are left
    alone and never propagate."""
    out = classes.copy()
    if len(classes) < 3:
        return out
    previous, current, following = classes[:-2], classes[1:-1], classes[2:]
    single = (current != previous) & (current != following) & (previous >= 0) & (current >= 0)
    # neighbours must belong to the same track: exclude steps at track boundaries
    starts = np.zeros(len(classes), dtype=bool)
    starts[offsets[:-1]] = True
    ends = np.zeros(len(classes), dtype=bool)
    ends[offsets[1:] - 1] = True
    single &= ~starts[1:-1] & ~ends[1:-1]
    out[1:-1][single] = previous[single]
    return out


def make_encoder(saved: SavedTagger, device: str, precision: str) -> Callable[[np.ndarray], torch.Tensor]:
    """A function embedding ``(n, 2, 5, T)`` float32 windows on ``device``: on the CPU the
    GEMM-chain encoder of :mod:`maggotuba.inference` (exact in fp32); on a GPU the
    batch-norm-folded encoder in fp32, the module itself under autocast in bf16.

    ``precision``: ``fp32``; ``bf16`` (CPU: the dominant time convolution in bf16, the
    rest fp32; fastest where the CPU has AMX); ``bf16-full`` (CPU: every convolution in
    bf16; faster on CPUs with AVX512-BF16 but no AMX, slightly less exact).
    """
    encoder = saved.model.encoder.to(device).eval()
    if torch.device(device).type == "cpu":
        from .inference import has_native_bf16, make_inference_encoder, supports

        if precision.startswith("bf16") and not has_native_bf16():
            raise TaggingError(f"--precision {precision}: this CPU has no native bf16 (AVX512-BF16 or AMX), "
                               "so bf16 would run about 100x slower than fp32; use fp32 (the default)")

        if supports(encoder):
            return make_inference_encoder(encoder, precision=precision)
    elif precision == "fp32":  # GPU: batch norm folded (exact to 1e-5), about 12 % faster on an H100
        encoder = encoder.fused().to(device).eval()
    # on a GPU, autocast decides per operation: bf16-full is the same as bf16 there
    dtype = {"fp32": None, "bf16": torch.bfloat16, "bf16-full": torch.bfloat16}[precision]

    @torch.inference_mode()
    def encode(windows) -> torch.Tensor:
        batch = torch.as_tensor(windows).to(device, non_blocking=True)
        if dtype is None:
            return encoder(batch)
        with torch.autocast(device_type=torch.device(device).type, dtype=dtype):
            return encoder(batch).float()

    return encode


def cached_encoder(saved: SavedTagger, device: str, precision: str) -> Callable[[np.ndarray], torch.Tensor] | None:
    """:func:`make_encoder` once per model, device and precision, kept on the model object:
    a batch worker tags many files with one model and building the CPU encoder takes a
    noticeable fraction of a second. None for bagging ensembles (each member has its own)."""
    if getattr(saved, "members", None) is not None:
        return None
    cache = saved.__dict__.setdefault("_encoders", {})
    if (device, precision) not in cache:
        cache[(device, precision)] = make_encoder(saved, device, precision)
    return cache[(device, precision)]


def _elapsed(tick: float, device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - tick


def post_processing_steps(saved: SavedTagger, edges: str, post_processing: Sequence[str] | None) -> Sequence[str]:
    """The post-processing steps to apply (default: the model's own), after checking
    them and the ``edges`` policy; ValueError if either is unknown."""
    if edges not in ("label", "skip"):
        raise ValueError("edges must be 'label' or 'skip'")
    steps = post_processing if post_processing is not None else saved.config.post_processing
    unknown = [s for s in steps if s not in POST_PROCESSING]
    if unknown:
        raise ValueError(f"unknown post-processing step(s) {unknown}; known: {list(POST_PROCESSING)}")
    return steps


def label_steps(probabilities: np.ndarray, quality: np.ndarray, offsets: np.ndarray, *, edges: str,
                steps: Sequence[str]) -> np.ndarray:
    """Class of each step: the most probable, unlabelled (-1) at clamped edges with
    ``edges="skip"``, then the post-processing ``steps``."""
    classes = probabilities.argmax(axis=1).astype(np.int16)
    if edges == "skip":
        classes[quality == CLAMPED] = -1
    if "abc_aac" in steps:
        classes = abc_to_aac(classes, offsets)
    return classes


def predict_run(saved: SavedTagger, run: Run, *, device: str = "cpu", precision: str = "fp32",
                batch_size: int = DEFAULT_BATCH_SIZE, edges: str = "label",
                post_processing: Sequence[str] | None = None,
                encode: Callable[[np.ndarray], torch.Tensor | np.ndarray] | None = None,
                priors: PriorShift | None = None, temperature: float | None = None) -> Prediction:
    """Tag every step of ``run`` with ``saved``; ``post_processing`` defaults to the
    model's own (``abc_aac`` for the default tagger); ``priors`` (see :class:`PriorShift`)
    re-weight the probabilities before the argmax; ``temperature`` (see :func:`stored_temperature`)
    divides the logits first, so the priors act on calibrated probabilities. A bagging ensemble is tagged
    by each member and voted (:func:`predict_ensemble`)."""
    if priors is not None and priors.active and getattr(saved, "members", None) is not None:
        raise TaggingError("--priors: a bagging ensemble votes on labels; priors apply to single taggers")
    if temperature is not None and not temperature > 0:
        raise TaggingError(f"temperature must be positive, not {temperature}")
    if getattr(saved, "members", None) is not None and encode is None:
        return predict_ensemble(saved, run, device=device, precision=precision, batch_size=batch_size,
                                edges=edges, post_processing=post_processing)
    steps = post_processing_steps(saved, edges, post_processing)
    spec = replace(saved.spec, edge="clamp", len_pred=0)
    encode = encode or make_encoder(saved, device, precision)
    classifier = saved.model.classifier.to(device).eval()
    n_labels = len(saved.config.labels)
    probabilities = np.empty((run.n_steps, n_labels), dtype=np.float32)
    quality = np.empty(run.n_steps, dtype=np.int8)
    timings = {"windows": 0.0, "encoder": 0.0, "classifier": 0.0}
    prepared = prepare(run, spec.head).on(device)
    for start in range(0, run.n_steps, batch_size):
        tick = time.perf_counter()
        rows = torch.arange(start, min(start + batch_size, run.n_steps), device=device)
        data, window_quality = device_windows(prepared, rows, spec)
        timings["windows"] += _elapsed(tick, device)
        tick = time.perf_counter()
        latent = encode(data.numpy() if data.device.type == "cpu" else data)
        if isinstance(latent, np.ndarray):
            latent = torch.from_numpy(latent).to(device)
        timings["encoder"] += _elapsed(tick, device)
        tick = time.perf_counter()
        with torch.inference_mode():
            logits = classifier(latent.float())
            probs = torch.softmax(logits / (temperature or 1.0), dim=1).cpu().numpy()
        probabilities[start:start + len(rows)] = probs
        quality[start:start + len(rows)] = window_quality.cpu().numpy()
        timings["classifier"] += _elapsed(tick, device)
    tick = time.perf_counter()
    if priors is not None:
        probabilities = priors.apply(probabilities)
    classes = label_steps(probabilities, quality, run.offsets, edges=edges, steps=steps)
    timings["post_processing"] = time.perf_counter() - tick
    return Prediction(run=run, labels=list(saved.config.labels), classes=classes,
                      probabilities=probabilities, quality=quality, timings=timings)


def predict_ensemble(saved: BaggingTagger, run, *, device: str = "cpu", precision: str = "fp32",
                     batch_size: int | None = None, edges: str = "label",
                     post_processing: Sequence[str] | None = None):
    """Tag every step of ``run`` with every member and vote (see :mod:`maggotuba.models.bagging`);
    returns a :class:`Prediction`."""
    steps = post_processing_steps(saved, edges, post_processing)
    acc = VoteAccumulator(run.n_steps, len(saved.config.labels))
    timings: dict = {}
    for member in saved.members:
        out = predict_run(member, run, device=device, precision=precision,
                          batch_size=batch_size or DEFAULT_BATCH_SIZE, edges="label", post_processing=[])
        tick = time.perf_counter()
        acc.add(out.probabilities, out.quality)
        for key, value in out.timings.items():
            timings[key] = timings.get(key, 0.0) + value
        timings["vote"] = timings.get("vote", 0.0) + time.perf_counter() - tick
    tick = time.perf_counter()
    classes, probabilities = acc.result()
    if edges == "skip":
        classes[acc.clamped] = -1
    if "abc_aac" in steps:
        classes = abc_to_aac(classes, run.offsets)
    timings["post_processing"] = timings.get("post_processing", 0.0) + time.perf_counter() - tick
    timings["members"] = len(saved.members)
    return Prediction(run=run, labels=list(saved.config.labels), classes=classes,
                      probabilities=probabilities, quality=acc.quality.copy(), timings=timings)


def to_labels(prediction: Prediction, saved: SavedTagger, *, model_name: str | None = None,
              tracking: Sequence[Path] = (), edges: str = "label",
              post_processing: Sequence[str] | None = None, priors: PriorShift | None = None,
              options: dict | None = None) -> Labels:
    """The predictions as a `.label` run with provenance; ``options`` (the prediction options
    as :func:`taggingbackends.batch.options_record` writes them) let a later batch run tell
    an up-to-date output from a stale one."""
    from taggingbackends.data.labels import run_metadata

    run = prediction.run
    names = prediction.labels
    labels = Labels(names, metadata=run_metadata(run), tracking=list(tracking))
    lookup = np.array(names + [None], dtype=object)
    entries_all = lookup[prediction.classes].tolist()  # -1 picks None
    for i in range(run.n_tracks):
        lo, hi = int(run.offsets[i]), int(run.offsets[i + 1])
        entries = [e if e is not None else [] for e in entries_all[lo:hi]]
        labels.tracks[int(run.larva_ids[i])] = TrackLabels(run.t[lo:hi].copy(), entries)
    labels.metadata["provenance"] = {
        "software": "taggingbackends", "version": framework_version, "backend": "maggotuba",
        "backend_version": __version__,
        "model": {"instance": model_name or saved.directory.name, "weights_sha1": saved.weights_sha1,
                  "labels": names},
        "edges": edges,
        "post_processing": list(post_processing if post_processing is not None
                                else saved.config.post_processing),
        "priors": (priors or PriorShift("none", tuple(names))).record(),
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
    }
    if options is not None:
        labels.metadata["provenance"]["options"] = options
    return labels


def write_probabilities(prediction: Prediction, path: str | Path, weights_sha1: str = "",
                        priors: PriorShift | None = None, uncertain: np.ndarray | None = None,
                        doubt: dict | None = None) -> Path:
    """The per-step probabilities sidecar (HDF5), written atomically; with priors, the
    probabilities are the re-weighted ones and the attribute ``priors`` (JSON) says how.
    ``uncertain`` (one boolean per step, :func:`uncertain_steps`) is stored as the dataset
    ``uncertain``, and ``doubt`` (temperature, threshold) as the JSON attribute ``calibration``."""
    import json

    path = Path(path)
    run = prediction.run
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("larva_id", data=np.repeat(run.larva_ids, run.lengths).astype(np.int32))
            f.create_dataset("t", data=run.t)
            f.create_dataset("probabilities", data=prediction.probabilities, compression="gzip",
                             compression_opts=4, shuffle=True)
            f.create_dataset("label", data=prediction.classes)
            f.create_dataset("quality", data=prediction.quality)
            if uncertain is not None:
                f.create_dataset("uncertain", data=np.asarray(uncertain, dtype=bool))
            if doubt is not None:
                f.attrs["calibration"] = json.dumps(doubt)
            f.attrs["labels"] = prediction.labels
            f.attrs["quality_names"] = list(QUALITY_NAMES[:3])
            f.attrs["run_id"] = run.id
            f.attrs["weights_sha1"] = weights_sha1
            f.attrs["priors"] = json.dumps((priors or PriorShift("none", tuple(prediction.labels))).record())
            f.attrs["software"] = f"taggingbackends {framework_version}, maggotuba {__version__}"
    return path


def probabilities_path(label_path: Path) -> Path:
    """``predicted.label`` → ``predicted.probabilities.h5``."""
    return label_path.with_name(label_path.name.rsplit(".", 1)[0] + ".probabilities.h5")
