"""Kinematic statistics of larva tracks, the same for real and simulated data.

Used to compare the simulator with real recordings (``benchmarks/domain_gap.py``) and
to test the simulator. Every quantity is computed after the same normalisation, so
files from different trackers compare:

1. each track is put **tail first** (``spine_head``; ``"unknown"`` is resolved from the
   direction of motion: larvae crawl forward most of the time);
2. it is resampled **in time** on a regular grid at ``rate`` Hz (10 Hz, as the tagger
   sees it), interpolating over gaps of at most ``max_gap`` s and splitting it at longer
   ones (so 5-30 fps, dropped frames and NaN rows give the same kind of series);
3. each spine is resampled **along its arc** at :data:`N_POINTS` equally spaced points
   (5-, 11- and 12-point spines give the same points);
4. lengths are divided by the segment's median body length (BL), so mm and pixels of
   any scale compare.

Per frame: midpoint speed (BL/s, over a centred 1-s difference), signed forward speed,
body length, head angle (head segment against the posterior axis), body bend (anterior
half against posterior half), heading, and a roughness (the frame-to-frame second
difference of the interior points, BL). Per window (``window`` s, hop ``hop`` s): a
feature vector (:data:`FEATURE_NAMES`) including the stride frequency (peak of the
spectrum of the body length in 0.4-3 Hz) and the length oscillation (s.d. of the
detrended length, % of BL).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data.tracks import Run

#: Points of the arc-resampled spine (tail = 0, head = N_POINTS - 1).
N_POINTS = 11
#: Index of the neck on the resampled spine (0.3 BL from the head).
NECK = 7
#: Middle point.
MID = 5

FEATURE_NAMES = (
    "speed_mean", "speed_sd", "forward_mean", "lateral_mean", "head_angle_median",
    "head_angle_p90", "bend_median", "bend_p90", "bend_over_30", "length_cv",
    "length_oscillation", "stride_frequency", "stride_power", "heading_rate",
    "roughness", "end_roughness", "length_min_ratio",
)


@dataclass
class Segment:
    """One gap-free piece of a track on the regular time grid (tail-first, arc-resampled)."""

    group: str                 # larva identity (for grouped cross-validation)
    t: np.ndarray              # (n,) s
    spine: np.ndarray          # (n, N_POINTS, 2) in BL units
    rate: float


# ------------------------------------------------------------- geometry
def resample_arc(spine: np.ndarray, n_points: int = N_POINTS) -> np.ndarray:
    """Resample ``(n, p, 2)`` polylines at ``n_points`` equally spaced arc lengths."""
    seg = np.linalg.norm(np.diff(spine, axis=1), axis=2)
    s = np.concatenate([np.zeros((len(spine), 1)), np.cumsum(seg, axis=1)], axis=1)
    total = np.maximum(s[:, -1:], 1e-12)
    s = s / total
    u = np.linspace(0.0, 1.0, n_points)
    # index of the segment holding each target, per row
    idx = np.clip((s[:, None, :] <= u[None, :, None]).sum(axis=2) - 1, 0, spine.shape[1] - 2)
    rows = np.arange(len(spine))[:, None]
    s0, s1 = s[rows, idx], s[rows, idx + 1]
    w = np.clip((u[None, :] - s0) / np.maximum(s1 - s0, 1e-12), 0.0, 1.0)[..., None]
    return spine[rows, idx] * (1.0 - w) + spine[rows, idx + 1] * w


def _angle_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Signed angle (deg) from vector ``a`` to vector ``b``."""
    cross = a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]
    dot = (a * b).sum(axis=-1)
    return np.degrees(np.arctan2(cross, dot))


def head_angle(spine: np.ndarray) -> np.ndarray:
    """Signed head angle (deg): neck→head against tail→neck, on tail-first spines."""
    return _angle_between(spine[:, NECK] - spine[:, 0], spine[:, -1] - spine[:, NECK])


def body_bend(spine: np.ndarray) -> np.ndarray:
    """Signed body bend (deg): anterior half (mid→head) against posterior half (tail→mid)."""
    return _angle_between(spine[:, MID] - spine[:, 0], spine[:, -1] - spine[:, MID])


def spine_length(spine: np.ndarray) -> np.ndarray:
    return np.linalg.norm(np.diff(spine, axis=1), axis=2).sum(axis=1)


# ------------------------------------------------------------ segments
def _tail_first(spine: np.ndarray, spine_head: str) -> np.ndarray:
    if spine_head == "first":
        return spine[:, ::-1]
    if spine_head == "last":
        return spine
    # unknown: the end the midpoint moves toward most of the time is the head
    ok = ~np.isnan(spine).any(axis=(1, 2))
    s = spine[ok]
    if len(s) < 3:
        return spine
    v = np.diff(s[:, s.shape[1] // 2], axis=0)
    axis = (s[:, -1] - s[:, 0])[:-1]
    forward = np.sign((v * axis).sum(axis=1))
    return spine if forward.sum() >= 0 else spine[:, ::-1]


def track_segments(run: Run, *, rate: float = 10.0, max_gap: float = 0.5,
                   min_duration: float = 4.0, group_prefix: str = "") -> list[Segment]:
    """Gap-free, regularly sampled, tail-first, arc-resampled pieces of every track."""
    out: list[Segment] = []
    for track in run:
        spine = _tail_first(track.spine, run.spine_head)
        ok = ~np.isnan(spine).any(axis=(1, 2))
        t, spine = track.t[ok], spine[ok]
        if len(t) < 3:
            continue
        spine = resample_arc(spine)
        breaks = np.flatnonzero(np.diff(t) > max_gap) + 1
        for lo, hi in zip(np.r_[0, breaks], np.r_[breaks, len(t)]):
            tt, ss = t[lo:hi], spine[lo:hi]
            if len(tt) < 3 or tt[-1] - tt[0] < min_duration:
                continue
            grid = np.arange(tt[0], tt[-1] + 1e-9, 1.0 / rate)
            flat = ss.reshape(len(tt), -1)
            res = np.stack([np.interp(grid, tt, flat[:, j]) for j in range(flat.shape[1])], axis=1)
            res = res.reshape(len(grid), N_POINTS, 2)
            bl = float(np.median(spine_length(res)))
            if not bl > 0:
                continue
            out.append(Segment(f"{group_prefix}{run.id}/{track.larva_id}", grid,
                               (res - res[:, MID:MID + 1].mean(axis=0)) / bl, rate))
    return out


# ---------------------------------------------------------- per frame
@dataclass
class FrameStats:
    """Per-frame quantities of one segment (all in BL, deg, s)."""

    speed: np.ndarray          # midpoint speed over a centred 1-s difference (BL/s)
    forward: np.ndarray        # its component along the body axis (BL/s, + = toward head)
    lateral: np.ndarray        # its component across the axis, absolute (BL/s)
    length: np.ndarray         # body length (BL, median 1)
    head_angle: np.ndarray     # signed (deg)
    bend: np.ndarray           # signed (deg)
    heading: np.ndarray        # posterior-axis direction (rad, unwrapped)
    roughness: np.ndarray      # interior points' second difference (BL)
    end_roughness: np.ndarray  # head and tail points' second difference (BL)


def frame_stats(seg: Segment) -> FrameStats:
    s = seg.spine
    half = max(int(round(0.5 * seg.rate)), 1)
    mid = s[:, MID]
    v = np.zeros_like(mid)
    v[half:-half] = (mid[2 * half:] - mid[:-2 * half]) / (2 * half / seg.rate)
    v[:half], v[-half:] = v[half], v[-half - 1]
    axis = s[:, -1] - s[:, 0]
    axis = axis / np.maximum(np.linalg.norm(axis, axis=1, keepdims=True), 1e-12)
    forward = (v * axis).sum(axis=1)
    lateral = np.abs(v[:, 0] * axis[:, 1] - v[:, 1] * axis[:, 0])
    post = s[:, NECK] - s[:, 0]
    heading = np.unwrap(np.arctan2(post[:, 1], post[:, 0]))
    second = np.zeros(s.shape[:2])
    second[1:-1] = np.linalg.norm(s[2:] - 2 * s[1:-1] + s[:-2], axis=2)
    return FrameStats(np.linalg.norm(v, axis=1), forward, lateral, spine_length(s),
                      head_angle(s), body_bend(s), heading,
                      second[:, 1:-1].mean(axis=1), second[:, [0, -1]].mean(axis=1))


# ---------------------------------------------------------- per window
def stride(length: np.ndarray, rate: float, band=(0.4, 3.0)) -> tuple[float, float]:
    """Peak frequency (Hz) of the detrended body length in ``band`` and the share of the
    band's power at that peak (±1 bin)."""
    x = length - np.polyval(np.polyfit(np.arange(len(length)), length, 1), np.arange(len(length)))
    x = x * np.hanning(len(x))
    n = 512
    power = np.abs(np.fft.rfft(x, n)) ** 2
    f = np.fft.rfftfreq(n, 1.0 / rate)
    sel = (f >= band[0]) & (f <= band[1])
    if not sel.any() or power[sel].sum() <= 0:
        return float("nan"), 0.0
    k = int(np.argmax(np.where(sel, power, -1)))
    near = (f >= f[k] - 0.25) & (f <= f[k] + 0.25)
    return float(f[k]), float(power[near & sel].sum() / power[sel].sum())


def length_oscillation(length: np.ndarray) -> float:
    """s.d. of the linearly detrended length, % of the mean length."""
    i = np.arange(len(length))
    x = length - np.polyval(np.polyfit(i, length, 1), i)
    return float(100.0 * x.std() / max(length.mean(), 1e-12))


def window_features(seg: Segment, stats: FrameStats, window: float = 4.0,
                    hop: float = 2.0) -> np.ndarray:
    """``(n_windows, len(FEATURE_NAMES))`` features of one segment."""
    w = int(round(window * seg.rate))
    h = max(int(round(hop * seg.rate)), 1)
    rows = []
    for lo in range(0, len(seg.t) - w + 1, h):
        sl = slice(lo, lo + w)
        ha, bd, ln = np.abs(stats.head_angle[sl]), np.abs(stats.bend[sl]), stats.length[sl]
        freq, conc = stride(ln, seg.rate)
        rows.append([
            stats.speed[sl].mean(), stats.speed[sl].std(), stats.forward[sl].mean(),
            stats.lateral[sl].mean(), np.median(ha), np.percentile(ha, 90), np.median(bd),
            np.percentile(bd, 90), (bd > 30).mean(), ln.std() / ln.mean(),
            length_oscillation(ln), freq, conc,
            np.degrees(abs(stats.heading[lo + w - 1] - stats.heading[lo])) / window,
            np.median(stats.roughness[sl]), np.median(stats.end_roughness[sl]),
            ln.min() / np.median(ln),
        ])
    return np.asarray(rows, dtype=float).reshape(-1, len(FEATURE_NAMES))


@dataclass
class Kinematics:
    """Window features and pooled per-frame distributions of a set of tracks."""

    features: np.ndarray       # (n_windows, n_features)
    groups: np.ndarray         # (n_windows,) larva identity of each window
    speed: np.ndarray          # per frame, BL/s
    head_angle: np.ndarray     # per frame, |deg|
    bend: np.ndarray           # per frame, |deg|
    n_segments: int

    def column(self, name: str) -> np.ndarray:
        return self.features[:, FEATURE_NAMES.index(name)]

    def crawling_stride_frequency(self, min_speed: float = 0.15, min_power: float = 0.3) -> np.ndarray:
        """Stride frequencies of windows that crawl with a clear rhythm."""
        ok = (self.column("forward_mean") > min_speed) & (self.column("stride_power") > min_power)
        return self.column("stride_frequency")[ok]

    def summary(self) -> dict[str, np.ndarray]:
        """The distributions a biologist checks, by name."""
        return {
            "speed (BL/s)": self.speed,
            "stride frequency, crawling (Hz)": self.crawling_stride_frequency(),
            "|head angle| (deg)": self.head_angle,
            "|body bend| (deg)": self.bend,
            "length oscillation (% BL)": self.column("length_oscillation"),
            "heading change (deg/s)": self.column("heading_rate"),
        }

    def bend_over(self, degrees: float = 30.0) -> float:
        """Share of frames whose body bend exceeds ``degrees``."""
        return float((self.bend > degrees).mean()) if len(self.bend) else float("nan")


def kinematics(runs, *, rate: float = 10.0, window: float = 4.0, hop: float = 2.0,
               group_prefix: str = "") -> Kinematics:
    """Kinematic statistics of an iterable of runs."""
    feats, groups, speed, ha, bd = [], [], [], [], []
    n = 0
    for run in runs:
        for seg in track_segments(run, rate=rate, min_duration=window, group_prefix=group_prefix):
            st = frame_stats(seg)
            f = window_features(seg, st, window, hop)
            feats.append(f)
            groups.extend([seg.group] * len(f))
            speed.append(st.speed)
            ha.append(np.abs(st.head_angle))
            bd.append(np.abs(st.bend))
            n += 1
    cat = (lambda xs: np.concatenate(xs) if xs else np.zeros(0))
    features = np.concatenate(feats) if feats else np.zeros((0, len(FEATURE_NAMES)))
    return Kinematics(features, np.asarray(groups), cat(speed), cat(ha), cat(bd), n)
