"""Training-set selection: labelled files, class selectors, sampling and balancing.

The numpy-only counterpart of PlanarLarvae.jl's ``labelledfiles`` and
``Dataloaders`` (SPEC §3.3, §5.3, §5.4). A training pipeline uses it as::

    files = labelled_files("data/")                      # or pattern="**/groundtruth.label"
    runs = [formats.load(f) for f in files]
    selectors = [Selector(s) for s in ("roll", "¬roll")]
    idx = [class_index(r, selectors, mask=admissible(r, 2.0, 0.0)) for r in runs]
    sel = balance(idx, len(selectors), "auto", seed=0,
                  include=[steps_with(r, "edited") for r in runs])
    # sel.rows_per_file[i]: anchor rows of runs[i]; sel.class_weights: loss weights

Everything works on the concatenated arrays of :class:`~taggingbackends.data.tracks.Run`
(``tags`` bool matrix, ``offsets``), vectorised: no Python loop over time steps.

Conventions
-----------
* A *class index* array has one entry per time step of a run: the class
  (position of the selector) of the step, or ``-1`` when the step belongs to no
  class (unlabelled, not selected, or not admissible). Row indices returned by
  the samplers index these arrays, i.e. rows of the run.
* Every random draw is reproducible: file ``i`` uses a generator seeded from
  ``(seed, i)``, so a file's draw does not depend on the other files.
  ``seed=None`` draws fresh entropy (not reproducible).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .data.labels import LABEL_SUFFIXES, is_label_text
from .data.tracks import Run

__all__ = [
    "BALANCING_STRATEGIES",
    "DEFAULT_MAJORITY_MINORITY_RATIO",
    "NEGATION_PREFIXES",
    "REGEX_PREFIX",
    "TRXMAT_ACTION_LABELS",
    "BalancedSelection",
    "Selector",
    "admissible",
    "as_selectors",
    "balance",
    "class_index",
    "class_index_from_tags",
    "count_classes",
    "inverse_frequency_weights",
    "label_counts",
    "labelled_files",
    "ratio_based_sampling",
    "selector_matrix",
    "steps_with",
]

log = logging.getLogger(__name__)

#: Behaviour labels of JBM trx.mat files (SPEC §5.3); modifiers match ``_strong$`` / ``_weak$``.
TRXMAT_ACTION_LABELS = ("back", "cast", "hunch", "roll", "run", "stop")
#: Prefixes that turn a selector into its complement. ``¬`` is upstream's; ``~`` and ``!``
#: are ASCII alternatives for shells and config files.
NEGATION_PREFIXES = ("¬", "~", "!")
#: Prefix of a regular-expression selector.
REGEX_PREFIX = "re:"
#: ``balance`` strategies (SPEC §5.4).
BALANCING_STRATEGIES = ("auto", "maggotuba", "none")
#: Default majority/minority ratio of the ``maggotuba`` strategy: each class keeps at
#: most twice as many steps as the rarest class. This is the ratio of PlanarLarvae's
#: multi-class Dataloaders test (SPEC §5.3) and keeps the training set nearly balanced
#: (a ratio of 20 would leave the loss dominated by the majority classes, which is the
#: situation the strategy exists to avoid; use ``auto`` to keep all data).
DEFAULT_MAJORITY_MINORITY_RATIO = 2.0

_LABEL_HEAD_BYTES = 4096
_STREAM_FILE = 0x5EED_F11E      # generator streams: per-file draws vs. the sample-size cap
_STREAM_SUBSAMPLE = 0x5EED_CA90


# ============================================================ labelled files
def labelled_files(
    root: str | os.PathLike,
    pattern: str | None = None,
    chunks: bool = False,
    *,
    select: Callable[[str], bool] | None = None,
) -> list[Path]:
    """Labelled files of a data repository (SPEC §3.3 ``labelledfiles``, §5.3 ``Repository``).

    Discovery (``pattern=None``) walks ``root`` (following symbolic links, each
    real directory visited once) and collects:

    * label files: suffix ``.label``, ``.labels``, ``.json`` or ``.nyxlabel`` *and* the
      `.label` signature at the head of the file (``{"metadata": {"id": ...``), so
      other JSON files are ignored; files whose JSON cannot be parsed are skipped with
      a logged warning;
    * trx.mat files: suffix ``.mat`` and the trxmat format's content check.

    Then, as upstream:

    * if several label files *in one directory* list the same data dependency, only
      the last one in sorted name order is kept (the others are older versions);
      ``chunks=True`` keeps them all (they label different tracks of the same file);
    * files that are data dependencies of a discovered label file are dropped
      (their labels come through the label file).

    ``pattern`` replaces discovery: a glob relative to ``root`` such as
    ``**/groundtruth.label`` or upstream's ``**.label`` (a component that starts with
    ``**`` but is longer, e.g. ``**.label``, means ``**/*.label``: any depth). Every
    regular file it matches is returned, with no signature check and no
    de-duplication. A ``root`` that contains ``*`` is split as upstream does:
    ``labelled_files("data/**/groundtruth.label")`` equals
    ``labelled_files("data", "**/groundtruth.label")``. A ``root`` that is a file is
    returned as is.

    ``select`` (a predicate on base names) restricts the files considered.

    Returns paths under ``root`` (``root / relative``), sorted by relative path.
    """
    root_text = os.fspath(root)
    if pattern is None and "*" in root_text:
        root, pattern = _split_glob(root_text)
    root = Path(root)
    if pattern is not None:
        return _glob_files(root, pattern, select)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such directory")

    from .formats import get_format

    is_trxmat = get_format("trxmat").is_format
    found: list[Path] = []
    dependencies: set[Path] = set()
    conflicting: set[Path] = set()
    for directory, names in _walk(root):
        labels: list[tuple[Path, list[Path]]] = []
        for name in names:
            if select is not None and not select(name):
                continue
            path = directory / name
            suffix = path.suffix.lower()
            if suffix in LABEL_SUFFIXES:
                if not _has_label_signature(path):
                    continue
                deps = _label_dependencies(path)
                if deps is None:
                    continue
                labels.append((path, deps))
                found.append(path)
            elif suffix == ".mat" and is_trxmat(path):
                found.append(path)
        by_dependency: dict[Path, list[Path]] = {}
        for path, deps in labels:  # names are sorted, so each list is in sorted order
            for dep in deps:
                dependencies.add(dep)
                by_dependency.setdefault(dep, []).append(path)
        if not chunks:
            for dep, users in by_dependency.items():
                if len(users) > 1:
                    log.info("%s: several label files for dependency %s, keeping %s",
                             directory, dep.name, users[-1].name)
                    conflicting.update(users[:-1])
    kept = [p for p in found if p not in conflicting and _resolved(p) not in dependencies]
    return sorted(kept, key=lambda p: p.relative_to(root).parts)


def _walk(root: Path) -> Iterable[tuple[Path, list[str]]]:
    """(directory, sorted file names) for each directory under ``root``, depth first,
    sorted, following symbolic links but never entering a real directory twice."""
    visited: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in visited:
            dirnames[:] = []
            continue
        visited.add(real)
        dirnames.sort()
        yield Path(dirpath), sorted(filenames)


def _resolved(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _has_label_signature(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            head = handle.read(_LABEL_HEAD_BYTES).decode("utf-8-sig", errors="ignore")
    except OSError:
        return False
    return is_label_text(head)


def _label_dependencies(path: Path) -> list[Path] | None:
    """Resolved dependency paths of a label file; None if it cannot be parsed."""
    try:
        document = json.loads(path.read_bytes().decode("utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        log.warning("%s: skipped, not a readable label file (%s)", path, err)
        return None
    deps = document.get("dependencies") if isinstance(document, dict) else None
    if deps is None:
        return []
    if isinstance(deps, (dict, str)):
        deps = [deps]
    out = []
    for dep in deps:
        name = dep.get("filename") if isinstance(dep, dict) else dep
        if isinstance(name, str) and name:
            out.append(_resolved(path.parent / name))
    return out


def _split_glob(text: str) -> tuple[str, str]:
    parts = Path(text).parts
    i = next(k for k, part in enumerate(parts) if "*" in part)
    root = Path(*parts[:i]) if i else Path(".")
    return os.fspath(root), "/".join(parts[i:])


def _glob_files(root: Path, pattern: str, select: Callable[[str], bool] | None) -> list[Path]:
    components: list[str] = []
    for part in pattern.replace("\\", "/").split("/"):
        if part.startswith("**") and part != "**":
            components += ["**", "*" + part[2:]]  # upstream's `**.label`
        elif part:
            components.append(part)
    if not components:
        raise ValueError(f"empty file pattern {pattern!r}")
    matches = {p for p in root.glob("/".join(components)) if p.is_file()}
    if select is not None:
        matches = {p for p in matches if select(p.name)}
    return sorted(matches, key=lambda p: p.relative_to(root).parts)


# ================================================================ selectors
class Selector:
    """Which time steps belong to a class, from a string (SPEC §5.3).

    * ``"run"``: steps carrying the label ``run`` (primary or secondary);
    * ``"¬roll"`` (also ``"~roll"`` or ``"!roll"``): *labelled* steps that do not
      carry ``roll``, e.g. ``["roll", "¬roll"]`` for a one-vs-rest roll tagger.
      Unlabelled steps (no tag at all) never match, so a complement never turns
      missing labels into negative examples;
    * ``"re:_strong$"``: steps carrying at least one label whose name matches the
      regular expression (:func:`re.search`, so unanchored unless you anchor it);
      ``"¬re:..."`` is its complement;
    * a sequence of such strings, e.g. ``Selector(["run", "¬small_motion"])``: steps
      matched by all of them (a conjunction).

    A selector for a label that does not occur in a run matches no step (its
    complement: every labelled step).
    """

    __slots__ = ("label", "negated", "parts", "pattern", "spec")

    def __init__(self, spec: str | Sequence[str] | Selector):
        if isinstance(spec, Selector):
            spec = spec.spec
        self.negated = False
        self.label: str | None = None
        self.pattern: re.Pattern | None = None
        self.parts: tuple[Selector, ...] = ()
        if isinstance(spec, str):
            self.spec: str | tuple[str, ...] = spec
            body = spec
            if body[:1] in NEGATION_PREFIXES:
                self.negated = True
                body = body[1:]
            if body.startswith(REGEX_PREFIX):
                expression = body[len(REGEX_PREFIX):]
                if not expression:
                    raise ValueError(f"selector {spec!r}: empty regular expression")
                try:
                    self.pattern = re.compile(expression)
                except re.error as err:
                    raise ValueError(f"selector {spec!r}: invalid regular expression ({err})") from None
            elif body:
                self.label = body
            else:
                raise ValueError(f"selector {spec!r}: no label name")
        else:
            items = tuple(spec)
            if not items:
                raise ValueError("a selector needs at least one label")
            self.parts = tuple(Selector(item) for item in items)
            self.spec = tuple(str(part) for part in self.parts)

    def __repr__(self) -> str:
        return f"Selector({self.spec!r})"

    def __str__(self) -> str:
        return self.spec if isinstance(self.spec, str) else "&".join(self.spec)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Selector) and self.spec == other.spec

    def __hash__(self) -> int:
        return hash(self.spec)

    @property
    def name(self) -> str:
        """A class name for reports (the spec string; parts joined with ``&``)."""
        return str(self)

    def columns(self, tag_names: Sequence[str]) -> list[int]:
        """Tag columns the (positive part of a) simple selector looks at."""
        if self.label is not None:
            return [i for i, name in enumerate(tag_names) if name == self.label]
        assert self.pattern is not None
        return [i for i, name in enumerate(tag_names) if self.pattern.search(name)]

    def match(self, tags: np.ndarray | None, tag_names: Sequence[str],
              labelled: np.ndarray | None = None) -> np.ndarray:
        """``(n_steps,)`` bool: steps matched, given the ``(n_steps, n_tags)`` tag matrix.

        ``labelled`` (steps with any tag) may be passed to avoid recomputing it.
        """
        if tags is None:
            return np.zeros(0, dtype=bool)
        if self.parts:
            out = np.ones(tags.shape[0], dtype=bool)
            for part in self.parts:
                out &= part.match(tags, tag_names, labelled)
            return out
        cols = self.columns(tag_names)
        hit = tags[:, cols].any(axis=1) if cols else np.zeros(tags.shape[0], dtype=bool)
        if self.negated:
            if labelled is None:
                labelled = tags.any(axis=1)
            return labelled & ~hit
        return hit


def as_selectors(selectors: str | Selector | Sequence) -> list[Selector]:
    """A list of selectors from one spec or a sequence of specs.

    A sequence item that is itself a list or tuple becomes one conjunction selector.
    """
    if isinstance(selectors, (str, Selector)):
        return [Selector(selectors)]
    return [Selector(s) for s in selectors]


def selector_matrix(tags: np.ndarray | None, tag_names: Sequence[str],
                    selectors: Sequence) -> np.ndarray:
    """``(n_steps, n_selectors)`` bool: which selector matches which step."""
    sels = as_selectors(selectors)
    if tags is None:
        return np.zeros((0, len(sels)), dtype=bool)
    tags = np.asarray(tags, dtype=bool)
    labelled = tags.any(axis=1)
    out = np.zeros((tags.shape[0], len(sels)), dtype=bool)
    for j, sel in enumerate(sels):
        out[:, j] = sel.match(tags, tag_names, labelled)
    return out


def class_index_from_tags(tags: np.ndarray | None, tag_names: Sequence[str], selectors: Sequence,
                          mask: np.ndarray | None = None, n_steps: int | None = None) -> np.ndarray:
    """Class of each step from a tag matrix; see :func:`class_index`."""
    sels = as_selectors(selectors)
    if tags is None:
        n = int(n_steps if n_steps is not None else (0 if mask is None else len(mask)))
        return np.full(n, -1, dtype=np.int64)
    matches = selector_matrix(tags, tag_names, sels)
    index = np.where(matches.any(axis=1), np.argmax(matches, axis=1), -1).astype(np.int64)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != index.shape:
            raise ValueError(f"mask has shape {mask.shape}, expected {index.shape}")
        index[~mask] = -1
    return index


def class_index(run: Run, selectors: Sequence, mask: np.ndarray | None = None) -> np.ndarray:
    """``(n_steps,)`` int64: index of the class of each time step of ``run``, ``-1`` if none.

    The class of a step is the **first** selector that matches it ("first match
    wins"): with ``["run", "re:^run_"]`` a step tagged ``run`` and ``run_large`` is
    class 0. Steps outside ``mask`` (e.g. :func:`admissible` anchors) get ``-1``;
    so do all steps of a run without tags.
    """
    return class_index_from_tags(run.tags, run.tag_names, selectors, mask=mask, n_steps=run.n_steps)


def steps_with(run: Run, labels: str | Iterable[str]) -> np.ndarray:
    """``(n_steps,)`` bool: steps carrying any of ``labels`` (e.g. the priority label,
    or ``edited`` for the steps to always include)."""
    names = {labels} if isinstance(labels, str) else set(labels)
    if run.tags is None:
        return np.zeros(run.n_steps, dtype=bool)
    cols = [i for i, name in enumerate(run.tag_names) if name in names]
    if not cols:
        return np.zeros(run.n_steps, dtype=bool)
    return run.tags[:, cols].any(axis=1)


# ================================================================= counting
def count_classes(class_idx: np.ndarray, n_classes: int) -> np.ndarray:
    """``(n_classes,)`` int64 number of steps of each class (``-1`` entries ignored)."""
    class_idx = np.asarray(class_idx)
    if class_idx.size and int(class_idx.max()) >= n_classes:
        raise ValueError(f"class index {int(class_idx.max())} out of range for {n_classes} classes")
    if class_idx.size and int(class_idx.min()) < -1:
        raise ValueError("class indices must be >= -1")
    selected = class_idx[class_idx >= 0].astype(np.int64)
    return np.bincount(selected, minlength=n_classes).astype(np.int64)


def label_counts(run: Run, mask: np.ndarray | None = None,
                 ignore: Iterable[str] = ()) -> dict[tuple[str, ...], int]:
    """Number of steps of each distinct label combination (SPEC §7 reports these).

    Keys are the alphabetically sorted names set at a step, e.g.
    ``("run", "run_large", "run_strong")``; steps with no label are not counted;
    names in ``ignore`` (e.g. ``edited``) are left out of the combinations.
    """
    if run.tags is None:
        return {}
    ignored = set(ignore)
    cols = [i for i, name in enumerate(run.tag_names) if name not in ignored]
    tags = run.tags[:, cols]
    names = [run.tag_names[i] for i in cols]
    if mask is not None:
        tags = tags[np.asarray(mask, dtype=bool)]
    tags = tags[tags.any(axis=1)]
    if tags.shape[0] == 0:
        return {}
    combos, counts = np.unique(tags, axis=0, return_counts=True)
    out: dict[tuple[str, ...], int] = {}
    for combo, count in zip(combos, counts):
        key = tuple(sorted(names[i] for i in np.flatnonzero(combo)))
        out[key] = out.get(key, 0) + int(count)
    return dict(sorted(out.items()))


# ================================================================ balancing
def _file_rng(seed: int | None, index: int) -> np.random.Generator:
    if seed is None:
        return np.random.default_rng()
    return np.random.default_rng([_STREAM_FILE, int(seed), int(index)])


def _check_per_file(name: str, arrays: Sequence | None, class_idx: Sequence[np.ndarray]) -> list | None:
    if arrays is None:
        return None
    if len(arrays) != len(class_idx):
        raise ValueError(f"{name}: {len(arrays)} arrays for {len(class_idx)} files")
    out = []
    for i, (a, idx) in enumerate(zip(arrays, class_idx)):
        a = np.asarray(a, dtype=bool)
        if a.shape != idx.shape:
            raise ValueError(f"{name}[{i}] has shape {a.shape}, expected {idx.shape}")
        out.append(a)
    return out


def ratio_based_sampling(
    per_file_class_idx: Sequence[np.ndarray],
    n_classes: int,
    ratio: float = DEFAULT_MAJORITY_MINORITY_RATIO,
    seed: int | None = 0,
    priority: Sequence[np.ndarray] | None = None,
    include: Sequence[np.ndarray] | None = None,
) -> list[np.ndarray]:
    """Subsample majority classes (PlanarLarvae ``ratiobasedsampling``, SPEC §5.3).

    Level 1 (classes): ``mincount`` is the smallest non-zero class count over all
    files and ``maxcount = round(ratio * mincount)``; class ``c`` keeps
    ``min(count_c, maxcount)`` steps. Its keep ratio is applied per file:
    ``target = round(count_in_file * class_ratio)`` (round half to even, as Julia's
    ``round``), so a class total can differ from the cap by at most half a step per
    file. Steps are drawn uniformly without replacement (a shuffle) with a
    generator seeded from ``(seed, file index)``.

    Level 2 (``priority``, per-file bool arrays of the steps carrying the priority
    label, upstream ``prioritylabel``): in a class that is capped and has priority
    steps, priority steps are taken first, up to the cap
    (``min(P_c, maxcount)`` of them), and the rest of the cap
    (``min(O_c, maxcount - taken)``) is filled from the class's other steps; each
    part's ratio is again applied per file. Upstream computes the remainder as
    ``min(O_c, maxcount) - taken``, which can leave a class short of its cap; this
    version always fills the cap when it can.

    ``include`` (per-file bool arrays, e.g. ``edited`` steps): steps that are always
    kept *in addition* to the draw (the union), if they belong to a class.

    Returns, per file, the sorted row indices kept (int64).
    """
    idx_list = [np.asarray(a, dtype=np.int64) for a in per_file_class_idx]
    if not ratio > 0:
        raise ValueError(f"majority/minority ratio must be positive, got {ratio}")
    priority = _check_per_file("priority", priority, idx_list)
    include = _check_per_file("include", include, idx_list)
    counts = np.array([count_classes(a, n_classes) for a in idx_list], dtype=np.int64).reshape(
        len(idx_list), n_classes)
    if priority is not None:
        pcounts = np.array([count_classes(np.where(p, a, -1), n_classes)
                            for a, p in zip(idx_list, priority)], dtype=np.int64).reshape(counts.shape)
    else:
        pcounts = np.zeros_like(counts)
    total = counts.sum(axis=0)
    ptotal = pcounts.sum(axis=0)
    otherwise = total - ptotal

    # group g = 2*class + (1 if priority step): keep ratio of each group
    rates = np.zeros(2 * n_classes, dtype=np.float64)
    nonzero = total[total > 0]
    if nonzero.size:
        maxcount = round(ratio * int(nonzero.min()))
        cap = np.minimum(total, maxcount)
        for c in range(n_classes):
            if total[c] == 0:
                continue
            if priority is not None and ptotal[c] > 0 and cap[c] < total[c]:
                taken = min(int(ptotal[c]), int(cap[c]))
                rest = min(int(otherwise[c]), int(cap[c]) - taken)
                rates[2 * c + 1] = taken / ptotal[c]
                rates[2 * c] = rest / otherwise[c] if otherwise[c] else 0.0
            else:
                rates[2 * c] = rates[2 * c + 1] = cap[c] / total[c]

    out = []
    for f, idx in enumerate(idx_list):
        labelled = idx >= 0
        group = np.where(labelled, 2 * idx + (priority[f] if priority is not None else 0), -1)
        group_counts = np.bincount(group[labelled], minlength=2 * n_classes)
        targets = np.minimum(np.round(group_counts * rates).astype(np.int64), group_counts)
        keep = _draw(group, targets, _file_rng(seed, f))
        if include is not None:
            keep |= include[f] & labelled
        out.append(np.flatnonzero(keep).astype(np.int64))
    return out


def _draw(group: np.ndarray, targets: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Bool mask: ``targets[g]`` steps of each group ``g`` drawn uniformly (``-1``: none).

    Vectorised shuffle: sort steps by (group, random key) and keep the first
    ``targets[g]`` ranks of each group.
    """
    keys = rng.random(group.shape[0])
    rows = np.flatnonzero(group >= 0)
    keep = np.zeros(group.shape[0], dtype=bool)
    if rows.size == 0:
        return keep
    g = group[rows]
    order = rows[np.lexsort((keys[rows], g))]
    sorted_groups = group[order]
    starts = np.searchsorted(sorted_groups, sorted_groups, side="left")
    rank = np.arange(order.size) - starts
    keep[order[rank < targets[sorted_groups]]] = True
    return keep


def inverse_frequency_weights(counts: np.ndarray) -> np.ndarray:
    """Normalised inverse class frequencies: the ``auto`` strategy's loss weights.

    ``w_c = (1 / count_c) / sum_k (1 / count_k) * n_classes`` over the classes with
    a non-zero count, so that the weights sum to ``n_classes`` (all ones when the
    classes are balanced) and ``w_c * count_c`` is the same for every present
    class. Classes with no step get weight 0. All-zero counts give all zeros.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if np.any(counts < 0):
        raise ValueError("class counts must be non-negative")
    weights = np.zeros(counts.shape, dtype=np.float64)
    present = counts > 0
    if not present.any():
        return weights
    inverse = 1.0 / counts[present]
    weights[present] = inverse / inverse.sum() * counts.size
    return weights


@dataclass
class BalancedSelection:
    """The outcome of :func:`balance`.

    Attributes:
        rows_per_file: per file, sorted row indices (into its class-index array) of
            the selected training steps.
        class_weights: ``(n_classes,)`` loss weights.
        counts_before: ``(n_classes,)`` class counts over all labelled steps.
        counts_after: ``(n_classes,)`` class counts of the selection.
        strategy: the strategy used.
    """

    rows_per_file: list[np.ndarray]
    class_weights: np.ndarray
    counts_before: np.ndarray
    counts_after: np.ndarray
    strategy: str = "auto"
    seed: int | None = field(default=None, repr=False)

    @property
    def n_samples(self) -> int:
        return int(sum(r.size for r in self.rows_per_file))


def balance(
    per_file_class_idx: Sequence[np.ndarray],
    n_classes: int,
    strategy: str = "auto",
    seed: int | None = 0,
    *,
    ratio: float = DEFAULT_MAJORITY_MINORITY_RATIO,
    sample_size: int | None = None,
    priority: Sequence[np.ndarray] | None = None,
    include: Sequence[np.ndarray] | None = None,
    class_weights: Sequence[float] | np.ndarray | None = None,
) -> BalancedSelection:
    """Choose the training steps and the loss's class weights (SPEC §5.4).

    Strategies:

    * ``auto``: every labelled step (class index >= 0), weights
      :func:`inverse_frequency_weights` of the final selection's counts;
    * ``maggotuba``: :func:`ratio_based_sampling` with ``ratio`` (default
      :data:`DEFAULT_MAJORITY_MINORITY_RATIO`), ``priority`` and ``include``;
      uniform weights (ones);
    * ``none``: every labelled step, uniform weights.

    ``sample_size`` caps the total number of selected steps: when the selection is
    larger, a uniform random subset (over all files together, seeded from
    ``seed``) is kept, always keeping the ``include`` steps; so class proportions
    are preserved in expectation, and the result exceeds ``sample_size`` only if
    the ``include`` steps alone do.

    ``class_weights`` (one per class) overrides the computed weights; a wrong length
    or a negative or non-finite weight is a ValueError.
    """
    key = str(strategy).lower()
    if key not in BALANCING_STRATEGIES:
        raise ValueError(f"unknown balancing strategy {strategy!r} "
                         f"(choose from {', '.join(BALANCING_STRATEGIES)})")
    if n_classes < 1:
        raise ValueError("at least one class is needed")
    idx_list = [np.asarray(a, dtype=np.int64) for a in per_file_class_idx]
    include_masks = _check_per_file("include", include, idx_list)
    override = None
    if class_weights is not None:
        override = np.asarray(class_weights, dtype=np.float64).reshape(-1)
        if override.size != n_classes:
            raise ValueError(f"{override.size} class weights given for {n_classes} classes "
                             "(one weight per label, in the order of the labels)")
        if not np.all(np.isfinite(override)) or np.any(override < 0):
            raise ValueError("class weights must be finite and non-negative")
    if sample_size is not None and int(sample_size) < 1:
        raise ValueError(f"sample_size must be positive, got {sample_size}")

    counts_before = np.zeros(n_classes, dtype=np.int64)
    for idx in idx_list:
        counts_before += count_classes(idx, n_classes)

    if key == "maggotuba":
        rows = ratio_based_sampling(idx_list, n_classes, ratio, seed,
                                    priority=priority, include=include_masks)
    else:
        rows = [np.flatnonzero(idx >= 0).astype(np.int64) for idx in idx_list]

    if sample_size is not None:
        rows = _cap_sample_size(rows, idx_list, include_masks, int(sample_size), seed)

    counts_after = np.zeros(n_classes, dtype=np.int64)
    for idx, r in zip(idx_list, rows):
        counts_after += count_classes(idx[r], n_classes)

    if override is not None:
        weights = override.copy()
    elif key == "auto":
        weights = inverse_frequency_weights(counts_after)
    else:
        weights = np.ones(n_classes, dtype=np.float64)
    return BalancedSelection(rows, weights, counts_before, counts_after, key, seed)


def _cap_sample_size(rows: list[np.ndarray], idx_list: list[np.ndarray],
                     include: list[np.ndarray] | None, sample_size: int,
                     seed: int | None) -> list[np.ndarray]:
    total = sum(r.size for r in rows)
    if total <= sample_size:
        return rows
    forced = [(inc[r] & (idx[r] >= 0)) if include is not None else np.zeros(r.size, dtype=bool)
              for r, idx, inc in zip(rows, idx_list, include or [None] * len(rows))]
    n_forced = sum(int(m.sum()) for m in forced)
    budget = max(0, sample_size - n_forced)
    if n_forced > sample_size:
        log.warning("%d always-included steps exceed sample_size=%d; keeping them all",
                    n_forced, sample_size)
    free_file = np.concatenate([np.full(int((~m).sum()), f, dtype=np.int64)
                                for f, m in enumerate(forced)])
    free_pos = np.concatenate([np.flatnonzero(~m) for m in forced]).astype(np.int64)
    rng = (np.random.default_rng() if seed is None
           else np.random.default_rng([_STREAM_SUBSAMPLE, int(seed)]))
    chosen = np.zeros(free_file.size, dtype=bool)
    chosen[rng.choice(free_file.size, size=min(budget, free_file.size), replace=False)] = True
    out = []
    for f, (r, m) in enumerate(zip(rows, forced)):
        keep = m.copy()
        keep[free_pos[chosen & (free_file == f)]] = True
        out.append(r[keep])
    return out


# ============================================================== admissible
def admissible(run: Run, window_duration_s: float, margin_s: float = 0.0) -> np.ndarray:
    """``(n_steps,)`` bool: anchors whose extended window fits inside their track.

    A step at time ``t`` is admissible when
    ``[t - d/2 - margin, t + d/2 + margin]`` lies within ``[t_first, t_last]`` of its
    track (``d = window_duration_s``). As upstream (``Dataloaders.indicator``), the
    bounds ``t_first + d/2 + margin`` and ``t_last - d/2 - margin`` are rounded to
    4 decimals, and so are the step times, so that float error never drops a step
    that fits exactly (SPEC §8, LarvaTagger.jl#65). With MaggotUBA's past/future
    context, ``margin_s`` is ``d`` (SPEC §5.3).
    """
    if window_duration_s < 0 or margin_s < 0:
        raise ValueError("window duration and margin must be non-negative")
    half = 0.5 * float(window_duration_s) + float(margin_s)
    first = run.t[run.offsets[:-1]]
    last = run.t[run.offsets[1:] - 1]
    lo = np.round(first + half, 4)
    hi = np.round(last - half, 4)
    lengths = run.lengths
    t = np.round(run.t, 4)
    return (t >= np.repeat(lo, lengths)) & (t <= np.repeat(hi, lengths))
