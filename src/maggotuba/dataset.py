"""Labelled training sets of MaggotUBA windows: build, split, write and read.

A :class:`LarvaDataset` holds, for every selected *anchor* time step of every
labelled file, the normalised 5-point spine window around it (the model input
of :mod:`maggotuba.features`) and the class of the step::

    from maggotuba.features import WindowSpec
    from maggotuba.dataset import build_dataset, split, write_hdf5, read_hdf5

    data = build_dataset("data/raw/", ["run_large", "cast_large", "back_large",
                                       "hunch_large", "roll_large", "stop_large",
                                       "small_motion"], WindowSpec(len_traj=20))
    train, validation = split(data, 0.2, seed=0)
    path = write_hdf5(data, "data/interim/my_tagger/")   # larva_dataset_2026_01_31_20_0_123456.hdf5
    again = read_hdf5(path)

How the training steps are chosen (:func:`build_dataset`)
---------------------------------------------------------

1. **Files.** ``sources`` is a directory (its :func:`~taggingbackends.datasets.labelled_files`),
   one file, or a list of files and directories. Each file is read with
   :func:`taggingbackends.formats.load`: a `.label` file gives its dependency's
   tracking data tagged with the label names and secondary labels (``edited``).
2. **Classes.** ``labels`` are selector strings
   (:class:`~taggingbackends.datasets.Selector`: a label, ``¬label``, ``re:...``);
   the class of a step is :func:`~taggingbackends.datasets.class_index`
   (the first selector that matches; ``-1`` for none).
3. **Anchors.** A labelled step is a candidate only if its window is
   :data:`~maggotuba.features.FULL`: the whole window, ``len_pred`` points of past
   and future context included, lies inside the larva's tracked span and no grid
   point falls in a tracking gap longer than ``spec.max_gap``. This is decided by
   :func:`window_quality`, which runs exactly the time-grid arithmetic of
   :func:`~maggotuba.features.windows_for_rows` without building the windows
   (cheap enough to run on every labelled step); the windows built afterwards
   are checked to be FULL. Compared with
   :func:`~taggingbackends.datasets.admissible` (track-end fit only) this also
   drops windows across gaps and untracked (NaN) ends, which would otherwise
   be interpolated or clamped.
4. **Balancing.** :func:`taggingbackends.datasets.balance` over all files at
   once (``auto``: every anchor, inverse-frequency loss weights; ``maggotuba``:
   each class capped at ``round(ratio × smallest class count)``, drawn per file,
   with the ``priority`` label first; ``none``: every anchor, unit weights).
   Steps carrying the ``include_all`` label (default ``edited``: manual
   corrections) that are anchors are always kept; with ``train_on="edited"`` (or
   ``"auto"`` when some step carries it) they are the *only* candidates, so that a
   prediction corrected here and there trains on the corrections alone, not on the
   model's own uncorrected guesses. ``sample_size`` caps the
   total (a uniform subset that keeps the included steps); ``class_weights``
   overrides the weights.
5. **Windows.** Built per file with :func:`~maggotuba.features.windows_for_rows`,
   ``batch_size`` anchors at a time, into one preallocated ``(n, 2, 5, W)``
   float32 array (``W = len_traj + 2 * len_pred``).

Memory: the first pass keeps each file's prepared run (without outline and
tags) for the second pass while their total stays under ``cache_bytes``;
files beyond it are read again in the second pass.

HDF5 layout (ours, MaggotUBA-inspired; SPEC §5.1 names the file)
-----------------------------------------------------------------

File name (when :func:`write_hdf5` is given a directory):
``larva_dataset_{YYYY_MM_DD}_{len_traj}_{len_pred}_{n_samples}.hdf5``, the date
being the day of writing. Written atomically (temporary file + rename).

* group ``samples``, attributes:

  - ``len_traj``, ``len_pred``, ``n_samples`` (int), ``frame_interval`` (s, float),
  - ``registered = 1`` (windows rotated and centred),
  - ``rescaled = "median body length"`` (divided by the larva's median length);

* datasets in ``samples``:

  - ``windows``: ``(n, 2, 5, W)`` float32 (x/y, 5 points tail→head, time),
    chunked by samples, compressed (gzip level 4 with the shuffle filter by default);
  - ``labels``: ``(n,)`` int64 class index into the root ``labels`` attribute;
  - ``groups``: ``(n,)`` int64 id of the (file, larva) the window comes from;
  - ``file``: ``(n,)`` int64 index into the root ``sources`` attribute;
  - ``larva``: ``(n,)`` int64 larva number (track id in its file);
  - ``t``: ``(n,)`` float64 time (s) of the anchor step;

* root attributes:

  - ``labels``: class names (variable-length UTF-8 strings, selector specs);
  - ``class_weights``: ``(n_classes,)`` float64 loss weights;
  - ``counts_before``: ``(n_classes,)`` int64 class counts over all anchors;
  - ``counts_after``: ``(n_classes,)`` int64 class counts of the samples;
  - ``window_spec``: JSON object, the :class:`~maggotuba.features.WindowSpec` fields;
  - ``sources``: JSON list of ``{"path": absolute path, "sha1": hex or null}``
    (SHA-1 of the file as read when the dataset was built;
    :func:`taggingbackends.fileio.sha1sum`; null for a directory source);
  - ``provenance``: JSON object: ``package`` / ``version``
    (``taggingbackends.__version__``), ``maggotuba_version``, ``seed``,
    ``balancing``, ``ratio``, ``sample_size``, ``include_all``, ``priority``,
    ``date`` (ISO 8601, UTC), ``counts_labelled`` (class counts over every
    labelled step, before the anchor restriction), and ``split`` for a split part.
  - ``format``: ``"maggotuba larva_dataset"``, ``format_version``: 1.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

import taggingbackends
from taggingbackends import datasets as tbd
from taggingbackends.errors import FormatError, TaggingError
from taggingbackends.fileio import atomic_path, sha1sum
from taggingbackends.formats import load

from .features import (
    _TIME_DECIMALS,
    CLAMPED,
    FULL,
    GAPPED,
    INVALID,
    PreparedRun,
    WindowSpec,
    prepare,
    windows_for_rows,
)

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "LarvaDataset",
    "build_dataset",
    "dataset_file_name",
    "read_hdf5",
    "split",
    "split_groups",
    "window_quality",
    "write_hdf5",
]

log = logging.getLogger(__name__)

FORMAT_NAME = "maggotuba larva_dataset"
FORMAT_VERSION = 1
#: Default bound on the prepared runs kept in memory between the two passes of
#: :func:`build_dataset` (files beyond it are read again).
DEFAULT_CACHE_BYTES = 2 << 30
_SPLIT_STREAM = 0x5B1175


# ================================================================ the dataset
@dataclass(eq=False)
class LarvaDataset:
    """Labelled model inputs with where each one comes from.

    Attributes:
        windows: ``(n, 2, 5, W)`` float32 normalised windows.
        labels: ``(n,)`` int64 class indices into ``label_names``.
        label_names: class names (the selector specs).
        class_weights: ``(n_classes,)`` float64 loss weights.
        groups: ``(n,)`` int64, one id per (file, larva): windows of one group overlap
            in time and must stay on one side of a split.
        file: ``(n,)`` int64 index into ``sources``.
        larva: ``(n,)`` int64 larva numbers.
        t: ``(n,)`` float64 anchor times (s).
        spec: the window geometry.
        counts_before: ``(n_classes,)`` int64 class counts over all anchors.
        counts_after: ``(n_classes,)`` int64 class counts of the samples.
        sources: the files read (absolute paths).
        source_sha1: SHA-1 of each source as read (``None`` for a directory).
        provenance: how the dataset was made (see the module docstring).
    """

    windows: np.ndarray
    labels: np.ndarray
    label_names: list[str]
    class_weights: np.ndarray
    groups: np.ndarray
    file: np.ndarray
    larva: np.ndarray
    t: np.ndarray
    spec: WindowSpec
    counts_before: np.ndarray
    counts_after: np.ndarray
    sources: list[Path] = field(default_factory=list)
    source_sha1: list[str | None] = field(default_factory=list)
    provenance: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.windows = np.asarray(self.windows, dtype=np.float32)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        self.label_names = [str(n) for n in self.label_names]
        self.class_weights = np.asarray(self.class_weights, dtype=np.float64).reshape(-1)
        self.groups = np.asarray(self.groups, dtype=np.int64).reshape(-1)
        self.file = np.asarray(self.file, dtype=np.int64).reshape(-1)
        self.larva = np.asarray(self.larva, dtype=np.int64).reshape(-1)
        self.t = np.asarray(self.t, dtype=np.float64).reshape(-1)
        self.counts_before = np.asarray(self.counts_before, dtype=np.int64).reshape(-1)
        self.counts_after = np.asarray(self.counts_after, dtype=np.int64).reshape(-1)
        self.sources = [Path(p) for p in self.sources]
        self.source_sha1 = list(self.source_sha1) or [None] * len(self.sources)
        self._check()

    def _check(self) -> None:
        n, k = len(self.labels), len(self.label_names)
        if self.windows.ndim != 4 or self.windows.shape[:3] != (n, 2, 5) \
                or self.windows.shape[3] != self.spec.width:
            raise ValueError(f"windows have shape {self.windows.shape}, expected "
                             f"({n}, 2, 5, {self.spec.width})")
        for name in ("groups", "file", "larva", "t"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"{name} has shape {getattr(self, name).shape}, expected ({n},)")
        for name in ("class_weights", "counts_before", "counts_after"):
            if getattr(self, name).shape != (k,):
                raise ValueError(f"{name} has shape {getattr(self, name).shape}, expected ({k},)")
        if n and (self.labels.min() < 0 or self.labels.max() >= k):
            raise ValueError("class indices out of range")
        if n and (self.file.min() < 0 or self.file.max() >= max(len(self.sources), 1)):
            raise ValueError("file indices out of range of sources")
        if len(self.source_sha1) != len(self.sources):
            raise ValueError("one SHA-1 (or None) per source is needed")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __repr__(self) -> str:
        return (f"LarvaDataset(n_samples={len(self)}, window={tuple(self.windows.shape[1:])}, "
                f"labels={self.label_names}, counts={self.counts_after.tolist()}, "
                f"files={len(self.sources)}, larvae={len(np.unique(self.groups))})")

    @property
    def n_samples(self) -> int:
        return len(self)

    @property
    def n_classes(self) -> int:
        return len(self.label_names)

    def subset(self, index: np.ndarray, **provenance) -> LarvaDataset:
        """The samples at ``index`` (int indices or a bool mask), with ``counts_after``
        recomputed; class weights, ``counts_before`` and sources are kept."""
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        return LarvaDataset(
            windows=self.windows[index], labels=self.labels[index],
            label_names=list(self.label_names), class_weights=self.class_weights.copy(),
            groups=self.groups[index], file=self.file[index], larva=self.larva[index],
            t=self.t[index], spec=self.spec, counts_before=self.counts_before.copy(),
            counts_after=np.bincount(self.labels[index], minlength=self.n_classes),
            sources=list(self.sources), source_sha1=list(self.source_sha1),
            provenance={**self.provenance, **provenance})


# ================================================================== anchors
def window_quality(prepared: PreparedRun, rows: np.ndarray, spec: WindowSpec,
                   batch_size: int = 16384) -> np.ndarray:
    """``(n,)`` int8 quality (FULL, CLAMPED, GAPPED, INVALID) of the windows anchored at
    ``rows``, exactly as :func:`~maggotuba.features.windows_for_rows` reports it, but
    without interpolating or normalising spines (only the time-grid arithmetic)."""
    run = prepared.run
    rows = np.asarray(rows, dtype=np.int64)
    out = np.empty(rows.shape[0], dtype=np.int8)
    grid = spec.grid()
    t0 = run.t.min() if run.n_steps else 0.0
    track_of_row = run.track_index
    n_keys = len(prepared.key)
    for start in range(0, rows.shape[0], batch_size):
        r = rows[start:start + batch_size]
        track = track_of_row[r]
        first, last = prepared.first[track], prepared.last[track]
        has_data = last >= first
        if n_keys == 0:
            out[start:start + len(r)] = INVALID
            continue
        anchor = np.round(run.t[r], _TIME_DECIMALS) - t0 + track * prepared.stride
        query = anchor[:, None] + grid[None, :]
        lo_key = prepared.key[np.minimum(first, n_keys - 1)]
        hi_key = prepared.key[np.maximum(last, 0)]
        outside = (query < lo_key[:, None] - 1e-9) | (query > hi_key[:, None] + 1e-9)
        query = np.clip(query, lo_key[:, None], hi_key[:, None])
        right = np.searchsorted(prepared.key, query, side="left")
        right = np.clip(right, (first + 1)[:, None], last[:, None])
        single = first == last
        right = np.where(single[:, None], first[:, None], right)
        left = np.where(single[:, None], right, right - 1)
        gap = prepared.key[right] - prepared.key[left]
        quality = np.full(len(r), FULL, dtype=np.int8)
        quality[outside.any(axis=1)] = CLAMPED
        quality[(gap > spec.max_gap + 1e-9).any(axis=1)] = GAPPED
        invalid = ~has_data
        if spec.edge == "invalid":
            invalid |= quality == CLAMPED
        quality[invalid] = INVALID
        out[start:start + len(r)] = quality
    return out


# ==================================================================== build
@dataclass
class _FileInfo:
    path: Path
    sha1: str | None
    class_idx: np.ndarray          # (n_steps,) class of anchor steps, -1 elsewhere
    prepared: PreparedRun | None    # None when not cached (read again in pass 2)
    group_base: int


def _expand_sources(sources) -> list[Path]:
    items = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    out: list[Path] = []
    seen: set[Path] = set()
    for item in items:
        path = Path(item)
        if not path.exists():
            raise FormatError(path, "no such file or directory")
        found = tbd.labelled_files(path) if path.is_dir() else [path]
        if path.is_dir() and not found:
            log.warning("%s: no labelled file found in this directory", path)
        for f in found:
            f = Path(os.path.abspath(f))
            if f not in seen:
                seen.add(f)
                out.append(f)
    return out


def _file_sha1(path: Path) -> str | None:
    return sha1sum(path) if path.is_file() else None


def build_dataset(
    sources,
    labels: Sequence,
    spec: WindowSpec | None = None,
    *,
    balancing: str = "auto",
    sample_size: int | None = None,
    include_all: str | Sequence[str] | None = "edited",
    train_on: str = "all",
    priority: str | Sequence[str] | None = None,
    ratio: float = tbd.DEFAULT_MAJORITY_MINORITY_RATIO,
    class_weights: Sequence[float] | None = None,
    seed: int | None = 0,
    frame_interval: float | None = None,
    batch_size: int = 4096,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    reader: dict | None = None,
) -> LarvaDataset:
    """Select, balance and window the labelled time steps of ``sources``.

    Args:
        sources: a directory (its labelled files), a file, or a list of both.
        labels: class selectors, e.g. ``["run_large", "cast_large"]`` or
            ``["roll", "¬roll"]``; their specs become ``label_names``.
        spec: window geometry (default ``WindowSpec()``); ``frame_interval``, when
            given, replaces ``spec.frame_interval``.
        balancing: ``auto``, ``maggotuba`` or ``none`` (SPEC §5.4).
        sample_size: cap on the number of samples.
        include_all: label(s) of steps always kept (default ``edited``); ``None``: none.
        train_on: ``all`` (every labelled step, upstream's behaviour), ``edited`` (only
            the steps carrying ``include_all``: the corrections of a partly corrected
            prediction, whose other steps are the model's own guesses) or ``auto``
            (``edited`` when any step of any source carries ``include_all``, else ``all``).
        priority: label(s) drawn first within a capped class (``maggotuba``).
        ratio: majority/minority ratio of ``maggotuba``.
        class_weights: explicit loss weights, one per label.
        seed: seed of every random draw (``None``: not reproducible).
        batch_size: anchors windowed at a time (bounds temporary memory).
        cache_bytes: bound on the prepared runs kept between the passes.
        reader: options for :func:`taggingbackends.formats.load` (``framerate``,
            ``pixelsize``, ``format``: the command line's reader flags), used for
            every file read (a label file hands them to its tracking file).

    Raises:
        FormatError: a source cannot be read.
        TaggingError: no file, or no labelled anchor at all.
        ValueError: bad selectors, strategy, weights or sizes.
    """
    spec = spec if spec is not None else WindowSpec()
    reader = dict(reader or {})
    if frame_interval is not None:
        spec = dataclasses.replace(spec, frame_interval=float(frame_interval))
    selectors = tbd.as_selectors(labels)
    names = [s.name for s in selectors]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate labels in {names}")
    n_classes = len(selectors)
    strategy = str(balancing).lower()
    if strategy not in tbd.BALANCING_STRATEGIES:
        raise ValueError(f"unknown balancing strategy {balancing!r} "
                         f"(choose from {', '.join(tbd.BALANCING_STRATEGIES)})")
    if batch_size < 1:
        raise ValueError("batch_size must be positive")
    paths = _expand_sources(sources)
    if not paths:
        raise TaggingError(f"{sources}: no labelled file found")

    # ---- pass 1: classes, anchors, include/priority masks
    infos: list[_FileInfo] = []
    include_masks: list[np.ndarray] | None = [] if include_all else None
    priority_masks: list[np.ndarray] | None = [] if priority else None
    counts_labelled = np.zeros(n_classes, dtype=np.int64)
    cached = 0
    group_base = 0
    for path in paths:
        sha1 = _file_sha1(path)
        run = load(path, **reader)
        idx = tbd.class_index(run, selectors)
        counts_labelled += tbd.count_classes(idx, n_classes)
        if run.tags is None or not (idx >= 0).any():
            log.warning("%s: no step matches the labels %s", path, names)
        if include_masks is not None:
            include_masks.append(tbd.steps_with(run, include_all))
        if priority_masks is not None:
            priority_masks.append(tbd.steps_with(run, priority))
        labelled = np.flatnonzero(idx >= 0)
        prepared = None
        if labelled.size:
            prepared = prepare(run, spec.head)
            quality = window_quality(prepared, labelled, spec)
            idx[labelled[quality != FULL]] = -1
        run.outline, run.tags, run.tag_names = None, None, ()  # keep only what windows need
        keep = prepared is not None and (idx >= 0).any() and \
            cached + run.nbytes + _prepared_nbytes(prepared) <= cache_bytes
        if keep:
            cached += run.nbytes + _prepared_nbytes(prepared)
        infos.append(_FileInfo(path, sha1, idx, prepared if keep else None, group_base))
        group_base += run.n_tracks
        del run, prepared

    restricted = _restrict_to_included(infos, include_masks, train_on, include_all)

    # ---- balancing over all files
    selection = tbd.balance([info.class_idx for info in infos], n_classes, strategy, seed,
                            ratio=ratio, sample_size=sample_size, priority=priority_masks,
                            include=include_masks, class_weights=class_weights)
    n = selection.n_samples
    if n == 0:
        raise TaggingError(f"no labelled time step with a full window in {len(paths)} file(s) "
                           f"for labels {names} (window {spec.width} points at "
                           f"{spec.frame_interval} s, len_pred {spec.len_pred})")

    # ---- pass 2: windows of the selected anchors
    windows = np.empty((n, 2, 5, spec.width), dtype=np.float32)
    out_labels = np.empty(n, dtype=np.int64)
    groups = np.empty(n, dtype=np.int64)
    file_index = np.empty(n, dtype=np.int64)
    larva = np.empty(n, dtype=np.int64)
    times = np.empty(n, dtype=np.float64)
    pos = 0
    for f, (info, rows) in enumerate(zip(infos, selection.rows_per_file)):
        if rows.size == 0:
            info.prepared = None
            continue
        prepared = info.prepared
        if prepared is None:  # not cached: read again
            prepared = prepare(load(info.path, **reader), spec.head)
            if prepared.run.n_steps != info.class_idx.size:
                raise FormatError(info.path, "changed while the dataset was being built")
        run = prepared.run
        track_index = run.track_index
        for start in range(0, rows.size, batch_size):
            chunk = rows[start:start + batch_size]
            w = windows_for_rows(prepared, chunk, spec)
            if np.any(w.quality != FULL):  # pass 1 and features disagree: never silently
                raise RuntimeError(f"{info.path}: a selected anchor's window is not FULL")
            end = pos + chunk.size
            windows[pos:end] = w.data
            out_labels[pos:end] = info.class_idx[chunk]
            track = track_index[chunk]
            groups[pos:end] = info.group_base + track
            file_index[pos:end] = f
            larva[pos:end] = run.larva_ids[track]
            times[pos:end] = run.t[chunk]
            pos = end
        info.prepared = None  # free memory as we go
    assert pos == n

    provenance = {
        "package": "taggingbackends",
        "version": taggingbackends.__version__,
        "maggotuba_version": _maggotuba_version(),
        "seed": seed,
        "balancing": strategy,
        "ratio": float(ratio),
        "sample_size": None if sample_size is None else int(sample_size),
        "include_all": include_all if include_all is None or isinstance(include_all, str)
        else list(include_all),
        "train_on": train_on,
        "only_included_steps": restricted,
        "priority": priority if priority is None or isinstance(priority, str) else list(priority),
        "class_weights_given": class_weights is not None,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "counts_labelled": counts_labelled.tolist(),
    }
    return LarvaDataset(
        windows=windows, labels=out_labels, label_names=names,
        class_weights=selection.class_weights, groups=groups, file=file_index, larva=larva,
        t=times, spec=spec, counts_before=selection.counts_before,
        counts_after=selection.counts_after, sources=[i.path for i in infos],
        source_sha1=[i.sha1 for i in infos], provenance=provenance)


TRAIN_ON = ("all", "edited", "auto")


def _restrict_to_included(infos: list[_FileInfo], include_masks: list[np.ndarray] | None,
                          train_on: str, include_all) -> bool:
    """Apply ``train_on`` (see :func:`build_dataset`): unmark the anchors that do not
    carry the ``include_all`` label; True when that restriction applies."""
    if train_on not in TRAIN_ON:
        raise ValueError(f"train_on must be one of {', '.join(TRAIN_ON)}, not {train_on!r}")
    if train_on == "all":
        return False
    if include_masks is None:
        raise ValueError(f"train_on={train_on!r} needs an include_all label (such as 'edited')")
    marked = [mask & (info.class_idx >= 0) for info, mask in zip(infos, include_masks)]
    if train_on == "auto" and not any(m.any() for m in marked):
        return False
    if not any(m.any() for m in marked):
        raise TaggingError(f"no labelled step carries {include_all!r} (with a full window): "
                           "nothing to train on (or train on all steps)")
    for info, mask in zip(infos, marked):
        info.class_idx[~mask] = -1
    return True


def _prepared_nbytes(prepared: PreparedRun | None) -> int:
    if prepared is None:
        return 0
    return int(prepared.key.nbytes + prepared.points.nbytes + prepared.first.nbytes
               + prepared.last.nbytes + prepared.scale.nbytes)


def _maggotuba_version() -> str:
    from . import __version__
    return __version__


# ==================================================================== split
def split(dataset: LarvaDataset, validation_fraction: float = 0.2,
          seed: int = 0) -> tuple[LarvaDataset, LarvaDataset]:
    """Train/validation split by (file, larva) group, stratified as far as groups allow.

    A larva's windows overlap in time, so all windows of one group go to the same
    side. Deterministic given ``seed`` (see :func:`split_groups` for the method).
    Both parts keep the dataset's class weights and ``counts_before``;
    ``counts_after`` is recomputed and ``provenance["split"]`` says which part it is.
    """
    unique, inverse = np.unique(dataset.groups, return_inverse=True)
    counts = np.zeros((len(unique), dataset.n_classes), dtype=np.int64)
    np.add.at(counts, (inverse, dataset.labels), 1)
    validation = split_groups(counts, validation_fraction, seed)[inverse]
    info = {"validation_fraction": float(validation_fraction), "seed": int(seed)}
    return (dataset.subset(~validation, split={"part": "train", **info}),
            dataset.subset(validation, split={"part": "validation", **info}))


def split_groups(counts: np.ndarray, validation_fraction: float = 0.2,
                 seed: int = 0) -> np.ndarray:
    """``(n_groups,)`` bool: which groups go to validation, given their
    ``(n_groups, n_classes)`` class counts.

    Greedy stratification (in the spirit of scikit-learn's ``StratifiedGroupKFold``):
    groups are visited from the one holding the largest share of some class's total
    to the smallest (that share multiplied by a seeded log-normal jitter, so the
    seed changes the split); each goes to the side that minimises
    ``sum_c ((v_c - f a_c) / T_c)^2 + ((V - f A) / N)^2``, where ``v_c`` / ``a_c`` are
    the validation / assigned counts of class ``c`` so far, ``T_c`` its total, and
    ``V``, ``A``, ``N`` the same over all classes (``f`` the validation fraction).
    Then a repair pass, rarest class first: a class found in two or more groups but
    missing from one side gets the smallest group carrying it moved to that side,
    among the groups whose move leaves the other side every class it had.
    A class carried by a single group is necessarily on one side only.
    """
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    counts = np.asarray(counts, dtype=np.int64)
    n_groups = counts.shape[0]
    validation = np.zeros(n_groups, dtype=bool)
    if validation_fraction == 0 or n_groups < 2:
        return validation
    f = float(validation_fraction)
    totals = counts.sum(axis=0).astype(np.float64)
    n_total = float(totals.sum())
    inverse_totals = np.where(totals > 0, 1.0 / np.maximum(totals, 1.0), 0.0)
    rng = np.random.default_rng([_SPLIT_STREAM, int(seed)])
    share = (counts * inverse_totals).max(axis=1)
    order = np.argsort(-share * np.exp(rng.normal(0.0, 0.5, n_groups)), kind="stable")
    v = np.zeros(counts.shape[1])
    a = np.zeros(counts.shape[1])
    big_v = big_a = 0.0
    for g in order:
        n = counts[g]
        size = float(n.sum())
        a += n
        big_a += size
        to_val = (((v + n - f * a) * inverse_totals) ** 2).sum() + ((big_v + size - f * big_a) / n_total) ** 2
        to_train = (((v - f * a) * inverse_totals) ** 2).sum() + ((big_v - f * big_a) / n_total) ** 2
        if to_val < to_train:
            validation[g] = True
            v += n
            big_v += size
    has = counts > 0
    for c in np.argsort(totals, kind="stable"):
        if has[:, c].sum() < 2:
            continue
        for target in (True, False):  # fill validation, then train
            if (has[:, c] & (validation == target)).any():
                continue
            donors = np.flatnonzero(has[:, c] & (validation != target))
            donor_side = has[validation != target].sum(axis=0)  # groups per class on that side
            safe = [g for g in donors if np.all(donor_side[has[g]] >= 2)]
            if safe:
                g = min(safe, key=lambda k: (counts[k].sum(), k))
                validation[g] = target
    return validation


# =================================================================== HDF5 I/O
def dataset_file_name(dataset: LarvaDataset, date: _dt.date | None = None) -> str:
    """``larva_dataset_{YYYY_MM_DD}_{len_traj}_{len_pred}_{n_samples}.hdf5`` (SPEC §5.1)."""
    date = date or _dt.date.today()
    return (f"larva_dataset_{date.strftime('%Y_%m_%d')}_{dataset.spec.len_traj}_"
            f"{dataset.spec.len_pred}_{len(dataset)}.hdf5")


def write_hdf5(dataset: LarvaDataset, directory_or_path: str | os.PathLike, *,
               compression: str | None = "gzip", overwrite: bool = True) -> Path:
    """Write ``dataset`` (layout in the module docstring); return the file's path.

    A directory (existing, or a path without an ``.hdf5``/``.h5`` suffix) gets the
    SPEC §5.1 file name. ``compression``: ``gzip`` (level 4, portable), ``lzf``
    (faster, h5py only) or ``None``.
    """
    target = Path(directory_or_path)
    if target.is_dir() or target.suffix.lower() not in (".hdf5", ".h5"):
        target = target / dataset_file_name(dataset)
    if compression not in ("gzip", "lzf", None):
        raise ValueError(f"compression must be 'gzip', 'lzf' or None, not {compression!r}")
    n = len(dataset)
    with atomic_path(target, overwrite=overwrite) as tmp, h5py.File(tmp, "w") as h5:
        samples = h5.create_group("samples")
        samples.attrs["len_traj"] = int(dataset.spec.len_traj)
        samples.attrs["len_pred"] = int(dataset.spec.len_pred)
        samples.attrs["n_samples"] = int(n)
        samples.attrs["frame_interval"] = float(dataset.spec.frame_interval)
        samples.attrs["registered"] = 1
        samples.attrs["rescaled"] = "median body length"
        options: dict = {}
        if n and compression is not None:
            options = {"chunks": (min(n, 1024), 2, 5, dataset.spec.width),
                       "compression": compression, "shuffle": True}
            if compression == "gzip":
                options["compression_opts"] = 4
        samples.create_dataset("windows", data=dataset.windows, **options)
        samples.create_dataset("labels", data=dataset.labels)
        samples.create_dataset("groups", data=dataset.groups)
        samples.create_dataset("file", data=dataset.file)
        samples.create_dataset("larva", data=dataset.larva)
        samples.create_dataset("t", data=dataset.t)
        h5.attrs["format"] = FORMAT_NAME
        h5.attrs["format_version"] = FORMAT_VERSION
        h5.attrs["labels"] = np.array(dataset.label_names, dtype=h5py.string_dtype())
        h5.attrs["class_weights"] = dataset.class_weights
        h5.attrs["counts_before"] = dataset.counts_before
        h5.attrs["counts_after"] = dataset.counts_after
        h5.attrs["window_spec"] = json.dumps(dataclasses.asdict(dataset.spec))
        h5.attrs["sources"] = json.dumps(
            [{"path": os.path.abspath(p), "sha1": s}
             for p, s in zip(dataset.sources, dataset.source_sha1)])
        h5.attrs["provenance"] = json.dumps(dataset.provenance)
    return target


_SAMPLE_DATASETS = ("windows", "labels", "groups", "file", "larva", "t")
_ROOT_ATTRS = ("labels", "class_weights", "counts_before", "counts_after", "window_spec",
               "sources", "provenance")


def read_hdf5(path: str | os.PathLike) -> LarvaDataset:
    """Read a file written by :func:`write_hdf5`; FormatError if it is missing,
    not HDF5, truncated, or lacks or mangles any part of the layout."""
    path = Path(path)
    if not path.is_file():
        raise FormatError(path, "no such file" if not path.exists() else "is not a file")
    try:
        h5 = h5py.File(path, "r")
    except OSError as err:
        raise FormatError(path, f"not a readable HDF5 file (truncated or another format: "
                                f"{_short(err)})") from err
    try:
        with h5:
            if "samples" not in h5 or not isinstance(h5["samples"], h5py.Group):
                raise FormatError(path, "not a larva dataset: no 'samples' group")
            samples = h5["samples"]
            missing = [f"samples/{k}" for k in _SAMPLE_DATASETS if k not in samples]
            missing += [k for k in _ROOT_ATTRS if k not in h5.attrs]
            if missing:
                raise FormatError(path, f"not a larva dataset written by maggotuba: missing "
                                        f"{', '.join(missing)}")
            arrays = {k: samples[k][()] for k in _SAMPLE_DATASETS}
            names = [n.decode() if isinstance(n, bytes) else str(n)
                     for n in np.atleast_1d(h5.attrs["labels"])]
            spec = WindowSpec(**json.loads(_text(h5.attrs["window_spec"])))
            sources = json.loads(_text(h5.attrs["sources"]))
            provenance = json.loads(_text(h5.attrs["provenance"]))
            n_attr = samples.attrs.get("n_samples")
            dataset = LarvaDataset(
                windows=arrays["windows"], labels=arrays["labels"], label_names=names,
                class_weights=np.asarray(h5.attrs["class_weights"]), groups=arrays["groups"],
                file=arrays["file"], larva=arrays["larva"], t=arrays["t"], spec=spec,
                counts_before=np.asarray(h5.attrs["counts_before"]),
                counts_after=np.asarray(h5.attrs["counts_after"]),
                sources=[s["path"] for s in sources], source_sha1=[s.get("sha1") for s in sources],
                provenance=provenance)
            if n_attr is not None and int(n_attr) != len(dataset):
                raise FormatError(path, f"samples/n_samples says {int(n_attr)} but "
                                        f"{len(dataset)} samples are stored")
            return dataset
    except FormatError:
        raise
    except (OSError, KeyError, ValueError, TypeError, json.JSONDecodeError) as err:
        raise FormatError(path, f"damaged or inconsistent larva dataset: {_short(err)}") from err


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:200]
