"""What the web app has open: one run's tracking data, its labels (with the user's edits),
the tagger's probabilities and the review queue; edits with undo/redo; safe saving.

Everything the page shows is served from here as small JSON documents: the session summary,
the ethogram (bouts of every larva), one larva's full data on demand, and the spines of every
larva over a short time window for playback. Nothing here knows about HTTP.

Where edits go: opening ``X.label`` (a prediction) edits ``X.edited.label`` beside it (loaded
instead when it already exists, so a session resumes); opening ``X.edited.label`` edits that
file. Saving writes atomically, keeps the previous version as ``<name>.bak``, and writes only
plain ``.label`` files directly inside the data directory, never through a symbolic link, and
never over another existing file (a prediction) unless asked to.
"""

from __future__ import annotations

import copy
import itertools
import os
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.labels import (LABEL_SUFFIXES, MANUAL_LABEL, Labels, TrackLabels, entry_names, is_edited,
                           match_times, primary)
from ..data.tracks import Run
from ..errors import FormatError, TaggingError
from ..formats.labelfile import is_label
from ..review import REVIEW_LABEL, Probabilities, ReviewSegment, find_probabilities, rank_segments

EDITED_SUFFIX = ".edited.label"
BACKUP_SUFFIX = ".bak"
DEFAULT_NAMES = ["run", "cast", "back", "hunch", "roll", "stop", "small_motion"]
# one colour per behaviour family (LarvaTagger-like); anything else takes the palette in order
FAMILY_COLORS = {"run": "#1f77b4", "cast": "#d62728", "back": "#2ca02c", "hunch": "#ff7f0e",
                 "roll": "#9467bd", "stop": "#8c564b", "small_motion": "#e377c2", "bend": "#bcbd22"}
PALETTE = ["#17becf", "#7f7f7f", "#aec7e8", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2"]
REVIEW_QUEUE_LENGTH = 200
FRAME_WINDOW_MAX = 30.0  # s, the longest playback window one request may ask for


class RequestError(TaggingError):
    """A request the session refuses; ``status`` is the HTTP status the server answers."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def label_colors(names: list[str], declared: list[str] | None) -> list[str]:
    """Declared colours, else a behaviour family's colour (``run_large`` → run), else the palette."""
    if declared and len(declared) >= len(names):
        return list(declared[:len(names)])
    colors, spare = [], iter(PALETTE * 4)
    for name in names:
        family = next((f for f in FAMILY_COLORS if name == f or name.startswith(f + "_")), None)
        colors.append(FAMILY_COLORS[family] if family else next(spare))
    return colors


def display_head_end(run: Run) -> str:
    """Which spine end to mark as the head: the file's, else the end the larvae mostly move
    toward (the display twin of ``maggotuba.features.infer_head_end``, without torch)."""
    if run.spine_head in ("first", "last"):
        return run.spine_head
    spine = run.spine
    mid = spine[:, spine.shape[1] // 2]
    axis = spine[:, -1] - spine[:, 0]
    same_track = run.track_index[1:] == run.track_index[:-1]
    move = (mid[1:] - mid[:-1])[same_track]
    with np.errstate(invalid="ignore"):
        along = np.einsum("ij,ij->i", move, axis[:-1][same_track])
    along = along[np.isfinite(along)]
    return "last" if along.size == 0 or np.sign(along).sum() >= 0 else "first"


_serials = itertools.count(1)


@dataclass
class Edit:
    """One change of a larva's labels, kept for undo and redo."""

    larva: int
    first: int
    before: list
    after: list
    serial: int = field(default_factory=lambda: next(_serials))


@dataclass
class Session:
    """The opened data and the edits made to it (thread safe: one lock around every change)."""

    run: Run
    labels: Labels
    tracking_path: Path
    labels_path: Path | None            # the labels read (a prediction or an edit file)
    save_path: Path                     # where Save writes by default
    probabilities: Probabilities | None = None
    model: str | None = None            # the tagger that made the prediction (provenance)
    notes: list[str] = field(default_factory=list)
    head: str = "first"
    queue: list[ReviewSegment] = field(default_factory=list)
    previous: dict = field(default_factory=dict)   # larva → label codes before the last retrain
    changes: dict | None = None
    revision: int = 0                   # counts every change (edits, undo, redo, retrain)
    saved_top: int | None = None        # the edit on top of the undo stack when last saved
    unsaved_outside_history: bool = False   # a change undo cannot reach (a retrain)
    undo_stack: list[Edit] = field(default_factory=list)
    redo_stack: list[Edit] = field(default_factory=list)
    lock: threading.RLock = field(default_factory=threading.RLock)
    _codes: dict = field(default_factory=dict, repr=False)
    _probability_cache: dict = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, path: str | os.PathLike, labels_path: str | os.PathLike | None = None,
             **reader_options) -> "Session":
        """Open a tracking file (with ``labels_path``, or ``predicted.label`` beside it if any)
        or a label file (with its tracking dependency)."""
        from ..formats import load

        path = Path(path)
        if not path.exists():
            raise FormatError(path, "no such file or directory")
        notes: list[str] = []
        labels = None
        if labels_path is None and path.is_file() and is_label(path):
            labels_path = path
            labels = Labels.load(path, verify=False)
            tracking_path = _tracking_dependency(path, labels)
        else:
            tracking_path = path
            if labels_path is None and (path if path.is_dir() else path.parent).joinpath("predicted.label").is_file():
                labels_path = (path if path.is_dir() else path.parent) / "predicted.label"
        run = load(tracking_path, **reader_options)
        data_dir = (tracking_path if tracking_path.is_dir() else tracking_path.parent).resolve()
        if labels_path is not None:
            labels_path = Path(labels_path)
            save_path = edit_path_for(labels_path)
            if save_path != labels_path and save_path.is_file():
                notes.append(f"resuming the edits in {save_path.name}")
                labels_path, labels = save_path, None
            if labels is None:
                labels = Labels.load(labels_path, verify=False)
        else:
            labels = Labels.from_run(run)
            if not labels.names:
                labels.names = list(DEFAULT_NAMES)
            stem = tracking_path.name.split(".")[0]
            save_path = data_dir / f"{stem}{EDITED_SUFFIX}"
            notes.append("no labels found: every step starts unlabelled")
        if labels.run_id is not None and labels.run_id != run.id and labels_path is not None:
            notes.append(f"{labels_path.name} is for run {labels.run_id}, the tracking data for {run.id}")
        probabilities = find_probabilities(labels_path, labels) if labels_path is not None else None
        if labels_path is not None and probabilities is None:
            notes.append("no probabilities sidecar: opacity is 1 and the review queue ranks by "
                         "neighbour disagreement and class rarity only")
        provenance = labels.metadata.get("provenance") or {}
        model = (provenance.get("model") or {}).get("instance") if isinstance(provenance, dict) else None
        session = cls(run=run, labels=labels, tracking_path=tracking_path.resolve(),
                      labels_path=labels_path.resolve() if labels_path else None,
                      save_path=save_path.resolve(), probabilities=probabilities, model=model, notes=notes)
        session._align_labels()
        session.head = display_head_end(run)
        session.queue = rank_segments(session.labels, probabilities)[:REVIEW_QUEUE_LENGTH]
        return session

    def _align_labels(self) -> None:
        """One label entry per tracking step of every larva (``[]`` where the file had none),
        so that edits address tracking steps directly."""
        for track in self.run:
            existing = self.labels.tracks.get(track.larva_id)
            entries: list = [[] for _ in range(len(track.t))]
            t = track.t.copy()
            records, attributes = {}, {}
            if existing is not None:
                pos, ok = match_times(existing.t, track.t)
                for j in np.flatnonzero(ok):
                    entries[j] = existing.labels[pos[j]]
                    t[j] = existing.t[pos[j]]
                attributes = existing.attributes
                if ok.all() and len(existing) == len(track.t):  # same steps: per-step extras still fit
                    records = existing.records
            self.labels.tracks[track.larva_id] = TrackLabels(t, entries, records=records, attributes=attributes)
        self._codes.clear()
        self._probability_cache.clear()

    @property
    def data_dir(self) -> Path:
        """The folder of the opened labels (of the tracking data when there are none): the only
        place saves go, and the folder whose saved edits Retrain learns from."""
        if self.labels_path is not None:
            return self.labels_path.parent
        return self.tracking_path if self.tracking_path.is_dir() else self.tracking_path.parent

    @property
    def names(self) -> list[str]:
        return self.labels.names

    @property
    def dirty(self) -> bool:
        """Whether the labels differ from the last save: undoing back to it makes them clean."""
        return self.unsaved_outside_history or self._top() != self.saved_top

    def _top(self) -> int | None:
        return self.undo_stack[-1].serial if self.undo_stack else None

    # ---------------------------------------------------------------- per larva
    def codes(self, larva: int) -> np.ndarray:
        """Label index per step (-1 unlabelled) of ``larva``."""
        if larva not in self._codes:
            index = {name: i for i, name in enumerate(self.names)}
            self._codes[larva] = np.array([index.get(primary(e), -1) for e in self.labels.tracks[larva].labels],
                                          dtype=np.int64)
        return self._codes[larva]

    def edited(self, larva: int) -> np.ndarray:
        return np.array([is_edited(e) for e in self.labels.tracks[larva].labels], dtype=bool)

    def probability_matrix(self, larva: int) -> np.ndarray | None:
        if self.probabilities is None:
            return None
        if larva not in self._probability_cache:
            self._probability_cache[larva] = self.probabilities.for_track(
                larva, self.labels.tracks[larva].t, self.names)
        return self._probability_cache[larva]

    def _larva(self, larva: int) -> int:
        larva = int(larva)
        if larva not in self.run.larva_ids:
            raise RequestError(f"no larva {larva} in this run", 404)
        return larva

    def summary(self) -> dict:
        """What the page needs first: files, label names and colours, larvae, time range."""
        with self.lock:
            run = self.run
            points = self.run.spine[::4, ::2].reshape(-1, 2)  # a sample is enough to frame the view
            lo, hi = np.nanmin(points, axis=0), np.nanmax(points, axis=0)
            larvae = [{"id": int(i), "t0": float(run.t[a]), "t1": float(run.t[b - 1]), "n": int(b - a)}
                      for i, a, b in zip(run.larva_ids, run.offsets[:-1], run.offsets[1:])]
            return {"run": run.id, "tracking": self.tracking_path.name,
                    "labels_file": self.labels_path.name if self.labels_path else None,
                    "save_file": self.save_path.name, "data_dir": str(self.data_dir),
                    "names": self.names, "colors": label_colors(self.names, self.labels.colors),
                    "larvae": larvae, "t0": float(run.t.min()), "t1": float(run.t.max()),
                    "dt": float(np.median(np.diff(run.t[: run.offsets[1]]))) if run.offsets[1] > 1 else 0.1,
                    "bounds": [float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])],
                    "unit": run.space_unit, "head": self.head, "has_outline": run.outline is not None,
                    "has_probabilities": self.probabilities is not None, "model": self.model,
                    "notes": self.notes, **self.state()}

    def state(self) -> dict:
        """Save and undo state, sent with every answer that may change it."""
        return {"dirty": self.dirty, "can_undo": bool(self.undo_stack), "can_redo": bool(self.redo_stack),
                "revision": self.revision, "save_file": self.save_path.name}

    def larva_detail(self, larva: int, shapes: bool = False) -> dict:
        """One larva's times, labels, edits and probabilities (its spines and outlines too
        with ``shapes``; the page draws from :meth:`frames` and does not ask for them)."""
        with self.lock:
            larva = self._larva(larva)
            track = self.run[larva]
            probabilities = self.probability_matrix(larva)
            extra = {}
            if shapes:
                extra["spine"] = _rounded(track.spine, 3)
                extra["outline"] = _outline_lists(track.outline) if track.outline is not None else None
            return {"id": larva, "t": _rounded(track.t, 4), **extra, **self._label_arrays(larva),
                    "probabilities": _rounded(probabilities, 3) if probabilities is not None else None}

    def _label_arrays(self, larva: int) -> dict:
        previous = self.previous.get(larva)
        return {"labels": self.codes(larva).tolist(), "edited": self.edited(larva).astype(int).tolist(),
                "previous": previous.tolist() if previous is not None else None}

    def ethogram_row(self, larva: int) -> dict:
        """Bouts of one larva as ``[start, end, label index, mean probability, edited]``."""
        codes, edited = self.codes(larva), self.edited(larva)
        t = self.labels.tracks[larva].t
        probabilities = self.probability_matrix(larva)
        dt = float(np.median(np.diff(t))) if t.size > 1 else 0.1
        change = np.flatnonzero((codes[1:] != codes[:-1]) | (edited[1:] != edited[:-1])) + 1
        starts = np.concatenate([[0], change])
        ends = np.concatenate([change, [codes.size]])
        bouts = []
        for a, b in zip(starts, ends):
            code = int(codes[a])
            if code < 0:
                continue
            if edited[a] or probabilities is None:
                p = 1.0
            else:
                column = probabilities[a:b, code]
                column = column[np.isfinite(column)]
                p = float(column.mean()) if column.size else 1.0
            bouts.append([round(float(t[a]), 4), round(float(t[b - 1]) + dt, 4), code, round(p, 3), int(edited[a])])
        return {"id": larva, "bouts": bouts}

    def ethogram(self) -> dict:
        with self.lock:
            return {"rows": [self.ethogram_row(int(i)) for i in self.run.larva_ids]}

    def frames(self, t0: float, t1: float) -> dict:
        """Spines (and outlines, at most 16 vertices; 0.01 precision) of every larva seen in ``[t0, t1)``."""
        if not (np.isfinite(t0) and np.isfinite(t1)) or t1 < t0 or t1 - t0 > FRAME_WINDOW_MAX:
            raise RequestError(f"frames: want 0 <= t1 - t0 <= {FRAME_WINDOW_MAX} s")
        run, tracks = self.run, []
        for i, larva in enumerate(run.larva_ids):
            a, b = int(run.offsets[i]), int(run.offsets[i + 1])
            lo = a + int(np.searchsorted(run.t[a:b], t0, side="left"))
            hi = a + int(np.searchsorted(run.t[a:b], t1, side="left"))
            if hi <= lo:
                continue
            entry = {"id": int(larva), "t": _rounded(run.t[lo:hi], 4), "spine": _rounded(run.spine[lo:hi], 2)}
            if run.outline is not None:
                entry["outline"] = _outline_lists(run.outline[lo:hi], max_vertices=16, digits=2)
            tracks.append(entry)
        return {"t0": t0, "t1": t1, "tracks": tracks}

    def review_queue(self) -> dict:
        """The ranked segments, each with the fraction of its steps already edited."""
        with self.lock:
            items = []
            for segment in self.queue:
                edited = self.edited(segment.larva)[segment.first:segment.last + 1]
                items.append({**segment.as_dict(), "done": round(float(edited.mean()), 3)})
            return {"segments": items, "ranked_by": "probabilities" if self.probabilities is not None
                    else "disagreement and rarity (no probabilities sidecar)"}

    # -------------------------------------------------------------------- edits
    def edit(self, larva: int, first: int, last: int, label: str | None) -> dict:
        """Tag steps ``first..last`` of ``larva`` with ``label`` (marked ``edited``), or clear
        them (``None``: unlabelled)."""
        with self.lock:
            larva = self._larva(larva)
            track = self.labels.tracks[larva]
            first, last = int(first), int(last)
            if not 0 <= first <= last < len(track):
                raise RequestError(f"steps {first}..{last} outside 0..{len(track) - 1} of larva {larva}")
            if label is not None and label not in self.names:
                raise RequestError(f"unknown label {label!r} (labels: {', '.join(self.names)})")
            entry = [label, MANUAL_LABEL] if label is not None else []
            before = copy.deepcopy(track.labels[first:last + 1])
            self._apply(Edit(larva, first, before, [copy.deepcopy(entry) for _ in before]), forward=True)
            self.redo_stack.clear()
            return self._answer(larva)

    def undo(self) -> dict:
        with self.lock:
            if not self.undo_stack:
                raise RequestError("nothing to undo", 409)
            edit = self.undo_stack.pop()
            self._apply(edit, forward=False)
            self.redo_stack.append(edit)
            return self._answer(edit.larva)

    def redo(self) -> dict:
        with self.lock:
            if not self.redo_stack:
                raise RequestError("nothing to redo", 409)
            edit = self.redo_stack.pop()
            self._apply(edit, forward=True, record=False)
            self.undo_stack.append(edit)
            return self._answer(edit.larva)

    def _apply(self, edit: Edit, forward: bool, record: bool = True) -> None:
        track = self.labels.tracks[edit.larva]
        entries = edit.after if forward else edit.before
        track.labels[edit.first:edit.first + len(entries)] = copy.deepcopy(entries)
        if forward and record:
            self.undo_stack.append(edit)
        self._codes.pop(edit.larva, None)
        if MANUAL_LABEL not in self.labels.secondarylabels:
            self.labels.secondarylabels.append(MANUAL_LABEL)
        self.revision += 1

    def _answer(self, larva: int) -> dict:
        return {"larva": larva, **self._label_arrays(larva), "row": self.ethogram_row(larva), **self.state()}

    # --------------------------------------------------------------------- save
    def resolve_target(self, name: str | None, overwrite: bool = False) -> Path:
        """The label file a save may write: a plain ``.label`` name directly inside the data
        directory (no ``..``, no absolute path, no directory part, no symbolic link), and not
        an existing file other than the current edit file unless ``overwrite``."""
        if name is None or name == self.save_path.name:
            target = self.save_path
        else:
            if not isinstance(name, str) or not name or name != Path(name).name or name in (".", "..") \
                    or "/" in name or "\\" in name or name.startswith(".") or os.path.isabs(name):
                raise RequestError(f"{name!r}: give a plain file name inside {self.data_dir} "
                                   "(no directories, no '..', no absolute path)", 403)
            if not name.endswith(".label"):
                raise RequestError(f"{name!r}: label files end with .label", 403)
            target = self.data_dir / name
            if target.exists() and not overwrite:
                raise RequestError(f"{name}: already exists (a prediction or another file); "
                                   "save there only with overwrite", 409)
        for path in (target, target.with_name(target.name + BACKUP_SUFFIX)):
            if path.is_symlink():
                raise RequestError(f"{path.name}: is a symbolic link; refusing to write through it", 403)
            if path.exists() and not path.is_file():
                raise RequestError(f"{path.name}: is not a regular file", 403)
        if target.resolve().parent != self.data_dir.resolve():
            raise RequestError(f"{name!r}: outside {self.data_dir}", 403)
        if target.resolve() == self.tracking_path.resolve():
            raise RequestError(f"{name!r}: is the tracking file", 403)
        return target

    def save(self, name: str | None = None, overwrite: bool = False, provenance: dict | None = None) -> dict:
        """Write the labels atomically to ``name`` (default: the edit file), after copying the
        previous version to ``<name>.bak``."""
        with self.lock:
            target = self.resolve_target(name, overwrite)
            backup = None
            if target.exists():
                backup = target.with_name(target.name + BACKUP_SUFFIX)
                _atomic_copy(target, backup)
            labels = self.labels.copy()
            labels.tracking = [self.tracking_path] if self.tracking_path.is_file() else []
            if REVIEW_LABEL in labels.secondarylabels:  # review marks belong to review files
                labels.secondarylabels.remove(REVIEW_LABEL)
                for track in labels.tracks.values():
                    track.labels = [[n for n in entry_names(e) if n != REVIEW_LABEL]
                                    if isinstance(e, list) else e for e in track.labels]
            if self.probabilities is not None and self.probabilities.path is not None \
                    and self.probabilities.path.parent.resolve() == target.parent.resolve():
                labels.metadata["probabilities"] = self.probabilities.path.name
            if provenance:
                labels.metadata["edited_with"] = provenance
            labels.dump(target)
            self.save_path = target.resolve()
            self.saved_top, self.unsaved_outside_history = self._top(), False
            return {"saved": target.name, "backup": backup.name if backup else None, **self.state()}

    # ------------------------------------------------------------------ retrain
    def replace_prediction(self, predicted: Labels, probabilities: Probabilities | None) -> dict:
        """After a retrain: the new predictions with the user's edits kept on top; remembers the
        labels before, and returns what changed (steps, per larva, per label pair)."""
        with self.lock:
            before = {int(i): self.codes(int(i)).copy() for i in self.run.larva_ids}
            merged = predicted.merge(self.labels)
            for name in self.labels.secondarylabels:
                if name not in merged.secondarylabels:
                    merged.secondarylabels.append(name)
            merged.metadata = {**self.labels.metadata, "provenance": predicted.metadata.get("provenance")}
            self.labels = merged
            self.probabilities = probabilities
            self._align_labels()
            self.previous = before
            self.queue = rank_segments(self.labels, probabilities)[:REVIEW_QUEUE_LENGTH]
            self.revision += 1
            self.undo_stack.clear()
            self.redo_stack.clear()
            self.saved_top, self.unsaved_outside_history = None, True
            self.changes = self._changes(before)
            return self.changes

    def _changes(self, before: dict) -> dict:
        pairs: dict[tuple[int, int], int] = {}
        per_larva: dict[int, int] = {}
        total = changed = 0
        for larva, old in before.items():
            new = self.codes(larva)
            total += new.size
            differ = np.flatnonzero(old != new)
            if differ.size:
                per_larva[larva] = int(differ.size)
                changed += int(differ.size)
                for a, b in zip(old[differ], new[differ]):
                    pairs[(int(a), int(b))] = pairs.get((int(a), int(b)), 0) + 1
        name = lambda i: self.names[i] if i >= 0 else "(none)"  # noqa: E731
        transitions = [{"from": name(a), "to": name(b), "steps": n}
                       for (a, b), n in sorted(pairs.items(), key=lambda kv: -kv[1])]
        return {"steps": total, "changed": changed, "fraction": round(changed / total, 4) if total else 0.0,
                "larvae": {str(k): v for k, v in sorted(per_larva.items())}, "transitions": transitions[:12]}


# ------------------------------------------------------------------- helpers
def edit_path_for(labels_path: Path) -> Path:
    """``X.label`` → ``X.edited.label``; an edit file is its own edit file."""
    if labels_path.name.endswith(EDITED_SUFFIX):
        return labels_path
    return labels_path.with_name(labels_path.name.rsplit(".", 1)[0] + EDITED_SUFFIX)


def _tracking_dependency(label_path: Path, labels: Labels) -> Path:
    from ..formats.labelfile import _tracking_source

    candidates = [p for p in labels.dependency_paths()
                  if p.exists() and p.suffix.lower() not in LABEL_SUFFIXES]
    if not candidates:
        raise FormatError(label_path, "its tracking dependency is not beside it; give the tracking file "
                                      "and --labels instead")
    return _tracking_source(candidates)


def _atomic_copy(source: Path, destination: Path) -> None:
    from ..fileio import atomic_path

    with atomic_path(destination) as tmp:
        shutil.copyfile(source, tmp)


def _rounded(values: np.ndarray, digits: int) -> list:
    """A list of Python numbers (NaN → None) for JSON."""
    values = np.round(np.asarray(values, dtype=np.float64), digits)
    if np.isnan(values).any():
        return np.where(np.isnan(values), None, values).tolist()
    return values.tolist()


def _outline_lists(outline: np.ndarray, max_vertices: int | None = None, digits: int = 3) -> list:
    """Per step, the outline's present vertices as ``[x0, y0, x1, y1, ...]`` (at most
    ``max_vertices`` of them, evenly picked)."""
    out = []
    for step in outline:
        present = step[np.isfinite(step).all(axis=1)]
        if max_vertices is not None and len(present) > max_vertices:
            present = present[np.linspace(0, len(present) - 1, max_vertices).round().astype(int)]
        out.append(np.round(present.astype(np.float64), digits).reshape(-1).tolist())
    return out
