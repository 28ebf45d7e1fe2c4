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
from .features import CLAMPED, QUALITY_NAMES, device_windows, prepare
from .models.tagger import SavedTagger

POST_PROCESSING = ("abc_aac",)
DEFAULT_BATCH_SIZE = 2048


@dataclass
class Prediction:
    """Per-step predictions for one run (rows aligned with ``run``)."""

    run: Run
    labels: list[str]
    classes: np.ndarray          # (n_steps,) int16, -1 = unlabelled
    probabilities: np.ndarray    # (n_steps, n_labels) float32
    quality: np.ndarray          # (n_steps,) int8
    timings: dict = field(default_factory=dict)


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


def predict_run(saved: SavedTagger, run: Run, *, device: str = "cpu", precision: str = "fp32",
                batch_size: int = DEFAULT_BATCH_SIZE, edges: str = "label",
                post_processing: Sequence[str] | None = None,
                encode: Callable[[np.ndarray], torch.Tensor | np.ndarray] | None = None) -> Prediction:
    """Tag every step of ``run`` with ``saved``; ``post_processing`` defaults to the
    model's own (``abc_aac`` for the default tagger). A bagging ensemble is tagged
    by each member and voted (:func:`maggotuba.models.bagging.predict_ensemble`)."""
    if getattr(saved, "members", None) is not None and encode is None:
        from .models.bagging import predict_ensemble

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
            probs = torch.softmax(classifier(latent.float()), dim=1).cpu().numpy()
        probabilities[start:start + len(rows)] = probs
        quality[start:start + len(rows)] = window_quality.cpu().numpy()
        timings["classifier"] += _elapsed(tick, device)
    tick = time.perf_counter()
    classes = probabilities.argmax(axis=1).astype(np.int16)
    if edges == "skip":
        classes[quality == CLAMPED] = -1
    if "abc_aac" in steps:
        classes = abc_to_aac(classes, run.offsets)
    timings["post_processing"] = time.perf_counter() - tick
    return Prediction(run=run, labels=list(saved.config.labels), classes=classes,
                      probabilities=probabilities, quality=quality, timings=timings)


def to_labels(prediction: Prediction, saved: SavedTagger, *, model_name: str | None = None,
              tracking: Sequence[Path] = (), edges: str = "label",
              post_processing: Sequence[str] | None = None, options: dict | None = None) -> Labels:
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
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
    }
    if options is not None:
        labels.metadata["provenance"]["options"] = options
    return labels


def write_probabilities(prediction: Prediction, path: str | Path, weights_sha1: str = "") -> Path:
    """The per-step probabilities sidecar (HDF5), written atomically."""
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
            f.attrs["labels"] = prediction.labels
            f.attrs["quality_names"] = list(QUALITY_NAMES[:3])
            f.attrs["run_id"] = run.id
            f.attrs["weights_sha1"] = weights_sha1
            f.attrs["software"] = f"taggingbackends {framework_version}, maggotuba {__version__}"
    return path


def probabilities_path(label_path: Path) -> Path:
    """``predicted.label`` → ``predicted.probabilities.h5``."""
    return label_path.with_name(label_path.name.rsplit(".", 1)[0] + ".probabilities.h5")
