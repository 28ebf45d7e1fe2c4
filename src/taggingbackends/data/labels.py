"""`.label` files: behaviour labels of every time step of every larva of a run.

The file format is the JSON layout of PlanarLarvae.jl / LarvaTagger (SPEC §3):
a run with ``metadata`` (``id`` first), ``units``, ``labels`` (names and
colors), ``secondarylabels``, ``dependencies`` (tracking files with SHA-1) and
``data``: one object per track with ``id`` (larva number as a string), ``t``
(seconds) and ``labels`` (one entry per step: a name, a list of names
``[primary, secondary...]``, or ``[]`` for unlabelled).

In memory, labels are always *decoded* (names, not integers). Encoding to the
1-based integer form happens on :meth:`Labels.dump` (the default, as upstream
writes) unless ``encode=False`` (``--decode``).

Usage, as upstream backends write predictions::

    from taggingbackends.data.labels import Labels
    labels = Labels(labels=["run", "cast"], tracking=["trx.mat"])
    labels["20150701_105504", 512] = {66.675: "run", 66.755: "cast"}
    labels.dump("predicted.label")
"""

from __future__ import annotations

import copy
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from ..errors import DependencyError, FormatError, ValidationError
from ..fileio import atomic_write_text, sha1sum

LABEL_SUFFIXES = (".label", ".labels", ".json", ".nyxlabel")
LABEL_SIGNATURE = re.compile(r'^\{\s*"metadata":\s*\{\s*"id":')
METADATA_ORDER = ("id", "tracker", "genotype", "effector", "protocol", "date_time", "filename")
DEFAULT_UNITS = {"t": "s"}
TIME_PRECISION = 0.001  # s, tolerance when matching label times to tracking times
MANUAL_LABEL = "edited"
_RESERVED_RUN_KEYS = ("metadata", "units", "labels", "secondarylabels", "dependencies", "data")

Entry = Any  # str | list[str]; [] means unlabelled


def is_label_text(head: str) -> bool:
    """Whether ``head`` (the start of a file) has the `.label` signature (SPEC §3.1)."""
    return bool(LABEL_SIGNATURE.match(head.split(",", 1)[0]))


def primary(entry: Entry) -> str | None:
    """The primary label of an entry (``None`` when unlabelled)."""
    if isinstance(entry, str):
        return entry
    return entry[0] if entry else None


def entry_names(entry: Entry) -> list[str]:
    """All names in an entry, primary first."""
    if isinstance(entry, str):
        return [entry]
    return list(entry)


def has_label(entry: Entry, name: str) -> bool:
    return entry == name if isinstance(entry, str) else name in entry


def is_edited(entry: Entry, manual_label: str = MANUAL_LABEL) -> bool:
    """The manual-edit predicate of `merge`: a list entry that carries ``edited``."""
    return isinstance(entry, list) and manual_label in entry


@dataclass
class TrackLabels:
    """Labels of one track: timestamps, one entry per timestamp, extras.

    ``records`` holds other per-step arrays found in the file (kept verbatim);
    ``attributes`` other track keys.
    """

    t: np.ndarray
    labels: list
    records: dict = field(default_factory=dict)
    attributes: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.t = np.asarray(self.t, dtype=np.float64).reshape(-1)
        self.labels = list(self.labels)
        if len(self.labels) != len(self.t):
            raise ValidationError(f"{len(self.t)} timestamps but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.t)

    def as_dict(self) -> dict[float, Entry]:
        return dict(zip(self.t.tolist(), self.labels))


class Labels:
    """One run's labels, with the `.label` file's metadata and label spec.

    Args:
        labels: label names, or ``{"names": [...], "colors": [...]}``.
        secondarylabels: names that are appended to a primary label (``edited``).
        metadata: run metadata; ``metadata["id"]`` is the run id.
        units: defaults to ``{"t": "s"}``.
        tracking: tracking files this run depends on; their SHA-1 are written
            as ``dependencies`` on :meth:`dump`.
        attributes: other run-level keys, kept as is.
    """

    def __init__(
        self,
        labels: Sequence[str] | Mapping | None = None,
        *,
        colors: Sequence[str] | None = None,
        secondarylabels: Sequence[str] | None = None,
        metadata: Mapping | None = None,
        units: Mapping | None = None,
        tracking: Iterable[str | os.PathLike] | None = None,
        dependencies: Sequence[Mapping] | None = None,
        attributes: Mapping | None = None,
    ) -> None:
        names, spec_colors = _parse_labelspec(labels)
        self.names: list[str] = names
        self.colors: list[str] | None = list(colors) if colors is not None else spec_colors
        self.secondarylabels: list[str] = list(secondarylabels or [])
        self.metadata: dict = dict(metadata or {})
        self.units: dict = dict(units) if units is not None else dict(DEFAULT_UNITS)
        self.tracking: list[Path] = [Path(p) for p in (tracking or [])]
        self.dependencies: list[dict] = [dict(d) for d in (dependencies or [])]
        self.attributes: dict = dict(attributes or {})
        self.tracks: dict[int, TrackLabels] = {}
        self.path: Path | None = None
        self._check_names()

    # ------------------------------------------------------------ label spec
    @property
    def labelspec(self) -> dict:
        spec: dict = {"names": list(self.names)}
        if self.colors:
            spec["colors"] = list(self.colors)
        return spec

    @property
    def run_id(self) -> str | None:
        return self.metadata.get("id")

    @run_id.setter
    def run_id(self, value: str) -> None:
        self.metadata = {"id": str(value), **{k: v for k, v in self.metadata.items() if k != "id"}}

    def _check_names(self) -> None:
        both = set(self.names) & set(self.secondarylabels)
        if both:
            raise ValidationError(f"labels {sorted(both)} are both primary and secondary")
        if self.colors is not None and len(self.colors) != len(self.names):
            raise ValidationError(f"{len(self.names)} label names but {len(self.colors)} colors")

    def used_names(self) -> list[str]:
        """Names that occur in the data, in first-appearance order."""
        seen: dict[str, None] = {}
        for track in self.tracks.values():
            for entry in track.labels:
                for name in entry_names(entry):
                    seen.setdefault(name, None)
        return list(seen)

    # ----------------------------------------------------------- containers
    def __len__(self) -> int:
        return len(self.tracks)

    def __iter__(self) -> Iterator[int]:
        return iter(self.tracks)

    def __contains__(self, larva_id: object) -> bool:
        return self._larva_key(larva_id) in self.tracks

    def __getitem__(self, key) -> TrackLabels:
        return self.tracks[self._larva_key(key)]

    def __setitem__(self, key, value) -> None:
        """``labels[larva] = ...`` or ``labels[run_id, larva] = ...``.

        The value is a ``{t: label}`` dict, a :class:`TrackLabels`, or a
        ``(t, labels)`` pair.
        """
        larva = self._larva_key(key)
        if isinstance(value, TrackLabels):
            track = value
        elif isinstance(value, Mapping):
            times = np.fromiter((float(t) for t in value.keys()), dtype=np.float64, count=len(value))
            order = np.argsort(times, kind="stable")
            entries = list(value.values())
            track = TrackLabels(times[order], [entries[i] for i in order])
        else:
            t, entries = value
            track = TrackLabels(t, entries)
        self.tracks[larva] = track

    def _larva_key(self, key) -> int:
        if isinstance(key, tuple):
            run_id, larva = key
            if self.run_id is None:
                self.run_id = str(run_id)
            elif str(run_id) != self.run_id:
                raise KeyError(f"run {run_id!r} is not this file's run {self.run_id!r}")
            key = larva
        return int(key)

    def set_track(self, larva_id: int, t, labels: Sequence[Entry], **attributes) -> TrackLabels:
        """Set the labels of a track from aligned arrays."""
        track = TrackLabels(t, labels, attributes=dict(attributes))
        self.tracks[int(larva_id)] = track
        return track

    def copy(self) -> "Labels":
        return copy.deepcopy(self)

    @property
    def n_steps(self) -> int:
        return sum(len(track) for track in self.tracks.values())

    # ------------------------------------------------------------- reading
    @classmethod
    def load(cls, path: str | os.PathLike, *, verify: bool = True, run: str | None = None) -> "Labels":
        """Read a `.label` file; for a multi-run file, pick ``run`` (or the only one).

        ``verify=False`` skips the SHA-1 check of dependencies (CLI: ``--no-verify``;
        environment: ``TAGGINGBACKENDS_NO_VERIFY=1``).
        """
        runs = cls.load_all(path, verify=verify)
        if run is not None:
            if run not in runs:
                raise FormatError(path, f"has no run {run!r} (runs: {', '.join(runs)})")
            return runs[run]
        if len(runs) != 1:
            raise FormatError(path, f"holds {len(runs)} runs ({', '.join(runs)}); choose one")
        return next(iter(runs.values()))

    @classmethod
    def load_all(cls, path: str | os.PathLike, *, verify: bool = True) -> dict[str, "Labels"]:
        """Read every run of a `.label` file (single run or ``{"runs": ...}``)."""
        path = Path(path)
        document = _read_json(path)
        if isinstance(document, dict) and "runs" in document and "data" not in document:
            raw_runs = document["runs"]
            if not isinstance(raw_runs, dict):
                raise FormatError(path, '"runs" must be an object of runs keyed by run id')
            shared = document.get("metadata", {})
            items = [(str(k), v) for k, v in raw_runs.items()]
        elif isinstance(document, dict):
            shared, items = {}, [(None, document)]
        else:
            raise FormatError(path, "is not a label file (top level is not a JSON object)")
        runs: dict[str, Labels] = {}
        for key, raw in items:
            labels = cls.from_dict(raw, path=path, shared_metadata=shared)
            if labels.run_id is None:
                labels.run_id = key if key is not None else path.stem
            if verify and not _env_skips_verification():
                labels.verify_dependencies()
            runs[labels.run_id] = labels
        return runs

    @classmethod
    def from_dict(cls, raw: Mapping, *, path: Path | None = None,
                  shared_metadata: Mapping | None = None) -> "Labels":
        """Build from a parsed JSON run object (decoding integer labels)."""
        where = path if path is not None else "<label data>"
        if not isinstance(raw, Mapping):
            raise FormatError(where, "a run must be a JSON object")
        try:
            names, colors = _parse_labelspec(raw.get("labels", []))
            secondary, _ = _parse_labelspec(raw.get("secondarylabels", []))
            metadata = dict(shared_metadata or {})
            metadata.update(raw.get("metadata") or {})
            labels = cls(names, colors=colors, secondarylabels=secondary, metadata=metadata,
                         units=raw.get("units", DEFAULT_UNITS),
                         dependencies=_parse_dependencies(raw.get("dependencies")),
                         attributes={k: v for k, v in raw.items() if k not in _RESERVED_RUN_KEYS})
            vocabulary = labels.names + labels.secondarylabels
            for i, track in enumerate(raw.get("data") or []):
                larva, parsed = _parse_track(track, vocabulary, i)
                if larva in labels.tracks:
                    raise ValidationError(f"larva {larva} appears twice")
                labels.tracks[larva] = parsed
        except (ValidationError, ValueError, TypeError, KeyError, IndexError) as err:
            raise FormatError(where, f"invalid label file: {err}") from err
        labels.path = path
        return labels

    def verify_dependencies(self) -> None:
        """Check the SHA-1 of each dependency that exists beside the label file."""
        if self.path is None:
            return
        for dep in self.dependencies:
            target = self.path.parent / dep["filename"]
            if dep.get("sha1") and target.is_file():
                actual = sha1sum(target)
                if actual != dep["sha1"]:
                    raise DependencyError(
                        self.path, f"dependency {dep['filename']} has SHA-1 {actual}, the label file "
                        f"expects {dep['sha1']} (the tracking file changed; use --no-verify "
                        "or verify=False to skip this check)")

    def dependency_paths(self) -> list[Path]:
        """Dependency files resolved against the label file's directory."""
        base = self.path.parent if self.path is not None else Path(".")
        return [base / dep["filename"] for dep in self.dependencies]

    # ------------------------------------------------------------- writing
    def to_dict(self, *, encode: bool = True, base_dir: Path | None = None) -> dict:
        """The JSON object of the run, keys in the order upstream writes them."""
        names = list(self.names)
        for name in self.used_names():  # never lose a label that has no declared name
            if name not in names and name not in self.secondarylabels:
                names.append(name)
        spec: dict = {"names": names}
        if self.colors:
            spec["colors"] = list(self.colors) + ["#999999"] * (len(names) - len(self.colors))
        document: dict = {"metadata": _ordered_metadata(self.metadata), "units": dict(self.units),
                          "labels": spec}
        if self.secondarylabels:
            document["secondarylabels"] = list(self.secondarylabels)
        dependencies = self._current_dependencies(base_dir)
        if dependencies:
            document["dependencies"] = dependencies
        document.update(self.attributes)
        index = {name: i + 1 for i, name in enumerate(names + self.secondarylabels)}
        document["data"] = [self._track_dict(larva, track, index if encode else None)
                            for larva, track in self.tracks.items()]
        return document

    def _current_dependencies(self, base_dir: Path | None) -> list[dict]:
        if not self.tracking:
            return [dict(d) for d in self.dependencies]
        base = base_dir if base_dir is not None else Path(".")
        return [{"filename": Path(os.path.relpath(Path(p).resolve(), base.resolve())).as_posix(),
                 "sha1": sha1sum(p)} for p in self.tracking]

    @staticmethod
    def _track_dict(larva: int, track: TrackLabels, index: dict | None) -> dict:
        entries = track.labels if index is None else [_encode_entry(e, index) for e in track.labels]
        out: dict = {"id": str(larva), "t": np.round(track.t, 3).tolist(), "labels": entries}
        out.update(track.records)
        out.update(track.attributes)
        return out

    def to_json(self, *, encode: bool = True, base_dir: Path | None = None) -> str:
        """The file text, in upstream's pretty-printed style (SPEC §3.2)."""
        return format_label_json(self.to_dict(encode=encode, base_dir=base_dir))

    def dump(self, path: str | os.PathLike, *, encode: bool = True, overwrite: bool = True) -> None:
        """Write the `.label` file atomically (temp file + rename).

        Dependencies are recomputed from ``tracking`` (paths relative to the
        label file's directory). With ``overwrite=False`` an existing file is
        an error.
        """
        path = Path(path)
        if self.run_id is None:
            raise ValidationError("metadata['id'] (the run id) must be set before writing")
        text = self.to_json(encode=encode, base_dir=path.parent)
        atomic_write_text(path, text, overwrite=overwrite)
        self.path = path

    @staticmethod
    def dump_all(runs: Sequence["Labels"], path: str | os.PathLike, *, encode: bool = True,
                 overwrite: bool = True) -> None:
        """Write several runs as one ``{"runs": {...}}`` file."""
        path = Path(path)
        document = {"runs": {lab.run_id: lab.to_dict(encode=encode, base_dir=path.parent)
                             for lab in runs}}
        atomic_write_text(path, format_label_json(document, depth=5), overwrite=overwrite)

    # ---------------------------------------------------------- operations
    def merge(self, manual: "Labels", predicate: Callable[[Entry], bool] | None = None) -> "Labels":
        """A copy of these (predicted) labels with ``manual`` labels merged in.

        Wherever ``predicate(manual_entry)`` holds (default: the step carries
        ``edited``), the manual entry replaces ours at the same time (±1 ms).
        Tracks absent here are copied over. Label names are unioned.
        """
        predicate = predicate or is_edited
        merged = self.copy()
        for name in manual.names:
            if name not in merged.names and name not in merged.secondarylabels:
                merged.names.append(name)
                if merged.colors is not None:
                    merged.colors.append(_color_of(manual, name))
        for name in manual.secondarylabels:
            if name not in merged.secondarylabels:
                merged.secondarylabels.append(name)
        for larva, source in manual.tracks.items():
            if larva not in merged.tracks:
                merged.tracks[larva] = copy.deepcopy(source)
                continue
            target = merged.tracks[larva]
            pos, ok = match_times(target.t, source.t)
            for j in np.flatnonzero(ok):
                if predicate(source.labels[j]):
                    target.labels[pos[j]] = copy.deepcopy(source.labels[j])
        merged._check_names()
        return merged

    def set_default_label(self, run, default: str) -> "Labels":
        """Expand to every track and step of ``run`` (a tracking Run) and fill
        unlabelled steps with ``default``; in place, returns self."""
        if default not in self.names:
            self.names.append(default)
            if self.colors is not None:
                self.colors.append("#999999")
        tracks: dict[int, TrackLabels] = {}
        for track in run:
            entries: list = [default] * len(track.t)
            existing = self.tracks.get(track.larva_id)
            if existing is not None:
                pos, ok = match_times(existing.t, track.t)
                for j in np.flatnonzero(ok):
                    entry = existing.labels[pos[j]]
                    entries[j] = entry if entry else default
            tracks[track.larva_id] = TrackLabels(track.t.copy(), entries,
                                                 attributes=existing.attributes if existing else {})
        self.tracks = tracks
        return self

    def append_label(self, label: str, *, secondary: bool = True, ignore: Iterable[str] = (),
                     if_empty: bool = False) -> "Labels":
        """Add ``label`` to every step (turning names into lists); in place.

        Steps carrying a label in ``ignore`` are skipped; unlabelled steps get
        the label only when ``if_empty`` is true.
        """
        ignored = set(ignore)
        if secondary:
            if label in self.names:
                raise ValidationError(f"{label!r} is a primary label; cannot append it as secondary")
            if label not in self.secondarylabels:
                self.secondarylabels.append(label)
        elif label not in self.names:
            self.names.append(label)
        for track in self.tracks.values():
            for i, entry in enumerate(track.labels):
                names = entry_names(entry)
                if (not names and not if_empty) or ignored.intersection(names) or label in names:
                    continue
                track.labels[i] = names + [label]
        return self

    def crop(self, t0: float, t1: float) -> "Labels":
        """A copy restricted to ``t0 <= t <= t1``; tracks left empty are dropped."""
        cropped = self.copy()
        cropped.tracks = {}
        for larva, track in self.tracks.items():
            keep = (track.t >= t0 - TIME_PRECISION / 2) & (track.t <= t1 + TIME_PRECISION / 2)
            if keep.any():
                idx = np.flatnonzero(keep)
                cropped.tracks[larva] = TrackLabels(
                    track.t[idx], [copy.deepcopy(track.labels[i]) for i in idx],
                    records={k: [v[i] for i in idx] for k, v in track.records.items()},
                    attributes=dict(track.attributes))
        return cropped

    # ------------------------------------------------------ tracking link
    @classmethod
    def from_run(cls, run, *, default_label: str | None = None, tracking=None) -> "Labels":
        """Labels of a tracking run: its behaviour tags if any, else ``default_label``.

        A step with one active tag gets that name; with several, the list of
        them (tag order); with none, ``default_label`` or ``[]``.
        """
        names = list(run.tag_names)
        if default_label is not None and default_label not in names:
            names.append(default_label)
        labels = cls(names, metadata=run_metadata(run), tracking=tracking)
        empty: Entry = default_label if default_label is not None else []
        tag_names = np.array(run.tag_names, dtype=object)
        for track in run:
            if track.tags is None or not len(run.tag_names):
                entries = [empty] * len(track.t)
            else:
                entries = []
                for row in track.tags:
                    active = tag_names[row].tolist()
                    entries.append(active[0] if len(active) == 1 else (active or empty))
            labels.tracks[track.larva_id] = TrackLabels(track.t.copy(), entries)
        return labels

    def tag_matrix(self, run) -> tuple[np.ndarray, list[str]]:
        """Per-step bool tags aligned with ``run`` (time match within 1 ms).

        Columns are ``names ++ secondarylabels``; tracking steps without a
        label (or tracks absent from the labels) get no tag.
        """
        vocabulary = self.names + [n for n in self.used_names() if n not in self.names
                                   and n not in self.secondarylabels] + self.secondarylabels
        column = {name: i for i, name in enumerate(vocabulary)}
        tags = np.zeros((run.n_steps, len(vocabulary)), dtype=bool)
        for i, track in enumerate(run):
            labelled = self.tracks.get(track.larva_id)
            if labelled is None:
                continue
            pos, ok = match_times(labelled.t, track.t)
            base = int(run.offsets[i])
            for j in np.flatnonzero(ok):
                for name in entry_names(labelled.labels[pos[j]]):
                    tags[base + j, column[name]] = True
        return tags, vocabulary


# ---------------------------------------------------------------- helpers
def match_times(reference: np.ndarray, query: np.ndarray,
                tolerance: float = TIME_PRECISION) -> tuple[np.ndarray, np.ndarray]:
    """For each ``query`` time, the index of the nearest ``reference`` time and
    whether it lies within ``tolerance`` (both arrays sorted ascending)."""
    reference = np.asarray(reference, dtype=np.float64)
    query = np.asarray(query, dtype=np.float64)
    if reference.size == 0:
        return np.zeros(query.shape, dtype=np.int64), np.zeros(query.shape, dtype=bool)
    right = np.clip(np.searchsorted(reference, query), 0, reference.size - 1)
    left = np.clip(right - 1, 0, reference.size - 1)
    pick = np.where(np.abs(reference[left] - query) <= np.abs(reference[right] - query), left, right)
    ok = np.abs(reference[pick] - query) < tolerance
    return pick, ok


def run_metadata(run) -> dict:
    """`.label` metadata for a tracking run (id first, then its metadata)."""
    metadata = {"id": run.id}
    # (``masked``: a reader's counts, reported in the provenance, not run metadata)
    metadata.update({k: v for k, v in run.metadata.items() if k not in ("id", "masked")})
    if run.source:
        metadata.setdefault("filename", run.source[0].name)
    return _ordered_metadata(metadata)


def _color_of(labels: Labels, name: str) -> str:
    if labels.colors and name in labels.names:
        return labels.colors[labels.names.index(name)]
    return "#999999"


def _env_skips_verification() -> bool:
    return os.environ.get("TAGGINGBACKENDS_NO_VERIFY", "").lower() in ("1", "true", "yes")


def _read_json(path: Path) -> Any:
    if path.is_dir():
        raise FormatError(path, "is a directory, not a label file")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise FormatError(path, f"cannot be read ({err.strerror or err})") from err
    if not raw.strip():
        raise FormatError(path, "is empty")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise FormatError(path, f"is not UTF-8 text (byte {err.start})") from err
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise FormatError(path, f"invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}") from err


def _parse_labelspec(spec) -> tuple[list[str], list[str] | None]:
    if spec is None:
        return [], None
    if isinstance(spec, Mapping):
        names = [str(n) for n in spec.get("names", [])]
        colors = spec.get("colors")
        return names, [str(c) for c in colors] if colors is not None else None
    if isinstance(spec, str):
        return [spec], None
    return [str(n) for n in spec], None


def _parse_dependencies(deps) -> list[dict]:
    if deps is None:
        return []
    if isinstance(deps, Mapping):
        deps = [deps]
    out = []
    for dep in deps:
        if isinstance(dep, str):
            out.append({"filename": dep})
        elif isinstance(dep, Mapping) and "filename" in dep:
            out.append(dict(dep))
        else:
            raise ValueError(f"bad dependency entry {dep!r}")
    return out


def _parse_track(raw: Mapping, vocabulary: list[str], position: int) -> tuple[int, TrackLabels]:
    if not isinstance(raw, Mapping) or "id" not in raw or "t" not in raw:
        raise ValueError(f"track #{position + 1} needs an 'id' and a 't' array")
    larva = int(raw["id"])
    if not 0 <= larva <= 65535:
        raise ValueError(f"larva id {larva} out of range 0..65535")
    t = np.asarray(raw["t"], dtype=np.float64).reshape(-1)
    if t.size > 1 and np.any(np.diff(t) <= 0):
        raise ValueError(f"timestamps of larva {larva} are not strictly increasing")
    entries = raw.get("labels", [[] for _ in range(t.size)])
    if len(entries) != t.size:
        raise ValueError(f"larva {larva}: {t.size} timestamps but {len(entries)} labels")
    decoded = [_decode_entry(e, vocabulary) for e in entries]
    records, attributes = {}, {}
    for key, value in raw.items():
        if key in ("id", "t", "labels"):
            continue
        if isinstance(value, list) and len(value) == t.size:
            records[key] = value
        else:
            attributes[key] = value
    return larva, TrackLabels(t, decoded, records=records, attributes=attributes)


def _decode_entry(entry, vocabulary: list[str]) -> Entry:
    if isinstance(entry, str):
        return entry
    if isinstance(entry, bool):
        raise ValueError(f"label {entry!r} is neither a name nor an index")
    if isinstance(entry, int):
        if not 1 <= entry <= len(vocabulary):
            raise ValueError(f"label index {entry} outside 1..{len(vocabulary)}")
        return vocabulary[entry - 1]
    if isinstance(entry, list):
        return [_decode_entry(e, vocabulary) for e in entry]
    raise ValueError(f"label {entry!r} is neither a name, an index nor a list")


def _encode_entry(entry: Entry, index: dict[str, int]):
    if isinstance(entry, str):
        return index[entry]
    return [index[name] for name in entry]


def _ordered_metadata(metadata: Mapping) -> dict:
    ordered = {key: metadata[key] for key in METADATA_ORDER if key in metadata}
    ordered.update({k: v for k, v in metadata.items() if k not in ordered})
    if "id" not in ordered:
        raise ValidationError("metadata must have an 'id'")
    return ordered


# ----------------------------------------------------------- JSON style
def format_label_json(value: Any, depth: int = 3) -> str:
    """Pretty-print like the upstream writer: containers down to ``depth`` are
    expanded, object keys right-aligned 3 columns after the brace, list items
    2 columns after the bracket, deeper containers on one line; no trailing
    newline (SPEC §3.2 golden text)."""
    parts: list[str] = []
    _pretty(value, 0, 1, depth, parts)
    return "".join(parts)


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _pretty(value: Any, column: int, level: int, depth: int, out: list[str]) -> None:
    if isinstance(value, Mapping) and value and level <= depth:
        keys = [_compact(str(k)) for k in value]
        width = max(len(k) for k in keys)
        out.append("{\n")
        for i, (key, item) in enumerate(zip(keys, value.values())):
            if i:
                out.append(",\n")
            out.append(" " * (column + 3 + width - len(key)) + key + ": ")
            _pretty(item, column + 3 + width + 2, level + 1, depth, out)
        out.append("\n" + " " * column + "}")
    elif isinstance(value, (list, tuple)) and value and level <= depth:
        out.append("[\n")
        for i, item in enumerate(value):
            if i:
                out.append(",\n")
            out.append(" " * (column + 2))
            _pretty(item, column + 2, level + 1, depth, out)
        out.append("\n" + " " * column + "]")
    else:
        out.append(_compact(value))
