"""Model inputs: fixed-grid, normalised 5-point spine windows.

The MaggotUBA encoder sees a larva through a *window*: ``len_traj`` spines
sampled every ``frame_interval`` seconds (default 20 points at 10 Hz, i.e. a
2-s window) around an *anchor* time step, each spine reduced to 5 points,
the whole window rotated, centred and scaled (SPEC §4.7, §5.1). Pretraining
windows add ``len_pred`` points of past and of future on each side.

Documented choices:

* **5 points.** Each spine is resampled at 0, ¼, ½, ¾ and 1 of its point
  index range; for 11 points this is exactly PlanarLarvae's
  ``[p1, (p3+p4)/2, p6, (p8+p9)/2, p11]``, and it works for any count (the
  Schleyer tracker's 12 points included).
* **Head/tail.** Model points are ordered tail → head (index 0 the tail, 4
  the head), as in the original MaggotUBA's Point_dynamics files. Which end
  of the input spine is the head comes from ``head`` (``"first"``, ``"last"``)
  or, with ``"auto"``, from ``run.spine_head``; when the file does not say
  (``"unknown"``: Choreography, trx.mat), from the data: larvae crawl forward
  most of the time, so the head is the end the midpoint mostly moves toward
  (:func:`infer_head_end`).
* **Scale.** Per larva: every window of a track is divided by the track's
  median body length (sum of the segment lengths of the full input spine over
  its tracked steps), as MaggotUBA divides by the larva's mean
  ``larva_length``. Shortening within a window (hunch) therefore stays visible.
* **Rotation and centre.** As the original MaggotUBA (``data/utils.py``), per
  window over its *present* part: rotated so that the mean vector from the
  head (point 4) to the tail (point 0) points along +x, i.e. the head lies at
  −x; centred on the mean midpoint (point 2). Windows are thus laid out
  exactly as the published MaggotUBA encoders were trained, and those encoders
  can be reused on them.
* **Time grid.** Window points sit at ``anchor + (k - (W-1)/2) * frame_interval``
  (symmetric around the anchor); spines are interpolated linearly between the
  two tracked steps around each grid time, after rounding times to 4 decimals
  (LarvaTagger.jl#65). Untracked steps (NaN spines) and dropped frames are
  skipped; a grid point whose neighbours are more than ``max_gap`` seconds
  apart makes the window *gapped*.
* **Track ends.** A window that does not fit inside the tracked span is
  *clamped* with ``edge="clamp"`` (grid times beyond the ends take the end
  spine) or invalid with ``edge="invalid"``. :class:`Windows` reports, per
  window, ``FULL``, ``CLAMPED`` or ``GAPPED`` so callers can act on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch

from taggingbackends.data.tracks import Run

FULL, CLAMPED, GAPPED, INVALID = 0, 1, 2, 3
QUALITY_NAMES = ("full", "clamped", "gapped", "invalid")
_TIME_DECIMALS = 4
_MID = 2  # index of the midpoint among the 5 model points


@dataclass(frozen=True)
class WindowSpec:
    """Geometry of a window: ``len_traj`` points ``frame_interval`` s apart, plus
    ``len_pred`` points of past and of future context (pretraining targets)."""

    len_traj: int = 20
    frame_interval: float = 0.1
    len_pred: int = 0
    max_gap: float = 0.5
    edge: str = "clamp"
    head: str = "auto"

    def __post_init__(self) -> None:
        if self.len_traj < 2 or self.len_pred < 0 or self.frame_interval <= 0:
            raise ValueError("len_traj >= 2, len_pred >= 0 and frame_interval > 0 are required")
        if self.edge not in ("clamp", "invalid"):
            raise ValueError(f"edge must be 'clamp' or 'invalid', not {self.edge!r}")
        if self.head not in ("auto", "first", "last"):
            raise ValueError(f"head must be 'auto', 'first' or 'last', not {self.head!r}")

    @property
    def width(self) -> int:
        """Points per window, context included."""
        return self.len_traj + 2 * self.len_pred

    @property
    def present(self) -> slice:
        return slice(self.len_pred, self.len_pred + self.len_traj)

    def grid(self) -> np.ndarray:
        """Offsets of the window points from the anchor time (s)."""
        return (np.arange(self.width) - (self.width - 1) / 2) * self.frame_interval


@dataclass
class Windows:
    """A batch of model inputs.

    Attributes:
        data: ``(n, 2, 5, width)`` float32: x/y channels, 5 points tail→head, time.
        rows: ``(n,)`` rows of the run (anchors) the windows belong to.
        quality: ``(n,)`` int8: FULL, CLAMPED, GAPPED or INVALID (data NaN).
    """

    data: np.ndarray
    rows: np.ndarray
    quality: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)


# ------------------------------------------------------------------ geometry
def spine5(spine: np.ndarray) -> np.ndarray:
    """``(..., P, 2)`` spines → ``(..., 5, 2)``, resampled at 0, ¼, ½, ¾, 1 of the
    point index range (exactly PlanarLarvae's ``spine5`` for P = 11)."""
    points = spine.shape[-2]
    if points == 5:
        return spine
    position = np.linspace(0.0, points - 1, 5)
    left = np.minimum(np.floor(position).astype(int), points - 2)
    weight = (position - left)[:, None]
    return spine[..., left, :] * (1 - weight) + spine[..., left + 1, :] * weight


def body_length(spine: np.ndarray) -> np.ndarray:
    """Sum of segment lengths of ``(..., P, 2)`` spines."""
    segments = np.diff(spine, axis=-2)
    return np.hypot(segments[..., 0], segments[..., 1]).sum(axis=-1)


def median_body_lengths(run: Run) -> np.ndarray:
    """Median body length (full spine) of each track over its tracked steps (vectorised:
    one sort by track then length, untracked steps last)."""
    lengths = body_length(run.spine)
    valid = ~np.isnan(lengths)
    track = run.track_index
    order = np.lexsort((np.where(valid, lengths, np.inf), track))
    ordered = lengths[order]
    counts = np.bincount(track[valid], minlength=run.n_tracks)
    starts = run.offsets[:-1]
    return (ordered[starts + (counts - 1) // 2] + ordered[starts + counts // 2]) / 2


def infer_head_end(run: Run, lag: float = 0.5, min_speed: float = 0.05) -> str:
    """Which spine end (``"first"`` or ``"last"``) the run's larvae mostly move toward.

    For pairs of tracked steps about ``lag`` seconds apart, the midpoint
    displacement is projected on the first→last spine vector; steps moving
    faster than ``min_speed`` body lengths per second vote. Larvae crawl
    forward most of the time, so the majority end is the head.
    """
    spines = spine5(run.spine)
    mid = spines[:, _MID]
    axis = spines[:, -1] - spines[:, 0]
    lengths = np.hypot(axis[:, 0], axis[:, 1])
    track = run.track_index
    stride = float(run.t.max() - run.t.min()) + 10 * lag + 1.0
    key = run.t - run.t.min() + track * stride          # increasing over the whole run
    later = np.searchsorted(key, key + lag)
    ok = later < run.offsets[track + 1]                 # the later step is in the same track
    src = np.flatnonzero(ok)
    dst = later[ok]
    move = mid[dst] - mid[src]
    dt = run.t[dst] - run.t[src]
    with np.errstate(invalid="ignore", divide="ignore"):
        along = np.einsum("ij,ij->i", move, axis[src]) / lengths[src]
        speed = np.hypot(move[:, 0], move[:, 1]) / dt / lengths[src]
    keep = np.isfinite(along) & (speed > min_speed)
    return "last" if np.sign(along[keep]).sum() >= 0 else "first"


def resolve_head(run: Run, head: str = "auto") -> str:
    """``"first"`` or ``"last"``: the given value, the run's own, or inferred."""
    if head != "auto":
        return head
    if run.spine_head in ("first", "last"):
        return run.spine_head
    return infer_head_end(run)


def tail_to_head(spines5: np.ndarray, head: str) -> np.ndarray:
    """Order 5-point spines tail → head (reverse when the head is first)."""
    return spines5[..., ::-1, :] if head == "first" else spines5


# ------------------------------------------------------------- preparation
@dataclass
class PreparedRun:
    """A run reduced to what windows need: tracked steps only, 5 points tail→head,
    times on one increasing key across tracks (``key = t + track * stride``)."""

    run: Run
    key: np.ndarray          # (m,) increasing time key of tracked steps
    points: np.ndarray       # (m, 5, 2) float64
    first: np.ndarray        # (n_tracks,) index of each track's first tracked step in key
    last: np.ndarray         # (n_tracks,) index of its last tracked step
    stride: float
    scale: np.ndarray        # (n_tracks,) median body length
    head: str
    _devices: dict = field(default_factory=dict, repr=False)

    def on(self, device: str = "cpu") -> DevicePrepared:
        """The arrays as torch tensors on ``device`` (converted once, then cached)."""
        if device not in self._devices:
            run = self.run
            track = run.track_index
            anchor = np.round(run.t, _TIME_DECIMALS) - run.t.min() + track * self.stride
            as_tensor = lambda a, dtype: torch.as_tensor(a, dtype=dtype, device=device)  # noqa: E731
            self._devices[device] = DevicePrepared(
                key=as_tensor(self.key, torch.float64), points=as_tensor(self.points, torch.float64),
                first=as_tensor(self.first, torch.int64), last=as_tensor(self.last, torch.int64),
                scale=as_tensor(self.scale, torch.float64), track=as_tensor(track, torch.int64),
                anchor=as_tensor(anchor, torch.float64))
        return self._devices[device]


def prepare(run: Run, head: str = "auto") -> PreparedRun:
    """Reduce, orient and index a run once; windows are then cut from it."""
    head = resolve_head(run, head)
    points = tail_to_head(spine5(run.spine), head)
    tracked = ~np.isnan(points).any(axis=(1, 2))
    track_of_row = run.track_index
    t = np.round(run.t, _TIME_DECIMALS)
    span = float(t.max() - t.min()) if t.size else 0.0
    stride = 10.0 ** np.ceil(np.log10(span + 1000.0))  # > any window reach beyond a track
    keep = np.flatnonzero(tracked)
    key = t[keep] - t.min() + track_of_row[keep] * stride
    counts = np.bincount(track_of_row[keep], minlength=run.n_tracks)
    ends = np.cumsum(counts)
    scale = median_body_lengths(run)
    return PreparedRun(run=run, key=key, points=points[keep], first=ends - counts, last=ends - 1,
                       stride=stride, scale=scale, head=head)


def windows_for_rows(prepared: PreparedRun, rows: np.ndarray, spec: WindowSpec) -> Windows:
    """Normalised windows anchored at ``rows`` of the run (vectorised, numpy in and out)."""
    rows = np.asarray(rows, dtype=np.int64)
    data, quality = device_windows(prepared.on("cpu"), torch.from_numpy(rows), spec)
    return Windows(data=data.numpy(), rows=rows, quality=quality.numpy())


@dataclass
class DevicePrepared:
    """A :class:`PreparedRun`'s arrays as torch tensors on one device."""

    key: "torch.Tensor"
    points: "torch.Tensor"
    first: "torch.Tensor"
    last: "torch.Tensor"
    scale: "torch.Tensor"
    track: "torch.Tensor"        # (n_steps,) track of each row
    anchor: "torch.Tensor"       # (n_steps,) time key of each row


def device_windows(prepared: DevicePrepared, rows: "torch.Tensor",
                   spec: WindowSpec) -> tuple["torch.Tensor", "torch.Tensor"]:
    """The window computation, on whatever device ``prepared`` lives: ``(n, 2, 5, W)``
    float32 windows and ``(n,)`` int8 quality. Time arithmetic in float64."""
    device = prepared.key.device
    rows = rows.to(device)
    track = prepared.track[rows]
    grid = torch.as_tensor(spec.grid(), dtype=torch.float64, device=device)
    query = prepared.anchor[rows][:, None] + grid[None, :]                      # (n, W)
    first, last = prepared.first[track], prepared.last[track]
    lo_key = prepared.key[first.clamp(max=len(prepared.key) - 1)]
    hi_key = prepared.key[last.clamp(min=0)]
    outside = (query < lo_key[:, None] - 1e-9) | (query > hi_key[:, None] + 1e-9)
    query = torch.minimum(torch.maximum(query, lo_key[:, None]), hi_key[:, None])
    right = torch.searchsorted(prepared.key, query.contiguous(), side="left")
    right = torch.minimum(torch.maximum(right, (first + 1)[:, None]), last[:, None])
    single = (first == last)[:, None]                                          # one tracked step
    right = torch.where(single, first[:, None], right)
    left = torch.where(single, right, right - 1)
    t_left, t_right = prepared.key[left], prepared.key[right]
    gap = t_right - t_left
    weight = torch.where(gap > 0, (query - t_left) / torch.where(gap > 0, gap, 1.0), 0.0)
    weight = weight.clamp(0.0, 1.0)[..., None, None]
    points = prepared.points[left] * (1 - weight) + prepared.points[right] * weight  # (n, W, 5, 2)
    quality = torch.full((len(rows),), FULL, dtype=torch.int8, device=device)
    quality[outside.any(dim=1)] = CLAMPED
    quality[(gap > spec.max_gap + 1e-9).any(dim=1)] = GAPPED
    invalid = last < first
    if spec.edge == "invalid":
        invalid |= quality == CLAMPED
    quality[invalid] = INVALID
    data = _normalise(points, prepared.scale[track], spec)
    data[invalid] = float("nan")
    return data, quality


def normalise(points: np.ndarray, scale: np.ndarray, spec: WindowSpec) -> np.ndarray:
    """``(n, W, 5, 2)`` tail→head windows → ``(n, 2, 5, W)`` float32 model inputs:
    centred on the present's mean midpoint, mean head→tail vector along +x
    (the original MaggotUBA's convention), divided by ``scale`` (per window)."""
    return _normalise(torch.as_tensor(np.asarray(points, dtype=np.float64)),
                      torch.as_tensor(np.asarray(scale, dtype=np.float64)), spec).numpy()


def _normalise(points: "torch.Tensor", scale: "torch.Tensor", spec: WindowSpec) -> "torch.Tensor":
    present = points[:, spec.present]
    centre = present[:, :, _MID].mean(dim=1)                                   # (n, 2)
    direction = (present[:, :, 0] - present[:, :, -1]).mean(dim=1)             # (n, 2) head→tail
    angle = torch.atan2(direction[:, 1], direction[:, 0])
    cos, sin = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
    shifted = points - centre[:, None, None, :]
    x = shifted[..., 0] * cos + shifted[..., 1] * sin
    y = -shifted[..., 0] * sin + shifted[..., 1] * cos
    out = torch.stack([x, y], dim=1) / scale[:, None, None, None]             # (n, 2, W, 5)
    return out.permute(0, 1, 3, 2).to(torch.float32).contiguous()


def iter_windows(run: Run, spec: WindowSpec, batch_size: int = 4096,
                 rows: np.ndarray | None = None) -> Iterator[Windows]:
    """Windows for ``rows`` (default: every step of the run), ``batch_size`` at a
    time, so memory stays bounded on large runs."""
    prepared = prepare(run, spec.head)
    rows = np.arange(run.n_steps) if rows is None else np.asarray(rows, dtype=np.int64)
    for start in range(0, len(rows), batch_size):
        yield windows_for_rows(prepared, rows[start:start + batch_size], spec)


def make_windows(run: Run, spec: WindowSpec, rows: np.ndarray | None = None) -> Windows:
    """All windows at once (small runs, tests); see :func:`iter_windows`."""
    prepared = prepare(run, spec.head)
    rows = np.arange(run.n_steps) if rows is None else rows
    return windows_for_rows(prepared, rows, spec)
