"""The bagging ensemble tagger (SPEC §6.2, the 20221228 tagger): many simple dense
taggers on windows of several lengths, combined by majority vote.

Upstream's 20221228 tagger "combines 25 taggers based on a 1.5-s time window and
25 taggers based on a 3-s time window, and uses a voting approach (bagging). All
simple taggers featured 25 latent dimensions and 1 dense layer". Here the
window lengths and the number of members per length are settings
(:class:`BaggingConfig`; defaults ``(15, 30)`` points at 0.1 s and 25 members
per length); every member is an ordinary dense tagger
(:mod:`maggotuba.models.tagger`) trained on a bootstrap sample.

Documented choices
------------------

* **Data.** One :class:`~maggotuba.dataset.LarvaDataset` per window length
  (``WindowSpec(len_traj=L)``, same sources, labels, balancing and seed). Group
  ids (one per file × larva) only depend on the list of files, so they agree
  across lengths.
* **One split for all members.** The validation larvae are chosen once
  (:func:`validation_split`: :func:`~maggotuba.dataset.split_groups` on the
  per-larva class counts summed over the lengths) and held out of every member,
  so each member's checkpoint selection and the ensemble's validation score use
  the same unseen larvae. Out-of-bag windows are *not* used for validation:
  windows of one larva overlap in time, so they would leak.
* **Bootstrap.** ``bootstrap="rows"`` (default): each member trains on
  ``round(bootstrap_fraction × n)`` training windows drawn with replacement
  (plain row bootstrap, as in classic bagging); ``"larvae"``: larvae are drawn
  with replacement and bring all their windows (more diversity between members,
  fewer distinct larvae per member); ``"none"``: every member sees the whole
  training set and members differ only by their seeds. Loss weights are the
  dataset's (per length), not recomputed on the bootstrap sample.
* **Seeds.** Member ``j`` of length index ``i`` gets the seed
  ``SeedSequence([seed, i, j]).generate_state(1)[0]`` (:func:`member_seed`):
  its classifier initialisation, batch order, bootstrap draw and (random)
  encoder initialisation all derive from it. Training is deterministic on a
  given device.
* **Encoders.** A member with window length ``L`` needs an encoder made for
  ``L`` points, chosen in this order:

  1. a *pretrained* encoder given for that length (``pretrained={L: directory}``,
     our format or the original MaggotUBA's; upstream's members all started
     from pretrained encoders): two-phase training as a dense tagger
     (frozen encoder, then fine-tuning);
  2. with ``pretrain_iterations > 0``, a short *self-supervised pretraining* on
     the training data's own tracks (:func:`maggotuba.pretrain.pretrain`,
     ``len_pred = L``, windows of the validation larvae excluded; one encoder
     per length, shared by its members), then the same two-phase training;
  3. otherwise (the fallback) a *randomly initialised* encoder (seeded per
     member, ``latent`` dimensions, ``encoder_filters`` widths) trained from
     scratch together with the classifier: no frozen phase (a frozen random
     encoder is pointless), ``iterations[0] + iterations[1]`` fine-tuning
     iterations at the full ``learning_rate``. Each member's ``clf_config.json``
     records the schedule it actually had and ``encoder_origin``.

* **Voting** (:func:`combine`, :func:`predict_ensemble`). Every member tags
  every step (clamped windows at track ends, no post-processing); the label
  is the majority vote of the members' most probable classes, a tie broken by
  the mean probability over members (then by the lower class index). The
  probabilities reported are the members' mean. The step quality is the worst
  over members (``max``: full < clamped < gapped): the longest window clamps
  more steps. With ``edges="skip"`` a step is left unlabelled when *any*
  member's window had to be clamped (within half the longest window of a track
  end). Post-processing (``abc_aac``) runs once, on the voted labels.
  Deterministic: members run in their saved order and sums are accumulated in
  float64 in that order.

Model directory
---------------

``clf_config.json`` holds ``"kind": "maggotuba-bagging"``, the
:class:`~maggotuba.models.tagger.TaggerConfig` fields of the ensemble (labels,
post-processing, the members' shared settings; ``seed`` is the ensemble's),
``members`` (directory names relative to the model directory, in voting order),
``member_window_lengths``, ``member_seeds``, ``voting: "majority"``,
``tie_break: "mean_probability"``, ``window_lengths``, ``members_per_length``,
``bagging`` (the :class:`BaggingConfig` settings), ``window`` (the first
member's geometry) and ``validation`` (ensemble and member macro-F1). Each
``members/NN/`` is an ordinary dense tagger directory written by
:func:`~maggotuba.models.tagger.save_tagger`. ``training_log.json`` holds the
ensemble log. The top-level ``clf_config.json`` is written last, so an
interrupted save never looks like a finished ensemble.

:func:`load_bagging` returns a :class:`BaggingTagger`, usable where a
:class:`~maggotuba.models.tagger.SavedTagger` is: ``members`` (the loaded
members), ``config`` (the ensemble's TaggerConfig: labels, post-processing),
``spec`` and ``model_config`` (the first member's), ``directory``,
``metadata`` (the parsed ``clf_config.json``), ``weights_sha1`` (SHA-1 of the
members' weight hashes, each followed by a newline, in order) and ``model``
(``None``: there is no single network; code that needs one must check
``members``).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch

from taggingbackends.errors import FormatError, TaggingError
from taggingbackends.fileio import atomic_write_text

from ..features import CLAMPED, WindowSpec
from .autoencoder import Encoder, MaggotUBAConfig
from .tagger import (
    CLF_CONFIG_FILE,
    DENSE_KIND,
    LOG_FILE,
    SavedTagger,
    Tagger,
    TaggerConfig,
    TrainingData,
    load_dense_tagger,
    macro_f1,
    model_kind,
    save_tagger,
    train_tagger,
)

__all__ = [
    "KIND",
    "BaggingConfig",
    "BaggingEnsemble",
    "BaggingTagger",
    "TrainedMember",
    "VoteAccumulator",
    "combine",
    "load_bagging",
    "member_seed",
    "save_bagging",
    "train_bagging",
    "train_bagging_datasets",
    "validation_split",
]

KIND = "maggotuba-bagging"
MEMBER_KIND = DENSE_KIND
MEMBERS_DIR = "members"
VOTING = "majority"
TIE_BREAK = "mean_probability"
BOOTSTRAP_MODES = ("rows", "larvae", "none")
_BOOTSTRAP_STREAM = 0xBA6  # keeps bootstrap draws apart from the members' batch streams
_T_DECIMALS = 4

Progress = Callable[[str, int, float], None]


# ================================================================== config
@dataclass
class BaggingConfig:
    """How an ensemble is made. ``tagger`` holds the labels, the post-processing
    of the ensemble and the training settings shared by every member (layers,
    iterations, batch size, learning rates, validation period, ensemble seed)."""

    tagger: TaggerConfig
    window_lengths: tuple[int, ...] = (15, 30)   # points; 1.5 s and 3 s at 0.1 s
    members_per_length: int = 25
    bootstrap: str = "rows"                      # rows | larvae | none
    bootstrap_fraction: float = 1.0              # sample size / training set size
    frame_interval: float = 0.1
    latent: int = 25                             # random / self-pretrained encoders
    encoder_filters: tuple[int, ...] | None = None   # None: MaggotUBA's (128, 64, 32, 32, 32, 16)
    pretrain_iterations: int = 0                 # > 0: self-supervised encoders (option 2)
    pretrain_windows: int = 20_000
    validation_fraction: float = 0.2

    def __post_init__(self) -> None:
        self.window_lengths = tuple(int(n) for n in self.window_lengths)
        if not self.window_lengths or min(self.window_lengths) < 2:
            raise ValueError("window lengths must be at least 2 points")
        if len(set(self.window_lengths)) != len(self.window_lengths):
            raise ValueError(f"duplicate window lengths in {list(self.window_lengths)}")
        if int(self.members_per_length) < 1:
            raise ValueError("at least one member per window length is needed")
        self.members_per_length = int(self.members_per_length)
        if self.bootstrap not in BOOTSTRAP_MODES:
            raise ValueError(f"bootstrap must be one of {', '.join(BOOTSTRAP_MODES)}, not {self.bootstrap!r}")
        if not 0 < self.bootstrap_fraction <= 10:
            raise ValueError("bootstrap_fraction must be in (0, 10]")
        if self.tagger.seed < 0:
            raise ValueError("the ensemble seed must be non-negative")
        if self.encoder_filters is not None:
            self.encoder_filters = tuple(int(w) for w in self.encoder_filters)
        if self.pretrain_iterations < 0 or self.pretrain_windows < 10:
            raise ValueError("pretrain_iterations >= 0 and pretrain_windows >= 10 are required")
        if not 0 < self.validation_fraction < 1:
            raise ValueError("validation_fraction must be in (0, 1)")

    @property
    def n_members(self) -> int:
        return len(self.window_lengths) * self.members_per_length

    def settings(self) -> dict:
        """The settings as plain JSON (without the tagger config)."""
        out = {k: v for k, v in asdict(self).items() if k != "tagger"}
        out["window_lengths"] = list(self.window_lengths)
        if self.encoder_filters is not None:
            out["encoder_filters"] = list(self.encoder_filters)
        return out


def member_seed(seed: int, length_index: int, member_index: int) -> int:
    """The seed of member ``member_index`` of window length number ``length_index``."""
    return int(np.random.SeedSequence([int(seed), int(length_index), int(member_index)]).generate_state(1)[0])


def scratch_model_config(length: int, config: BaggingConfig) -> MaggotUBAConfig:
    """The autoencoder configuration of a random or self-pretrained encoder for ``length`` points."""
    kwargs: dict[str, Any] = {"len_traj": length, "len_pred": length, "dim_latent": config.latent}
    if config.encoder_filters is not None:
        kwargs["enc_filters"] = list(config.encoder_filters)
        kwargs["dec_filters"] = list(config.encoder_filters)
    return MaggotUBAConfig(**kwargs)


# ================================================================== voting
class VoteAccumulator:
    """Combines member outputs one member at a time (bounded memory: per-step sums
    and vote counts, never every member's probabilities)."""

    def __init__(self, n_steps: int, n_labels: int) -> None:
        self.n_members = 0
        self.sum = np.zeros((n_steps, n_labels), dtype=np.float64)
        self.votes = np.zeros((n_steps, n_labels), dtype=np.int32)
        self.quality = np.zeros(n_steps, dtype=np.int8)
        self.clamped = np.zeros(n_steps, dtype=bool)
        self._rows = np.arange(n_steps)

    def add(self, probabilities: np.ndarray, quality: np.ndarray | None = None) -> None:
        probabilities = np.asarray(probabilities)
        if probabilities.shape != self.sum.shape:
            raise ValueError(f"member output has shape {probabilities.shape}, expected {self.sum.shape}")
        self.sum += probabilities
        self.votes[self._rows, probabilities.argmax(axis=1)] += 1
        if quality is not None:
            quality = np.asarray(quality, dtype=np.int8)
            np.maximum(self.quality, quality, out=self.quality)
            self.clamped |= quality == CLAMPED
        self.n_members += 1

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """``(classes int16, mean probabilities float32)``: majority vote, ties broken
        by the mean probability, then by the lower class index."""
        if self.n_members == 0:
            raise ValueError("no member output to combine")
        mean = self.sum / self.n_members
        top = self.votes == self.votes.max(axis=1, keepdims=True)
        classes = np.where(top, mean, -np.inf).argmax(axis=1).astype(np.int16)
        return classes, mean.astype(np.float32)


def combine(probabilities: Sequence[np.ndarray], qualities: Sequence[np.ndarray] | None = None
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Combine members' ``(n_steps, n_labels)`` probabilities (and ``(n_steps,)``
    window qualities): ``(classes, mean probabilities, worst quality, any clamped)``."""
    if not len(probabilities):
        raise ValueError("no member output to combine")
    acc = VoteAccumulator(*np.asarray(probabilities[0]).shape)
    for k, probs in enumerate(probabilities):
        acc.add(probs, None if qualities is None else qualities[k])
    classes, mean = acc.result()
    return classes, mean, acc.quality, acc.clamped


# ================================================================ training
@dataclass
class TrainedMember:
    """One trained member (in memory, before saving)."""

    model: Tagger
    config: TaggerConfig
    model_config: MaggotUBAConfig
    spec: WindowSpec
    log: dict
    window_length: int
    seed: int
    encoder_origin: str
    bootstrap: dict


@dataclass
class BaggingEnsemble:
    """A trained ensemble (in memory): members in voting order."""

    config: BaggingConfig
    members: list[TrainedMember]
    class_weights: dict[int, list[float]] = field(default_factory=dict)

    def as_tagger(self) -> BaggingTagger:
        """The ensemble as a :class:`BaggingTagger` for :func:`predict_ensemble` without
        saving it (``directory`` is ``.``, ``weights_sha1`` empty: nothing is on disk)."""
        members = [SavedTagger(model=m.model, config=m.config, model_config=m.model_config, spec=m.spec,
                               directory=Path("."), weights_sha1="", metadata={"kind": MEMBER_KIND})
                   for m in self.members]
        return BaggingTagger(model=None, members=members, config=self.config.tagger,
                             model_config=members[0].model_config, spec=members[0].spec,
                             directory=Path("."), weights_sha1="", metadata={"kind": KIND},
                             member_window_lengths=[m.window_length for m in self.members])


def validation_split(datasets: Sequence, validation_fraction: float = 0.2, seed: int = 0) -> np.ndarray:
    """Sorted ids of the validation larvae (groups), chosen once for all window
    lengths: :func:`~maggotuba.dataset.split_groups` on the per-group class counts
    summed over ``datasets`` (stratified as far as groups allow)."""
    from ..dataset import split_groups

    groups = np.unique(np.concatenate([d.groups for d in datasets]))
    n_classes = datasets[0].n_classes
    counts = np.zeros((len(groups), n_classes), dtype=np.int64)
    for d in datasets:
        np.add.at(counts, (np.searchsorted(groups, d.groups), d.labels), 1)
    return groups[split_groups(counts, validation_fraction, seed)]


def _bootstrap(train: TrainingData, config: BaggingConfig, seed: int) -> tuple[np.ndarray, dict]:
    n = len(train)
    rng = np.random.default_rng([seed, _BOOTSTRAP_STREAM])
    if config.bootstrap == "none":
        index = np.arange(n)
    elif config.bootstrap == "rows":
        index = np.sort(rng.integers(0, n, size=max(1, int(round(config.bootstrap_fraction * n)))))
    else:  # larvae
        larvae, inverse = np.unique(train.groups, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        bounds = np.concatenate([[0], np.cumsum(np.bincount(inverse, minlength=len(larvae)))])
        drawn = np.sort(rng.integers(0, len(larvae),
                                     size=max(1, int(round(config.bootstrap_fraction * len(larvae))))))
        index = np.concatenate([order[bounds[g]:bounds[g + 1]] for g in drawn])
    info = {"mode": config.bootstrap, "fraction": config.bootstrap_fraction, "samples": int(len(index)),
            "distinct_samples": int(len(np.unique(index))),
            "larvae": int(len(np.unique(train.groups[index])))}
    return index, info


@torch.inference_mode()
def _probabilities(model: Tagger, windows: np.ndarray, device: str, batch_size: int = 1024) -> np.ndarray:
    model.eval()
    out = [torch.softmax(model(torch.from_numpy(windows[s:s + batch_size]).to(device)), dim=1).cpu().numpy()
           for s in range(0, len(windows), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, model.classifier[-1].out_features), np.float32)


def _anchor_keys(dataset) -> list[tuple[int, int, int]]:
    t = np.round(dataset.t * 10 ** _T_DECIMALS).astype(np.int64)
    return list(zip(dataset.file.tolist(), dataset.larva.tolist(), t.tolist()))


def _common_anchors(parts: Sequence) -> list[np.ndarray]:
    """For each part, the row of every anchor (file, larva, time) found in all parts,
    in the first part's order (first occurrence of a repeated anchor)."""
    lookups = []
    for part in parts:
        lookup: dict = {}
        for row, key in enumerate(_anchor_keys(part)):
            lookup.setdefault(key, row)
        lookups.append(lookup)
    common = [key for key in lookups[0] if all(key in other for other in lookups[1:])]
    return [np.array([lookup[key] for key in common], dtype=np.int64) for lookup in lookups]


def train_bagging_datasets(
    datasets: Sequence,
    config: BaggingConfig,
    *,
    encoders: Mapping[int, tuple[dict | None, MaggotUBAConfig, str]] | None = None,
    validation_groups: np.ndarray | None = None,
    device: str = "cpu",
    progress: Progress | None = None,
) -> tuple[BaggingEnsemble, dict]:
    """Train every member on prebuilt datasets, one per ``config.window_lengths``
    (in that order, ``len_pred = 0``, the ensemble's labels, same sources).

    ``encoders`` maps a window length to ``(encoder state dict, MaggotUBAConfig,
    origin text)``; a length missing from it (or with a ``None`` state) gets
    random encoders (fallback 3 of the module docstring). ``validation_groups``
    defaults to :func:`validation_split`. Returns the ensemble and its log
    (``best_macro_f1`` is the ensemble's validation macro-F1 on the anchors
    present in every length's validation set).
    """
    labels = list(config.tagger.labels)
    if len(datasets) != len(config.window_lengths):
        raise ValueError(f"{len(datasets)} datasets for window lengths {list(config.window_lengths)}")
    for length, data in zip(config.window_lengths, datasets):
        if data.spec.len_traj != length or data.spec.len_pred != 0:
            raise ValueError(f"dataset of {data.spec.len_traj}+2×{data.spec.len_pred} points "
                             f"where {length} (len_pred 0) was expected")
        if list(data.label_names) != labels:
            raise ValueError(f"dataset labels {data.label_names} differ from {labels}")
        if [str(p) for p in data.sources] != [str(p) for p in datasets[0].sources]:
            raise ValueError("datasets of an ensemble must come from the same files (larva ids would differ)")
    encoders = dict(encoders or {})
    if validation_groups is None:
        validation_groups = validation_split(datasets, config.validation_fraction, config.tagger.seed)
    validation_groups = np.asarray(validation_groups, dtype=np.int64)
    started = time.perf_counter()
    members: list[TrainedMember] = []
    parts, class_weights = [], {}
    log: dict = {"kind": KIND, "members": [], "validation_larvae": int(len(validation_groups))}
    for li, (length, data) in enumerate(zip(config.window_lengths, datasets)):
        held_out = np.isin(data.groups, validation_groups)
        train_part, val_part = data.subset(~held_out), data.subset(held_out)
        if len(val_part) == 0 or len(train_part) == 0:
            raise TaggingError(f"{length}-point windows: too few larvae to hold some out for validation")
        parts.append(val_part)
        train = TrainingData(train_part.windows, train_part.labels, train_part.groups)
        validation = TrainingData(val_part.windows, val_part.labels, val_part.groups)
        weights = np.asarray(data.class_weights, dtype=np.float64)
        class_weights[length] = weights.tolist()
        state, model_config, origin = encoders.get(length, (None, None, "random"))
        if model_config is None:
            model_config = scratch_model_config(length, config)
        if model_config.len_traj != length:
            raise ValueError(f"the encoder for {length}-point windows has len_traj {model_config.len_traj}")
        spec = replace(data.spec, len_pred=0)
        for mi in range(config.members_per_length):
            seed = member_seed(config.tagger.seed, li, mi)
            member_config = replace(config.tagger, seed=seed, post_processing=[],
                                    class_weights=[float(w) for w in weights])
            if state is None:  # random encoder trained from scratch: no frozen phase, full rate
                torch.manual_seed(seed)
                member_state = Encoder(model_config).state_dict()
                member_config = replace(member_config, iterations=(0, sum(config.tagger.iterations)),
                                        finetune_learning_rate=config.tagger.learning_rate)
                member_origin = f"random (seed {seed})"
            else:
                member_state, member_origin = state, origin
            index, info = _bootstrap(train, config, seed)
            sample = TrainingData(train.windows[index], train.labels[index], train.groups[index])
            k = len(members)
            report = None
            if progress is not None:
                def report(stage: str, iteration: int, loss: float, _k=k, _n=length) -> None:
                    progress(f"member {_k + 1}/{config.n_members} ({_n} points), {stage}", iteration, loss)
            model, member_log = train_tagger(sample, validation, member_state, model_config, spec, member_config,
                                             weights, device=device, progress=report)
            del sample
            members.append(TrainedMember(model=model.cpu().eval(), config=member_config,
                                         model_config=model_config, spec=spec, log=member_log,
                                         window_length=length, seed=seed, encoder_origin=member_origin,
                                         bootstrap=info))
            log["members"].append({"window_length": length, "seed": seed, "encoder": member_origin,
                                   "bootstrap": info, "best_macro_f1": member_log["best_macro_f1"],
                                   "best": member_log["best"], "seconds": member_log["seconds"]})
    ensemble = BaggingEnsemble(config=config, members=members, class_weights=class_weights)
    log.update(evaluate_ensemble(ensemble, parts, device=device))
    log["seconds"] = time.perf_counter() - started
    return ensemble, log


def evaluate_ensemble(ensemble: BaggingEnsemble, validation_parts: Sequence, device: str = "cpu") -> dict:
    """Validation scores: the ensemble's macro-F1 (majority vote) on the anchors found in
    every length's validation part, and each member's on its own part."""
    n_classes = len(ensemble.config.tagger.labels)
    rows = _common_anchors(validation_parts)
    truth = validation_parts[0].labels[rows[0]]
    acc = VoteAccumulator(len(truth), n_classes)
    member_scores = []
    for member in ensemble.members:
        li = ensemble.config.window_lengths.index(member.window_length)
        part = validation_parts[li]
        probs = _probabilities(member.model.to(device), part.windows, device)
        member.model.cpu()
        member_scores.append(macro_f1(part.labels, probs.argmax(axis=1), n_classes))
        acc.add(probs[rows[li]])
    classes, _ = acc.result()
    score = macro_f1(truth, classes, n_classes) if len(truth) else float("nan")
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (truth, classes.astype(np.int64)), 1)
    return {"best_macro_f1": score, "validation_anchors": int(len(truth)),
            "validation_confusion": confusion.tolist(), "member_macro_f1": member_scores,
            "mean_member_macro_f1": float(np.mean(member_scores))}


def train_bagging(
    sources,
    labels: Sequence[str],
    config: BaggingConfig,
    *,
    pretrained: Mapping[int, Any] | None = None,
    balancing: str = "auto",
    sample_size: int | None = None,
    include_all: str | None = "edited",
    class_weights: Sequence[float] | None = None,
    device: str = "cpu",
    write_dataset: str | Path | None = None,
    progress: Progress | None = None,
    reader: dict | None = None,
) -> tuple[BaggingEnsemble, dict]:
    """Build one dataset per window length from labelled files, pick encoders, train.

    ``pretrained`` maps a window length to an encoder directory (ours or the
    original MaggotUBA's) or to ``(state dict, MaggotUBAConfig)``. ``labels``
    replaces ``config.tagger.labels`` when they differ. ``write_dataset``: a
    directory receiving each length's ``larva_dataset_*.hdf5``. ``reader``: options
    for :func:`taggingbackends.formats.load` (the command line's reader flags).
    """
    from ..dataset import build_dataset, write_hdf5

    if list(labels) != list(config.tagger.labels):
        config = replace(config, tagger=replace(config.tagger, labels=list(labels)))
    datasets = []
    for length in config.window_lengths:
        spec = WindowSpec(len_traj=length, frame_interval=config.frame_interval)
        datasets.append(build_dataset(sources, list(labels), spec, balancing=balancing, sample_size=sample_size,
                                      include_all=include_all, class_weights=class_weights,
                                      seed=config.tagger.seed, reader=reader))
        if write_dataset is not None:
            write_hdf5(datasets[-1], Path(write_dataset) if Path(write_dataset).suffix.lower()
                       not in (".hdf5", ".h5") else Path(write_dataset).parent)
    validation_groups = validation_split(datasets, config.validation_fraction, config.tagger.seed)
    encoders: dict[int, tuple[dict | None, MaggotUBAConfig | None, str]] = {}
    pretraining_logs = {}
    for length in config.window_lengths:
        given = (pretrained or {}).get(length)
        if given is not None:
            encoders[length] = _given_encoder(given, length)
        elif config.pretrain_iterations > 0:
            state, model_config, pretrain_log = self_pretrain(datasets[0].sources, length, config,
                                                              exclude_groups=validation_groups, device=device,
                                                              reader=reader)
            encoders[length] = (state, model_config, "self-pretrained on the training data")
            pretraining_logs[str(length)] = pretrain_log
    ensemble, log = train_bagging_datasets(datasets, config, encoders=encoders,
                                           validation_groups=validation_groups, device=device, progress=progress)
    log["datasets"] = {str(d.spec.len_traj): {"samples": int(d.n_samples),
                                              "class_counts": np.asarray(d.counts_after).tolist()}
                       for d in datasets}
    if pretraining_logs:
        log["pretraining"] = pretraining_logs
    return ensemble, log


def _given_encoder(given, length: int) -> tuple[dict, MaggotUBAConfig, str]:
    if isinstance(given, tuple):
        state, model_config = given[0], given[1]
        origin = "pretrained (given in memory)"
    else:
        from ..pretrain import load_encoder

        state, model_config = load_encoder(Path(given))
        origin = f"pretrained: {given}"
    if model_config.len_traj != length:
        raise TaggingError(f"the pretrained encoder given for {length}-point windows takes "
                           f"{model_config.len_traj} points")
    return state, model_config, origin


def self_pretrain(sources: Sequence[Path], length: int, config: BaggingConfig, *,
                  exclude_groups: np.ndarray | None = None, device: str = "cpu",
                  reader: dict | None = None):
    """A short self-supervised pretraining (option 2) on the tracks of ``sources``
    (labelled files, read again), with the larvae in ``exclude_groups`` (the
    validation larvae; group ids as :func:`~maggotuba.dataset.build_dataset`
    numbers them) left out. Returns ``(encoder state, MaggotUBAConfig, log)``."""
    from taggingbackends.formats import load

    from ..pretrain import PretrainConfig, load_pretrained, pretrain, sample_windows, split_by_larva

    runs = [load(path, **(reader or {})) for path in sources]
    spec = WindowSpec(len_traj=length, frame_interval=config.frame_interval, len_pred=length)
    windows = sample_windows(runs, spec, config.pretrain_windows, seed=config.tagger.seed)
    if exclude_groups is not None and len(exclude_groups):
        windows = windows.subset(~np.isin(windows.groups, exclude_groups))
    train, validation = split_by_larva(windows, 0.1, seed=config.tagger.seed)
    if len(train) < 10 or len(validation) == 0:
        raise TaggingError(f"too few full {length}-point windows ({len(windows)}) to pretrain an encoder")
    model_config = scratch_model_config(length, config)
    with tempfile.TemporaryDirectory(prefix="maggotuba-bagging-") as tmp:
        log = pretrain(train, validation, model_config, spec, tmp,
                       PretrainConfig(iterations=config.pretrain_iterations, seed=config.tagger.seed,
                                      validate_every=max(1, min(100, config.pretrain_iterations))),
                       device=device, resume=False)
        model, model_config, _ = load_pretrained(tmp)
    log.pop("train_loss", None)
    return {k: v.clone() for k, v in model.encoder.state_dict().items()}, model_config, log


# ============================================================= persistence
@dataclass
class BaggingTagger(SavedTagger):
    """A bagging ensemble loaded from a model directory: a :class:`SavedTagger` whose
    ``model`` is None, voting with its ``members``."""

    members: list[SavedTagger]
    member_window_lengths: list[int]


def member_names(n: int) -> list[str]:
    width = max(2, len(str(n - 1)))
    return [f"{MEMBERS_DIR}/{k:0{width}d}" for k in range(n)]


def ensemble_sha1(hashes: Sequence[str]) -> str:
    """SHA-1 of the members' weight hashes, each followed by a newline, in order."""
    return hashlib.sha1("".join(f"{h}\n" for h in hashes).encode("ascii")).hexdigest()


def save_bagging(ensemble: BaggingEnsemble, directory: str | Path, log: dict | None = None,
                 extra: dict | None = None) -> Path:
    """Write an ensemble model directory (members first, ``clf_config.json`` last)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    names = member_names(len(ensemble.members))
    for name, member in zip(names, ensemble.members):
        save_tagger(member.model.cpu(), member.config, member.model_config, member.spec, directory / name,
                    member.log, extra={"encoder_origin": member.encoder_origin, "bootstrap": member.bootstrap,
                                       "ensemble_member": name})
    config = ensemble.config
    tagger = asdict(config.tagger)
    tagger["iterations"] = list(config.tagger.iterations)
    tagger["class_weights"] = None
    document = {"kind": KIND, **tagger,
                "members": names,
                "member_window_lengths": [m.window_length for m in ensemble.members],
                "member_seeds": [m.seed for m in ensemble.members],
                "voting": VOTING, "tie_break": TIE_BREAK,
                "window_lengths": list(config.window_lengths),
                "members_per_length": config.members_per_length,
                "bagging": config.settings(),
                "class_weights_per_length": {str(k): v for k, v in ensemble.class_weights.items()},
                "window": asdict(ensemble.members[0].spec),
                "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()}
    if log is not None:
        document["validation"] = {k: log[k] for k in ("best_macro_f1", "validation_anchors",
                                                      "mean_member_macro_f1", "member_macro_f1") if k in log}
        atomic_write_text(directory / LOG_FILE, json.dumps(log))
    if extra:
        document.update(extra)
    atomic_write_text(directory / CLF_CONFIG_FILE, json.dumps(document, indent=2))
    return directory


def load_bagging(directory: str | Path, device: str = "cpu") -> BaggingTagger:
    """Load an ensemble written by :func:`save_bagging`; FormatError (naming the
    file or member directory) if anything is missing or inconsistent."""
    directory = Path(directory)
    config_path = directory / CLF_CONFIG_FILE
    try:
        document = json.loads(config_path.read_text())
    except OSError as err:
        raise FormatError(config_path, f"cannot read the ensemble configuration: {err.strerror or err}") from err
    except ValueError as err:
        raise FormatError(config_path, f"invalid JSON: {err}") from err
    if not isinstance(document, dict) or document.get("kind") != KIND:
        raise FormatError(config_path, f"not a bagging ensemble (kind {KIND!r} expected)")
    try:
        config = TaggerConfig(**{k: document[k] for k in TaggerConfig.__dataclass_fields__ if k in document})
        names = document["members"]
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise ValueError("'members' must be a non-empty list of directory names")
        if document.get("voting", VOTING) != VOTING:
            raise ValueError(f"unknown voting {document.get('voting')!r}")
        lengths = document.get("member_window_lengths")
        if lengths is not None and (not isinstance(lengths, list) or len(lengths) != len(names)):
            raise ValueError("'member_window_lengths' must give one length per member")
    except (ValueError, KeyError, TypeError) as err:
        raise FormatError(config_path, f"invalid ensemble configuration: {err}") from err
    members = []
    for k, name in enumerate(names):
        relative = PurePosixPath(name)
        if relative.is_absolute() or ".." in relative.parts or not relative.parts:
            raise FormatError(config_path, f"member {name!r} must be a directory inside the model directory")
        member_dir = directory.joinpath(*relative.parts)
        if not member_dir.is_dir():
            raise FormatError(member_dir, f"bagging member {name} is missing")
        kind = model_kind(member_dir)
        if kind not in (MEMBER_KIND, None):
            raise FormatError(member_dir, f"bagging member {name} is a {kind!r} model; "
                                          f"members must be {MEMBER_KIND!r} taggers")
        try:
            member = load_dense_tagger(member_dir, device=device)
        except FormatError as err:
            where = err.path.name if err.path is not None and err.path != member_dir else ""
            raise FormatError(member_dir, f"broken bagging member {name}: "
                                          f"{where + ': ' if where else ''}{err.problem}") from err
        if member.config.labels != config.labels:
            raise FormatError(member_dir, f"bagging member {name} predicts {member.config.labels}, "
                                          f"the ensemble {config.labels}")
        if lengths is not None and member.spec.len_traj != lengths[k]:
            raise FormatError(member_dir, f"bagging member {name} has {member.spec.len_traj}-point windows, "
                                          f"{lengths[k]} expected")
        if members and abs(member.spec.frame_interval - members[0].spec.frame_interval) > 1e-9:
            raise FormatError(member_dir, f"bagging member {name} has another frame interval")
        members.append(member)
    return BaggingTagger(model=None, members=members, config=config, model_config=members[0].model_config,
                         spec=members[0].spec, directory=directory,
                         weights_sha1=ensemble_sha1([m.weights_sha1 for m in members]), metadata=document,
                         member_window_lengths=[m.spec.len_traj for m in members])
