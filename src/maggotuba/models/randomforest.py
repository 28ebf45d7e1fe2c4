"""The random-forest tagger (SPEC §6.2, the 20220418 prototype): a random forest
on the latent features of the frozen pretrained encoder.

Training embeds every window once with the frozen encoder (eval mode, running
batch-norm statistics, batched, ``torch.inference_mode``), then fits a
:class:`sklearn.ensemble.RandomForestClassifier` on the latents, with the
per-class weights of the dataset (``class_weight``) and ``random_state=seed``.
The encoder is never updated. scikit-learn is needed for training only.

**Serialisation without pickle.** The fitted forest is not saved as a Python
object (pickle, joblib) nor as a ``skops`` archive: its trees are exported as
plain arrays into ``forest.safetensors`` and prediction is done here in numpy.
A safetensors file is a JSON header plus raw little-endian buffers, so reading
one never runs code, whatever its content. Every array is checked on loading
(dtypes, shapes, child indices, feature indices, probabilities), so a
tampered file cannot cause an infinite loop or an out-of-range read; anything
wrong raises :class:`~taggingbackends.errors.FormatError`. ``skops`` was set
aside because loading a forest with it means trusting
``sklearn.tree._tree.Tree``, whose state (a raw node array) sklearn does not
check for consistent child indices, because ``skops`` has had load-time
code-execution flaws (CVE-2024-37065, CVE-2025-54412, CVE-2025-54413), and
because a skops file is tied to the scikit-learn version's internal layout.
The array format needs neither scikit-learn nor skops for prediction.

``forest.safetensors`` holds, for ``n_trees`` trees with ``n_nodes`` nodes in
all (the nodes of tree ``t`` are ``node_offsets[t]:node_offsets[t+1]``, in
scikit-learn's order, child indices local to their tree, ``-1`` for a leaf):

* ``node_offsets`` int64 ``(n_trees + 1,)``;
* ``children_left``, ``children_right``, ``feature`` int32 ``(n_nodes,)``;
* ``threshold`` float64 ``(n_nodes,)``; ``missing_go_to_left`` uint8 ``(n_nodes,)``;
* ``leaf_value`` float64 ``(n_leaves, n_classes)``: the normalised class
  distribution of each leaf (leaves in node order), columns in the order of
  the tagger's labels (zeros for a class absent from the training data);
* ``classes`` int64: the label indices seen in training;

and metadata ``format`` (``maggotuba-forest/1``), ``n_features``, ``n_classes``.
An internal node sends a sample left when ``x[feature] <= threshold`` (the
float32 feature compared in float64, as scikit-learn does; a NaN goes where
``missing_go_to_left`` says). The forest's probabilities are the mean over
trees of the leaf distributions, which is what ``predict_proba`` computes.

A model instance directory holds ``clf_config.json`` (``"kind":
"maggotuba-randomforest"``, the :class:`TaggerConfig` fields, the window
geometry and a ``forest`` section with the hyperparameters),
``autoencoder_config.json``, ``encoder.safetensors`` (the encoder's state
dict), ``forest.safetensors`` and ``training_log.json``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import struct
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load as _st_load_numpy
from safetensors.numpy import save as _st_save_numpy
from safetensors.torch import load as _st_load_torch
from safetensors.torch import save as _st_save_torch
from torch import nn

from taggingbackends.errors import FormatError, TaggingError
from taggingbackends.fileio import atomic_path, atomic_write_text

from ..features import WindowSpec
from .autoencoder import Encoder, MaggotUBAConfig
from .tagger import (
    AE_CONFIG_FILE,
    CLF_CONFIG_FILE,
    LOG_FILE,
    SavedTagger,
    TaggerConfig,
    TrainingData,
    macro_f1,
)

__all__ = [
    "ENCODER_FILE",
    "FOREST_FILE",
    "FOREST_FORMAT",
    "KIND",
    "ForestArrays",
    "ForestClassifier",
    "RandomForestTagger",
    "embed_windows",
    "load_random_forest",
    "save_random_forest",
    "train_random_forest",
]

KIND = "maggotuba-randomforest"
FOREST_FILE = "forest.safetensors"
ENCODER_FILE = "encoder.safetensors"
FOREST_FORMAT = "maggotuba-forest/1"
LOG_FLOOR = 1e-9            # probabilities are clipped here before taking logs
_PREDICT_CHUNK = 4096       # samples per traversal chunk (bounds memory: chunk x n_trees)
_ARRAYS = {                 # name -> dtype, in the file
    "node_offsets": np.int64,
    "children_left": np.int32,
    "children_right": np.int32,
    "feature": np.int32,
    "threshold": np.float64,
    "missing_go_to_left": np.uint8,
    "leaf_value": np.float64,
    "classes": np.int64,
}


# ------------------------------------------------------------------ forest
class ForestArrays:
    """A fitted random forest as flat arrays, with a vectorised numpy ``predict_proba``.

    The constructor checks the arrays and raises :class:`ValueError` if they do
    not describe a forest of proper trees; :meth:`from_sklearn` builds one from a
    fitted ``RandomForestClassifier``.
    """

    def __init__(self, node_offsets: np.ndarray, children_left: np.ndarray, children_right: np.ndarray,
                 feature: np.ndarray, threshold: np.ndarray, missing_go_to_left: np.ndarray,
                 leaf_value: np.ndarray, classes: np.ndarray, n_features: int, n_classes: int) -> None:
        self.n_features = int(n_features)
        self.n_classes = int(n_classes)
        given = {"node_offsets": node_offsets, "children_left": children_left,
                 "children_right": children_right, "feature": feature, "threshold": threshold,
                 "missing_go_to_left": missing_go_to_left, "leaf_value": leaf_value, "classes": classes}
        for name, value in given.items():
            value = np.asarray(value)
            if value.dtype != _ARRAYS[name]:
                raise ValueError(f"{name} must be {np.dtype(_ARRAYS[name]).name}, got {value.dtype.name}")
            setattr(self, name, np.ascontiguousarray(value))
        self._check()
        # global node indices (-1 for leaves) and the row of each leaf in leaf_value
        tree_of_node = np.repeat(np.arange(self.n_trees), np.diff(self.node_offsets))
        base = self.node_offsets[:-1][tree_of_node]
        leaf = self.children_left < 0
        self._left = np.where(leaf, -1, self.children_left + base)
        self._right = np.where(leaf, -1, self.children_right + base)
        self._feature = np.where(leaf, 0, self.feature).astype(np.intp)
        self._go_left_missing = self.missing_go_to_left.astype(bool)
        self._leaf_row = np.where(leaf, np.cumsum(leaf) - 1, -1)
        self._roots = self.node_offsets[:-1].astype(np.intp)
        self._is_leaf = leaf
        self._children = np.stack([self._left, self._right], axis=1).ravel().astype(np.intp)

    # ---------------------------------------------------------------- checks
    def _check(self) -> None:
        off = self.node_offsets
        if off.ndim != 1 or len(off) < 2 or off[0] != 0 or np.any(np.diff(off) < 1):
            raise ValueError("node_offsets must start at 0 and increase strictly (one or more nodes per tree)")
        n_nodes = int(off[-1])
        for name in ("children_left", "children_right", "feature", "threshold", "missing_go_to_left"):
            if getattr(self, name).shape != (n_nodes,):
                raise ValueError(f"{name} must have shape ({n_nodes},), got {getattr(self, name).shape}")
        if self.n_features < 1 or self.n_classes < 1:
            raise ValueError("n_features and n_classes must be positive")
        left, right = self.children_left.astype(np.int64), self.children_right.astype(np.int64)
        leaf = left == -1
        if np.any(leaf != (right == -1)):
            raise ValueError("a node has exactly one child")
        tree = np.repeat(np.arange(len(off) - 1), np.diff(off))
        local = np.arange(n_nodes) - off[:-1][tree]
        size = np.diff(off)[tree]
        internal = ~leaf
        # children come after their parent inside the same tree: no cycle, depth < n_nodes
        for child in (left, right):
            if np.any(internal & ((child <= local) | (child >= size))):
                raise ValueError("a child index points outside its tree or backwards")
        if np.any(internal & (left == right)):
            raise ValueError("a node has the same left and right child")
        # every non-root node has exactly one parent (proper trees)
        parents = np.zeros(n_nodes, dtype=np.int64)
        base = off[:-1][tree]
        np.add.at(parents, (left + base)[internal], 1)
        np.add.at(parents, (right + base)[internal], 1)
        expected = np.ones(n_nodes, dtype=np.int64)
        expected[off[:-1]] = 0
        if not np.array_equal(parents, expected):
            raise ValueError("the nodes do not form trees (a node with no or several parents)")
        if np.any(internal & ((self.feature < 0) | (self.feature >= self.n_features))):
            raise ValueError(f"a feature index is outside [0, {self.n_features})")
        if np.any(internal & np.isnan(self.threshold)):
            raise ValueError("a threshold is NaN")
        if np.any(self.missing_go_to_left > 1):
            raise ValueError("missing_go_to_left must be 0 or 1")
        n_leaves = int(leaf.sum())
        value = self.leaf_value
        if value.shape != (n_leaves, self.n_classes):
            raise ValueError(f"leaf_value must have shape ({n_leaves}, {self.n_classes}), got {value.shape}")
        if not np.all(np.isfinite(value)) or np.any(value < 0) or np.any(value.sum(axis=1) > 1 + 1e-6):
            raise ValueError("leaf_value must hold class distributions (finite, non-negative, summing to 1)")
        cls = self.classes
        if (cls.ndim != 1 or len(cls) < 1 or np.any(np.diff(cls) <= 0) or cls[0] < 0
                or cls[-1] >= self.n_classes):
            raise ValueError(f"classes must be increasing label indices in [0, {self.n_classes})")

    # --------------------------------------------------------------- queries
    @property
    def n_trees(self) -> int:
        return len(self.node_offsets) - 1

    @property
    def n_nodes(self) -> int:
        return int(self.node_offsets[-1])

    def max_depth(self) -> int:
        """Depth of the deepest leaf (a lone root has depth 0)."""
        depth = np.zeros(self.n_nodes, dtype=np.int64)
        level = self._roots
        d = 0
        while level.size:
            depth[level] = d
            level = level[self._left[level] >= 0]
            level = np.concatenate([self._left[level], self._right[level]])
            d += 1
        return int(depth.max())

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities ``(n, n_classes)`` float64 of float32 features ``(n, n_features)``."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"features must have shape (n, {self.n_features}), got {x.shape}")
        out = np.zeros((len(x), self.n_classes), dtype=np.float64)
        for start in range(0, len(x), _PREDICT_CHUNK):
            out[start:start + _PREDICT_CHUNK] = self._predict_chunk(x[start:start + _PREDICT_CHUNK])
        return out

    def _leaves(self, x: np.ndarray) -> np.ndarray:
        """Global leaf index reached by every (sample, tree) pair, shape (n, n_trees).

        All pairs descend one level per pass; pairs are ordered tree by tree (better
        locality) and dropped from the active set as soon as they reach a leaf."""
        n, n_trees, d = len(x), self.n_trees, x.shape[1]
        flat = x.ravel()
        out = np.repeat(self._roots, n)                 # pair p: tree p // n, sample p % n
        pair = np.flatnonzero(~self._is_leaf[out])
        at = out[pair]
        offset = (pair % n) * d                         # where the sample's features start in flat
        has_nan = bool(np.isnan(flat).any())
        while at.size:
            value = flat[offset + self._feature[at]]
            go_right = ~(value <= self.threshold[at])   # float32 promoted to float64, as in sklearn
            if has_nan:
                missing = np.isnan(value)
                go_right[missing] = ~self._go_left_missing[at[missing]]
            at = self._children[2 * at + go_right]
            done = self._is_leaf[at]
            out[pair[done]] = at[done]
            keep = ~done
            at, offset, pair = at[keep], offset[keep], pair[keep]
        return out.reshape(n_trees, n).T

    def _predict_chunk(self, x: np.ndarray) -> np.ndarray:
        rows = self._leaf_row[self._leaves(x)]          # (n, n_trees)
        out = np.zeros((len(x), self.n_classes), dtype=np.float64)
        for t in range(self.n_trees):                   # tree by tree, like sklearn's accumulation
            out += self.leaf_value[rows[:, t]]
        out /= self.n_trees
        return out

    # ------------------------------------------------------------- exchange
    @classmethod
    def from_sklearn(cls, forest: Any, n_classes: int) -> ForestArrays:
        """Export a fitted single-output ``RandomForestClassifier`` whose classes are
        label indices in ``[0, n_classes)``."""
        classes = np.asarray(forest.classes_)
        if classes.ndim != 1 or not np.issubdtype(classes.dtype, np.integer):
            raise ValueError("the forest must be single-output with integer classes")
        classes = classes.astype(np.int64)
        offsets, lefts, rights, features, thresholds, missing, values = [0], [], [], [], [], [], []
        for estimator in forest.estimators_:
            tree = estimator.tree_
            if tree.n_outputs != 1:
                raise ValueError("multi-output forests are not supported")
            if tree.node_count >= 2**31:
                raise ValueError("a tree has too many nodes for int32 child indices")
            left = np.asarray(tree.children_left)
            leaf = left == -1
            offsets.append(offsets[-1] + tree.node_count)
            lefts.append(left)
            rights.append(np.asarray(tree.children_right))
            features.append(np.asarray(tree.feature))
            thresholds.append(np.asarray(tree.threshold))
            go_left = getattr(tree, "missing_go_to_left", None)   # sklearn >= 1.3
            missing.append(np.zeros(tree.node_count, np.uint8) if go_left is None
                           else np.asarray(go_left).astype(np.uint8))
            # what DecisionTreeClassifier.predict_proba does: leaf values normalised per row
            raw = np.asarray(tree.value)[:, 0, :len(classes)][leaf].astype(np.float64)
            normaliser = raw.sum(axis=1, keepdims=True)
            normaliser[normaliser == 0.0] = 1.0
            full = np.zeros((int(leaf.sum()), n_classes), dtype=np.float64)
            full[:, classes] = raw / normaliser
            values.append(full)
        return cls(node_offsets=np.asarray(offsets, dtype=np.int64),
                   children_left=np.concatenate(lefts).astype(np.int32),
                   children_right=np.concatenate(rights).astype(np.int32),
                   feature=np.where(np.concatenate(lefts) == -1, -2, np.concatenate(features)).astype(np.int32),
                   threshold=np.concatenate(thresholds).astype(np.float64),
                   missing_go_to_left=np.concatenate(missing),
                   leaf_value=np.concatenate(values), classes=classes,
                   n_features=int(forest.n_features_in_), n_classes=n_classes)

    def to_bytes(self) -> bytes:
        """The safetensors serialisation (see the module docstring)."""
        tensors = {name: getattr(self, name) for name in _ARRAYS}
        metadata = {"format": FOREST_FORMAT, "n_features": str(self.n_features),
                    "n_classes": str(self.n_classes), "n_trees": str(self.n_trees)}
        return _st_save_numpy(tensors, metadata=metadata)

    @classmethod
    def from_bytes(cls, data: bytes) -> ForestArrays:
        """Parse and check a forest file's bytes; :class:`ValueError` if anything is wrong."""
        metadata = _safetensors_metadata(data)
        if metadata.get("format") != FOREST_FORMAT:
            raise ValueError(f"not a {FOREST_FORMAT} file (format {metadata.get('format')!r})")
        try:
            n_features, n_classes = int(metadata["n_features"]), int(metadata["n_classes"])
        except (KeyError, ValueError) as err:
            raise ValueError("metadata lacks valid n_features/n_classes") from err
        try:
            tensors = _st_load_numpy(data)
        except Exception as err:  # safetensors raises several types for corrupt files
            raise ValueError(f"unreadable safetensors data: {_first_line(err)}") from err
        if set(tensors) != set(_ARRAYS):
            raise ValueError(f"expected arrays {sorted(_ARRAYS)}, got {sorted(tensors)}")
        return cls(**tensors, n_features=n_features, n_classes=n_classes)

    def equals(self, other: ForestArrays) -> bool:
        return (self.n_features == other.n_features and self.n_classes == other.n_classes
                and all(np.array_equal(getattr(self, k), getattr(other, k)) for k in _ARRAYS))


def _safetensors_metadata(data: bytes) -> dict:
    """The ``__metadata__`` of a safetensors buffer (header: u64 length + JSON)."""
    if len(data) < 8:
        raise ValueError("file too short for a safetensors header")
    (length,) = struct.unpack("<Q", data[:8])
    if length > len(data) - 8 or length > 100_000_000:
        raise ValueError("safetensors header length exceeds the file")
    try:
        header = json.loads(data[8:8 + length].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError("safetensors header is not JSON") from err
    if isinstance(header, dict) and isinstance(header.get("__metadata__", {}), dict):
        return header.get("__metadata__", {})
    raise ValueError("safetensors header has no metadata dictionary")


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


# ----------------------------------------------------------------- modules
class ForestClassifier(nn.Module):
    """A torch-callable wrapper of a forest: latents ``(n, dim_latent)`` → logits.

    The logits are ``log(max(p, 1e-9))`` of the forest's probabilities ``p``, so a
    softmax gives the probabilities back (to within ``n_classes × 1e-9``). The
    module has no parameters: ``.to(device)``, ``.eval()`` and ``.train()`` leave
    the forest as it is; the output is on the input's device.
    """

    def __init__(self, forest: ForestArrays) -> None:
        super().__init__()
        self.forest = forest

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        x = latent.detach().to(device="cpu", dtype=torch.float32).numpy()
        probabilities = self.forest.predict_proba(x)
        logits = np.log(np.maximum(probabilities, LOG_FLOOR)).astype(np.float32)
        return torch.from_numpy(logits).to(latent.device)

    def extra_repr(self) -> str:
        f = self.forest
        return f"trees={f.n_trees}, nodes={f.n_nodes}, features={f.n_features}, classes={f.n_classes}"


class RandomForestTagger(nn.Module):
    """Frozen encoder + random forest: ``(n, 2, 5, len_traj)`` windows → class logits.

    ``encoder`` and ``classifier`` are what :func:`maggotuba.predict.predict_run`
    uses; ``params`` holds the forest's hyperparameters; ``estimator`` is the
    fitted scikit-learn object after training (``None`` once loaded from disk).
    """

    def __init__(self, encoder: Encoder, forest: ForestArrays, params: dict | None = None,
                 estimator: Any = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.classifier = ForestClassifier(forest)
        self.params = dict(params or {})
        self.estimator = estimator

    @property
    def forest(self) -> ForestArrays:
        return self.classifier.forest

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.encoder(x))


# ---------------------------------------------------------------- training
@torch.inference_mode()
def embed_windows(encoder: Encoder, windows: np.ndarray, device: str = "cpu",
                  batch_size: int = 1024) -> np.ndarray:
    """Latents ``(n, dim_latent)`` float32 of ``(n, 2, 5, len_traj)`` windows (eval mode)."""
    encoder = encoder.to(device).eval()
    out = [encoder(torch.from_numpy(np.ascontiguousarray(windows[s:s + batch_size], dtype=np.float32))
                   .to(device)).float().cpu().numpy()
           for s in range(0, len(windows), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, encoder.config.dim_latent), dtype=np.float32)


def train_random_forest(
    train: TrainingData,
    validation: TrainingData,
    encoder_state: dict,
    model_config: MaggotUBAConfig,
    spec: WindowSpec,
    config: TaggerConfig,
    class_weights: np.ndarray | list[float],
    n_estimators: int = 100,
    max_depth: int | None = None,
    seed: int | None = None,
    *,
    min_samples_leaf: int = 1,
    n_jobs: int = 1,
    device: str = "cpu",
    batch_size: int = 1024,
    progress: Callable[[str, int, float], None] | None = None,
) -> tuple[RandomForestTagger, dict]:
    """Fit a random forest on the frozen encoder's latents; returns the tagger (eval
    mode, encoder on the CPU) and its training log (``best_macro_f1`` is the
    validation macro-F1). ``seed`` defaults to ``config.seed``; the result does not
    depend on ``n_jobs`` (each tree's random state is drawn before fitting)."""
    try:
        from sklearn.ensemble import RandomForestClassifier
    except ImportError as err:
        raise TaggingError("training a random-forest tagger needs scikit-learn "
                           "(pip install scikit-learn)") from err
    n_classes = len(config.labels)
    weights = np.asarray(class_weights, dtype=np.float64).reshape(-1)
    if len(weights) != n_classes:
        raise ValueError(f"{len(weights)} class weights for {n_classes} labels")
    if len(train) == 0:
        raise TaggingError("no training samples")
    if train.labels.min() < 0 or train.labels.max() >= n_classes:
        raise ValueError(f"training labels must be class indices in [0, {n_classes})")
    seed = config.seed if seed is None else int(seed)
    started = time.perf_counter()
    encoder = Encoder(model_config)
    encoder.load_state_dict(encoder_state)
    encoder.eval()
    for p in encoder.parameters():
        p.requires_grad_(False)
    tick = time.perf_counter()
    latents = embed_windows(encoder, train.windows, device, batch_size)
    val_latents = embed_windows(encoder, validation.windows, device, batch_size)
    encode_seconds = time.perf_counter() - tick
    if not np.all(np.isfinite(latents)):
        raise TaggingError("the encoder gives non-finite latents for some training windows")
    if progress is not None:
        progress("encoding", len(train) + len(validation), 0.0)
    present = np.unique(train.labels)
    forest = RandomForestClassifier(
        n_estimators=int(n_estimators), max_depth=max_depth, min_samples_leaf=int(min_samples_leaf),
        class_weight={int(c): float(weights[c]) for c in present}, random_state=seed, n_jobs=n_jobs)
    tick = time.perf_counter()
    forest.fit(latents, train.labels)
    fit_seconds = time.perf_counter() - tick
    if progress is not None:
        progress("random forest", int(n_estimators), 0.0)
    arrays = ForestArrays.from_sklearn(forest, n_classes)
    params = {"n_estimators": int(n_estimators), "max_depth": max_depth,
              "min_samples_leaf": int(min_samples_leaf), "seed": seed}
    tagger = RandomForestTagger(encoder.cpu().eval(), arrays, params, estimator=forest)
    tick = time.perf_counter()
    predicted = (arrays.predict_proba(val_latents).argmax(axis=1) if len(validation)
                 else np.zeros(0, dtype=np.int64))
    score = macro_f1(validation.labels, predicted, n_classes)
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (validation.labels, predicted), 1)
    log = {
        "kind": KIND, **params,
        "train_samples": len(train), "validation_samples": len(validation),
        "train_class_counts": np.bincount(train.labels, minlength=n_classes).tolist(),
        "validation_macro_f1": score, "best_macro_f1": score, "best": None, "validation": [],
        "validation_confusion": confusion.tolist(),    # rows: truth, columns: predicted
        "n_nodes": arrays.n_nodes, "max_tree_depth": arrays.max_depth(),
        "timings": {"encode": encode_seconds, "fit": fit_seconds,
                    "validate": time.perf_counter() - tick},
    }
    log["seconds"] = time.perf_counter() - started
    return tagger.eval(), log


# ------------------------------------------------------------- persistence
def save_random_forest(tagger: RandomForestTagger, config: TaggerConfig, model_config: MaggotUBAConfig,
                       spec: WindowSpec, directory: str | Path, log: dict | None = None,
                       extra: dict | None = None) -> Path:
    """Write a random-forest model instance directory (atomically, file by file;
    ``clf_config.json`` last)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    forest = tagger.forest
    state = {k: v.detach().cpu().contiguous().clone() for k, v in tagger.encoder.state_dict().items()}
    with atomic_path(directory / ENCODER_FILE) as tmp:
        tmp.write_bytes(_st_save_torch(state))
    with atomic_path(directory / FOREST_FILE) as tmp:
        tmp.write_bytes(forest.to_bytes())
    atomic_write_text(directory / AE_CONFIG_FILE, model_config.to_json())
    if log is not None:
        atomic_write_text(directory / LOG_FILE, json.dumps(log))
    settings = asdict(config)
    settings["iterations"] = list(config.iterations)
    document = {
        "kind": KIND, **settings, "window": asdict(spec),
        "forest": {**tagger.params, "format": FOREST_FORMAT, "file": FOREST_FILE,
                   "encoder_file": ENCODER_FILE, "n_trees": forest.n_trees, "n_nodes": forest.n_nodes,
                   "n_features": forest.n_features, "classes_seen": forest.classes.tolist()},
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
    }
    if extra:
        document.update(extra)
    atomic_write_text(directory / CLF_CONFIG_FILE, json.dumps(document, indent=2))
    return directory


def load_random_forest(directory: str | Path, device: str = "cpu") -> SavedTagger:
    """Load a model instance saved by :func:`save_random_forest`; FormatError if it
    is incomplete, of another kind, inconsistent or tampered with.
    ``weights_sha1`` is the SHA-1 of the forest file's bytes followed by the encoder file's."""
    directory = Path(directory)
    for name in (CLF_CONFIG_FILE, AE_CONFIG_FILE, FOREST_FILE, ENCODER_FILE):
        if not (directory / name).is_file():
            raise FormatError(directory, f"is not a random-forest tagger directory (no {name})")
    config_path = directory / CLF_CONFIG_FILE
    try:
        document = json.loads(config_path.read_text())
        if not isinstance(document, dict):
            raise TypeError("not a JSON object")
        kind = document.get("kind")
        if kind != KIND:
            raise ValueError(f"kind is {kind!r}, not {KIND!r}")
        config = TaggerConfig(**{k: document[k] for k in TaggerConfig.__dataclass_fields__ if k in document})
        spec = WindowSpec(**document["window"])
        model_config = MaggotUBAConfig.from_json(directory / AE_CONFIG_FILE)
        params = {k: document.get("forest", {}).get(k) for k in
                  ("n_estimators", "max_depth", "min_samples_leaf", "seed")}
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise FormatError(config_path, f"invalid random-forest tagger configuration: {err}") from err
    forest_path, encoder_path = directory / FOREST_FILE, directory / ENCODER_FILE
    forest_bytes, encoder_bytes = forest_path.read_bytes(), encoder_path.read_bytes()
    try:
        forest = ForestArrays.from_bytes(forest_bytes)
    except ValueError as err:
        raise FormatError(forest_path, f"invalid or unsafe forest file: {err}") from err
    if forest.n_features != model_config.dim_latent or forest.n_classes != len(config.labels):
        raise FormatError(forest_path, f"forest has {forest.n_features} features and {forest.n_classes} "
                                       f"classes; the tagger has {model_config.dim_latent} latent "
                                       f"dimensions and {len(config.labels)} labels")
    encoder = Encoder(model_config)
    try:
        encoder.load_state_dict(_st_load_torch(encoder_bytes))
    except Exception as err:  # safetensors and load_state_dict raise several types
        raise FormatError(encoder_path, f"cannot load encoder weights: {_first_line(err)}") from err
    digest = hashlib.sha1(forest_bytes + encoder_bytes).hexdigest()
    model = RandomForestTagger(encoder, forest, params).to(device).eval()
    return SavedTagger(model=model, config=config, model_config=model_config, spec=spec,
                       directory=directory, weights_sha1=digest, metadata=document)
