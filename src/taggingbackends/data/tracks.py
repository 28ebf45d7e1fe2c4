"""The tracking data model shared by every reader, writer and backend.

A :class:`Run` is one recording (one assay, usually identified by its
``date_time``) holding many larva tracks. Tracks are stored *concatenated*:
one contiguous array per quantity, with ``offsets`` marking where each track
starts, so that work over all larvae is vectorised (no Python object per
frame). Track ``i`` spans rows ``offsets[i]:offsets[i+1]``.

Missing values are explicit: a spine point or outline vertex that was not
tracked is ``NaN``. Infinite values are never valid.

Spine point order is whatever the source file uses; ``spine_head`` records
which end is the head when the format says so (``"first"``, ``"last"``) or
``"unknown"`` (Choreography, trx.mat: see SPEC §4.7).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..errors import ValidationError

SPINE_HEAD_VALUES = ("first", "last", "unknown")


@dataclass(frozen=True)
class Track:
    """A read-only view of one larva's data inside a :class:`Run`.

    Arrays are views into the run's concatenated arrays (no copy).
    """

    larva_id: int
    t: np.ndarray
    spine: np.ndarray
    outline: np.ndarray | None
    tags: np.ndarray | None
    tag_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.t)

    def active_tags(self, step: int) -> list[str]:
        """Names of the tags set at ``step`` (empty if the run has no tags)."""
        if self.tags is None:
            return []
        return [name for name, on in zip(self.tag_names, self.tags[step]) if on]


@dataclass
class Run:
    """One recording: many larva tracks in concatenated arrays.

    Attributes:
        id: run identifier, typically ``YYYYMMDD_HHMMSS``.
        larva_ids: ``(n_tracks,)`` integer larva numbers, unique.
        offsets: ``(n_tracks + 1,)`` row offsets, ``offsets[0] == 0``.
        t: ``(n_steps,)`` timestamps in seconds, strictly increasing per track.
        spine: ``(n_steps, n_points, 2)`` float64 spine points (NaN = missing).
        outline: ``(n_steps, n_vertices, 2)`` float32 contours padded with NaN,
            or ``None`` when the format has none.
        tags: ``(n_steps, n_tags)`` bool behaviour flags, or ``None``.
        tag_names: names of the ``tags`` columns.
        metadata: run metadata (``.label`` ``metadata`` keys: tracker,
            genotype, protocol, camera, ...).
        source: files the run was read from (empty if generated).
        source_format: registry name of the format it was read from.
        frame_rate: nominal frame rate in Hz when the source states it.
        spine_head: which spine end is the head: ``first``, ``last``, ``unknown``.
        space_unit: unit of coordinates (``mm``, ``px``, ...).
    """

    id: str
    larva_ids: np.ndarray
    offsets: np.ndarray
    t: np.ndarray
    spine: np.ndarray
    outline: np.ndarray | None = None
    tags: np.ndarray | None = None
    tag_names: tuple[str, ...] = ()
    metadata: dict = field(default_factory=dict)
    source: tuple[Path, ...] = ()
    source_format: str | None = None
    frame_rate: float | None = None
    spine_head: str = "unknown"
    space_unit: str = "mm"

    def __post_init__(self) -> None:
        self.id = str(self.id)
        self.larva_ids = np.asarray(self.larva_ids, dtype=np.int64)
        self.offsets = np.asarray(self.offsets, dtype=np.int64)
        self.t = np.asarray(self.t, dtype=np.float64)
        self.spine = np.asarray(self.spine, dtype=np.float64)
        if self.outline is not None:
            self.outline = np.asarray(self.outline, dtype=np.float32)
        if self.tags is not None:
            self.tags = np.asarray(self.tags, dtype=bool)
        self.tag_names = tuple(str(name) for name in self.tag_names)
        self.source = tuple(Path(p) for p in self.source)
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Check shapes, offsets, time order and values; raise ValidationError."""
        n_tracks = self.larva_ids.shape[0]
        if self.larva_ids.ndim != 1:
            raise ValidationError("larva_ids must be one-dimensional")
        if len(np.unique(self.larva_ids)) != n_tracks:
            raise ValidationError(f"run {self.id}: duplicate larva ids")
        if self.offsets.shape != (n_tracks + 1,) or self.offsets[0] != 0:
            raise ValidationError(f"run {self.id}: offsets must have n_tracks+1 entries starting at 0")
        lengths = np.diff(self.offsets)
        if np.any(lengths <= 0):
            raise ValidationError(f"run {self.id}: every track needs at least one time step")
        n_steps = int(self.offsets[-1])
        if self.t.shape != (n_steps,):
            raise ValidationError(f"run {self.id}: t has shape {self.t.shape}, expected ({n_steps},)")
        if self.spine.ndim != 3 or self.spine.shape[0] != n_steps or self.spine.shape[2] != 2:
            raise ValidationError(
                f"run {self.id}: spine has shape {self.spine.shape}, expected ({n_steps}, n_points, 2)")
        if self.spine.shape[1] < 2:
            raise ValidationError(f"run {self.id}: a spine needs at least 2 points")
        if not np.all(np.isfinite(self.t)):
            raise ValidationError(f"run {self.id}: non-finite timestamps")
        if np.any(np.isinf(self.spine)):
            raise ValidationError(f"run {self.id}: infinite spine coordinates")
        self._check_time_order(lengths)
        self._check_spines_present()
        if self.outline is not None:
            if self.outline.ndim != 3 or self.outline.shape[0] != n_steps or self.outline.shape[2] != 2:
                raise ValidationError(
                    f"run {self.id}: outline has shape {self.outline.shape}, expected ({n_steps}, n_vertices, 2)")
            if np.any(np.isinf(self.outline)):
                raise ValidationError(f"run {self.id}: infinite outline coordinates")
        if self.tags is not None:
            if self.tags.shape != (n_steps, len(self.tag_names)):
                raise ValidationError(
                    f"run {self.id}: tags have shape {self.tags.shape}, expected ({n_steps}, {len(self.tag_names)})")
        elif self.tag_names:
            raise ValidationError(f"run {self.id}: tag names given without tags")
        if self.spine_head not in SPINE_HEAD_VALUES:
            raise ValidationError(f"spine_head must be one of {SPINE_HEAD_VALUES}")

    def _check_time_order(self, lengths: np.ndarray) -> None:
        steps = np.diff(self.t)
        # differences that cross a track boundary are not constrained
        within = np.ones(steps.shape, dtype=bool)
        within[self.offsets[1:-1] - 1] = False
        bad = within & (steps <= 0)
        if np.any(bad):
            row = int(np.flatnonzero(bad)[0]) + 1
            track = int(np.searchsorted(self.offsets, row, side="right") - 1)
            raise ValidationError(
                f"run {self.id}: timestamps of larva {self.larva_ids[track]} are not strictly "
                f"increasing (t={self.t[row - 1]:.4f} then {self.t[row]:.4f})")

    def _check_spines_present(self) -> None:
        present = ~np.isnan(self.spine).all(axis=(1, 2))
        counts = np.add.reduceat(present.astype(np.int64), self.offsets[:-1])
        if np.any(counts == 0):
            larva = int(self.larva_ids[np.flatnonzero(counts == 0)[0]])
            raise ValidationError(f"run {self.id}: larva {larva} has no spine data (all NaN)")

    # ----------------------------------------------------------------- access
    @property
    def n_tracks(self) -> int:
        return int(self.larva_ids.shape[0])

    @property
    def n_steps(self) -> int:
        return int(self.offsets[-1])

    @property
    def n_points(self) -> int:
        return int(self.spine.shape[1])

    @property
    def lengths(self) -> np.ndarray:
        """Number of time steps of each track."""
        return np.diff(self.offsets)

    @property
    def track_index(self) -> np.ndarray:
        """``(n_steps,)`` index of the track each row belongs to."""
        return np.repeat(np.arange(self.n_tracks), self.lengths)

    @property
    def nbytes(self) -> int:
        """Memory held by the run's arrays."""
        arrays = [self.larva_ids, self.offsets, self.t, self.spine, self.outline, self.tags]
        return int(sum(a.nbytes for a in arrays if a is not None))

    def track(self, i: int) -> Track:
        """The ``i``-th track (by position, not larva id)."""
        lo, hi = int(self.offsets[i]), int(self.offsets[i + 1])
        return Track(
            larva_id=int(self.larva_ids[i]),
            t=self.t[lo:hi],
            spine=self.spine[lo:hi],
            outline=None if self.outline is None else self.outline[lo:hi],
            tags=None if self.tags is None else self.tags[lo:hi],
            tag_names=self.tag_names,
        )

    def __iter__(self) -> Iterator[Track]:
        return (self.track(i) for i in range(self.n_tracks))

    def __len__(self) -> int:
        return self.n_tracks

    def position(self, larva_id: int) -> int:
        """Position of the track of ``larva_id``; KeyError if absent."""
        hits = np.flatnonzero(self.larva_ids == int(larva_id))
        if hits.size == 0:
            raise KeyError(f"run {self.id} has no larva {larva_id}")
        return int(hits[0])

    def __getitem__(self, larva_id: int) -> Track:
        return self.track(self.position(larva_id))

    def __repr__(self) -> str:
        return (f"Run(id={self.id!r}, tracks={self.n_tracks}, steps={self.n_steps}, "
                f"points={self.n_points}, outline={self.outline is not None}, "
                f"tags={len(self.tag_names)}, format={self.source_format!r})")

    # ---------------------------------------------------------- construction
    @classmethod
    def from_tracks(
        cls,
        id: str,
        larva_ids: Sequence[int],
        times: Sequence[np.ndarray],
        spines: Sequence[np.ndarray],
        outlines: Sequence[np.ndarray] | None = None,
        tags: Sequence[np.ndarray] | None = None,
        **kwargs,
    ) -> "Run":
        """Build a run from per-track arrays (concatenating them once).

        ``outlines`` items may have different vertex counts, either per track
        ``(n, v, 2)`` or per step as lists of ``(v_i, 2)`` arrays; they are
        padded with NaN to the largest count.
        """
        lengths = [len(t) for t in times]
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        t = np.concatenate([np.asarray(x, dtype=np.float64) for x in times]) if times else np.zeros(0)
        spine = (np.concatenate([np.asarray(s, dtype=np.float64) for s in spines])
                 if spines else np.zeros((0, 2, 2)))
        outline = None
        if outlines is not None:
            outline = pad_outlines([o for o in outlines])
        tag_array = None
        if tags is not None:
            tag_array = np.concatenate([np.asarray(x, dtype=bool) for x in tags])
        return cls(id=id, larva_ids=np.asarray(larva_ids), offsets=offsets, t=t, spine=spine,
                   outline=outline, tags=tag_array, **kwargs)

    def with_tags(self, tags: np.ndarray | None, tag_names: Sequence[str]) -> "Run":
        """A copy of the run with other tags (arrays shared, not copied)."""
        return Run(id=self.id, larva_ids=self.larva_ids, offsets=self.offsets, t=self.t,
                   spine=self.spine, outline=self.outline, tags=tags, tag_names=tuple(tag_names),
                   metadata=dict(self.metadata), source=self.source,
                   source_format=self.source_format, frame_rate=self.frame_rate,
                   spine_head=self.spine_head, space_unit=self.space_unit)


def pad_outlines(outlines: Sequence) -> np.ndarray:
    """Concatenate per-track outlines into one NaN-padded float32 array.

    Each item is either an array ``(n_steps, n_vertices, 2)`` or a sequence of
    ``(n_vertices_i, 2)`` arrays, one per step.
    """
    blocks: list[np.ndarray] = []
    width = 0
    for item in outlines:
        if isinstance(item, np.ndarray) and item.ndim == 3:
            blocks.append(item)
            width = max(width, item.shape[1])
        else:
            steps = [np.asarray(v, dtype=np.float32).reshape(-1, 2) for v in item]
            blocks.append(steps)  # type: ignore[arg-type]
            width = max([width] + [len(v) for v in steps])
    n_steps = sum(len(b) for b in blocks)
    out = np.full((n_steps, width, 2), np.nan, dtype=np.float32)
    row = 0
    for block in blocks:
        if isinstance(block, np.ndarray):
            out[row:row + len(block), :block.shape[1]] = block
            row += len(block)
        else:
            for vertices in block:
                out[row, :len(vertices)] = vertices
                row += 1
    return out


def outline_vertex_counts(outline: np.ndarray) -> np.ndarray:
    """Number of leading non-NaN vertices of each padded outline row."""
    valid = ~np.isnan(outline).any(axis=2)
    # first invalid vertex index, or width when all are valid
    first_bad = np.where(valid.all(axis=1), outline.shape[1], np.argmin(valid, axis=1))
    return first_bad.astype(np.int64)


def masked_counts(run: Run) -> dict:
    """Steps a reader masked, by reason: ``{"missing": n, "collision": m}``.

    Text readers record them in ``run.metadata["masked"]`` (``missing``: a spine
    coordinate was absent, or a row had no larva id/time and was dropped;
    ``collision``: the larva touched another one). For other runs the steps whose
    spine is all NaN are counted as ``missing``.
    """
    recorded = run.metadata.get("masked")
    if isinstance(recorded, dict):
        return {str(k): int(v) for k, v in recorded.items()}
    return {"missing": int(np.isnan(run.spine).all(axis=(1, 2)).sum())}


def run_summary(run: Run) -> str:
    """One line saying what was read and masked, e.g.
    ``3 larvae, 4,210 steps, 12 missing, 140 collision steps masked``
    (printed by ``import`` and ``predict``, stored in `.label` provenance)."""
    larvae = f"{run.n_tracks:,} larva" if run.n_tracks == 1 else f"{run.n_tracks:,} larvae"
    text = f"{larvae}, {run.n_steps:,} steps"
    parts = [f"{count:,} {reason}" for reason, count in masked_counts(run).items() if count]
    return text + (", " + ", ".join(parts) + " steps masked" if parts else "")
