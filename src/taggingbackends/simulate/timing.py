"""Frame timing: the camera clock, dropped frames, larvae entering and leaving.

One camera films all larvae, so a recording has one **frame clock** shared by every
track (as in MWT/Choreography output, where the larvae of a run share timestamps):

* frame intervals are irregular around ``1 / frame_rate``: each interval is
  ``(1 + jitter * z) / frame_rate`` with ``z`` a standard normal clipped to ±3
  (MWT t15: intervals of about 0.08-0.1 s, SPEC §4.2, §4.8);
* with probability ``camera_drop_prob`` a frame is missing for everybody (the camera
  skipped it: one interval is twice as long);
* ``jitter = 0`` puts every frame exactly on the grid ``k / frame_rate`` (k = 1, 2, ...),
  as formats that store frame numbers instead of times need (FIMTrack, Schleyer CSV);
* timestamps are rounded to the millisecond (labels store 3 decimals; readers round
  to 4, SPEC §4.8), and stay strictly increasing.

Each larva is tracked over a contiguous **span** of that clock (it enters and leaves the
field of view, or its track is broken by a collision): a share ``full_track_fraction`` of
the larvae is tracked from the first seconds to the end of the recording; the others for a
log-normal duration (median ``median_track_duration``) starting at a uniform random time.
Inside its span a larva also misses single frames with probability ``frame_drop_prob``
(not detected in that frame); the first and last frames of a span are always kept.
"""

from __future__ import annotations

import numpy as np


def frame_clock(rng: np.random.Generator, duration: float, frame_rate: float,
                jitter: float = 0.06, camera_drop_prob: float = 0.0) -> np.ndarray:
    """Timestamps (s) of the recorded frames in ``(0, duration]``, rounded to 1 ms."""
    dt = 1.0 / frame_rate
    n = int(np.ceil(duration * frame_rate * 1.25)) + 16
    z = np.clip(rng.standard_normal(n), -3.0, 3.0)
    if jitter > 0:
        t = np.cumsum(dt * np.maximum(1.0 + jitter * z, 0.25))
    else:  # exactly on the frame grid k / frame_rate (formats that store frame numbers)
        t = np.arange(1, n + 1) / frame_rate
    t = t[t <= duration]
    if len(t) == 0:
        t = np.array([min(dt, duration)])
    if camera_drop_prob > 0 and len(t) > 2:
        keep = rng.random(len(t)) >= camera_drop_prob
        keep[0] = True
        t = t[keep]
    t = np.round(t, 3)
    # rounding cannot merge frames at sane rates; guard anyway
    t = t[np.concatenate([[True], np.diff(t) > 0])]
    return t


def track_span(rng: np.random.Generator, clock: np.ndarray, duration: float,
               full_track_fraction: float, median_track_duration: float,
               track_duration_sigma: float, min_track_duration: float) -> tuple[int, int]:
    """First and last frame index (inclusive) of one larva's track."""
    if rng.random() < full_track_fraction:
        start = rng.uniform(0.0, min(3.0, 0.05 * duration))
        end = duration
    else:
        d = median_track_duration * np.exp(track_duration_sigma * rng.standard_normal())
        d = float(np.clip(d, min(min_track_duration, duration), duration))
        start = rng.uniform(0.0, duration - d)
        end = start + d
    i0 = int(np.searchsorted(clock, start))
    i1 = int(np.searchsorted(clock, end, side="right")) - 1
    i0 = min(i0, len(clock) - 1)
    i1 = min(max(i1, i0 + 1), len(clock) - 1)
    return i0, i1


def drop_frames(rng: np.random.Generator, n: int, prob: float) -> np.ndarray:
    """Mask of the frames kept in a span of ``n`` frames (first and last always kept)."""
    keep = rng.random(n) >= prob if prob > 0 else np.ones(n, dtype=bool)
    keep[0] = keep[-1] = True
    return keep
