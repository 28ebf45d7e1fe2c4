"""Body geometry of the simulated larva: midline, bends, path following, outline.

The body is a midline polyline of ``N_BODY_POINTS`` (21) points stored **tail first**
(index 0 = tail, index -1 = head), in mm, equally spaced along its arc length, as the
midlines of real trackers are (Choreography and the Schleyer-lab tracker resample the
midline at equal arc length). Arrays of bodies have shape ``(..., 21, 2)``.

Two primitives move a body, and every behaviour model (:mod:`.behaviours`) is written
with them:

* :func:`follow_path`: the body slides along its own midline ("follow the leader"):
  the midline is a path in the lab frame, extended ahead of the head (and behind the
  tail) by new path drawn with a slowly varying curvature; the body at time ``t``
  occupies the arc ``[s_tail(t), s_head(t)]`` of that path, so its length is
  ``s_head - s_tail`` and the tail follows the head's path exactly (no numerical
  diffusion: the path is sampled, never re-advected).
* :func:`bend`: adds joint-angle increments to a body (head sweeps at the neck, a
  C-shaped bend along the whole body), keeping either the tail or the centroid in place.

The 11-point spine is every other body point (:func:`spine_points`); the outline is a
closed contour built from the body and a width profile (:func:`outline`).
"""

from __future__ import annotations

import numpy as np
from scipy.signal import lfilter

#: Number of midline points used internally (20 equal segments).
N_BODY_POINTS = 21
#: Number of spine points written out (every other body point).
N_SPINE_POINTS = 11


# ----------------------------------------------------------------- basics
def straight_body(length: float, heading: float = 0.0, centre=(0.0, 0.0),
                  n_points: int = N_BODY_POINTS) -> np.ndarray:
    """A straight body of ``length`` mm, tail first, centred on ``centre``."""
    u = np.linspace(-0.5, 0.5, n_points)[:, None]
    direction = np.array([np.cos(heading), np.sin(heading)])
    return np.asarray(centre, dtype=float) + u * length * direction


def arc_lengths(body: np.ndarray) -> np.ndarray:
    """Cumulative arc length from the tail, ``(..., n_points)``; first entry 0."""
    seg = np.linalg.norm(np.diff(body, axis=-2), axis=-1)
    out = np.zeros(body.shape[:-1])
    np.cumsum(seg, axis=-1, out=out[..., 1:])
    return out


def body_length(body: np.ndarray) -> np.ndarray:
    """Midline length (sum of segment lengths), ``(...)``."""
    return np.linalg.norm(np.diff(body, axis=-2), axis=-1).sum(axis=-1)


def wrap_angle(a):
    """Wrap angles to ``[-pi, pi)``."""
    return (np.asarray(a) + np.pi) % (2 * np.pi) - np.pi


def direction_angle(v: np.ndarray) -> np.ndarray:
    return np.arctan2(v[..., 1], v[..., 0])


def neck_index(neck_position: float, n_points: int = N_BODY_POINTS) -> int:
    """Body index of the neck, ``neck_position`` = fraction of the length from the head."""
    n_seg = n_points - 1
    return int(round(n_seg * (1.0 - neck_position)))


def head_angle(body: np.ndarray, neck_position: float = 0.3) -> np.ndarray:
    """Signed angle (rad) of the head segment (neck→head) relative to the posterior axis
    (tail→neck); positive = head turned counter-clockwise (to the larva's left)."""
    k = neck_index(neck_position, body.shape[-2])
    front = body[..., -1, :] - body[..., k, :]
    back = body[..., k, :] - body[..., 0, :]
    return wrap_angle(direction_angle(front) - direction_angle(back))


def body_axis(body: np.ndarray) -> np.ndarray:
    """Unit vector from tail to head (chord), ``(..., 2)``."""
    v = body[..., -1, :] - body[..., 0, :]
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def resample(body: np.ndarray, n_points: int = N_BODY_POINTS) -> np.ndarray:
    """Resample one polyline ``(k, 2)`` at ``n_points`` equally spaced arc lengths."""
    a = arc_lengths(body)
    target = np.linspace(0.0, a[-1], n_points)
    return np.stack([np.interp(target, a, body[:, 0]), np.interp(target, a, body[:, 1])], axis=-1)


# ----------------------------------------------------------- random fields
def ou_process(rng: np.random.Generator, n: int, step: float, tau: float, sd: float,
               start: float | None = None) -> np.ndarray:
    """An Ornstein-Uhlenbeck series of ``n`` samples ``step`` apart (time or arc length),
    correlation length ``tau`` and stationary standard deviation ``sd``.

    ``start`` fixes the first value; otherwise it is drawn from the stationary law.
    """
    if n <= 0:
        return np.zeros(0)
    rho = float(np.exp(-step / max(tau, 1e-9)))
    innovations = rng.standard_normal(n) * sd * np.sqrt(1.0 - rho * rho)
    innovations[0] = (rng.standard_normal() * sd) if start is None else start
    return lfilter([1.0], [1.0, -rho], innovations)


def smooth_step(x: np.ndarray) -> np.ndarray:
    """Raised-cosine step: 0 for x <= 0, 1 for x >= 1, smooth in between."""
    x = np.clip(x, 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * x)


def ramp(t: np.ndarray, duration: float, rise: float) -> np.ndarray:
    """1 inside the bout, raised-cosine ramps of ``rise`` s at both ends."""
    rise = max(min(rise, duration / 2.0), 1e-6)
    return smooth_step(t / rise) * smooth_step((duration - t) / rise)


# ------------------------------------------------------------- path follow
def _extend(start: np.ndarray, heading: float, length: float, step: float,
            curvature: np.ndarray | None) -> np.ndarray:
    """Points ``step`` apart from ``start`` (excluded) along a curve of initial
    ``heading`` whose curvature (rad per mm) per step is ``curvature``."""
    n = int(np.ceil(length / step)) + 2
    if curvature is None or len(curvature) < n:
        kappa = np.zeros(n)
        if curvature is not None:
            kappa[:len(curvature)] = curvature
    else:
        kappa = curvature[:n]
    theta = heading + np.cumsum(kappa * step)
    steps = step * np.stack([np.cos(theta), np.sin(theta)], axis=-1)
    return start + np.cumsum(steps, axis=0)


def follow_path(body0: np.ndarray, s_tail: np.ndarray, s_head: np.ndarray, *,
                rng: np.random.Generator | None = None, curvature_sd: float = 0.0,
                curvature_length: float = 1.0, step: float | None = None) -> np.ndarray:
    """Slide ``body0`` along its own midline ("the tail follows the head's path").

    Arc-length coordinates are measured along the path from ``body0``'s tail
    (``body0`` spans ``[0, L0]``). At each time the body occupies
    ``[s_tail[k], s_head[k]]``; beyond the head (or the tail, when crawling backwards)
    new path is drawn from the current head (tail) direction with a curvature that is an
    Ornstein-Uhlenbeck process in arc length (``curvature_sd`` rad/mm, correlation
    length ``curvature_length`` mm). Returns bodies ``(n_times, n_points, 2)``.
    """
    s_tail = np.asarray(s_tail, dtype=float)
    s_head = np.asarray(s_head, dtype=float)
    n_points = body0.shape[0]
    a0 = arc_lengths(body0)
    length0 = a0[-1]
    if step is None:
        step = length0 / 50.0
    ahead = max(0.0, float(s_head.max(initial=length0)) - length0)
    behind = max(0.0, -float(s_tail.min(initial=0.0)))
    path = [body0]
    path_a = [a0]
    if ahead > 0:
        kappa = None
        if rng is not None and curvature_sd > 0:
            kappa = ou_process(rng, int(np.ceil(ahead / step)) + 2, step, curvature_length, curvature_sd)
        heading = float(direction_angle(body0[-1] - body0[-2]))
        ext = _extend(body0[-1], heading, ahead, step, kappa)
        path.append(ext)
        path_a.append(length0 + step * np.arange(1, len(ext) + 1))
    if behind > 0:
        kappa = None
        if rng is not None and curvature_sd > 0:
            kappa = ou_process(rng, int(np.ceil(behind / step)) + 2, step, curvature_length, curvature_sd)
        heading = float(direction_angle(body0[0] - body0[1]))
        ext = _extend(body0[0], heading, behind, step, kappa)
        path.insert(0, ext[::-1])
        path_a.insert(0, -step * np.arange(len(ext), 0, -1))
    pts = np.concatenate(path)
    a = np.concatenate(path_a)
    frac = np.linspace(0.0, 1.0, n_points)
    where = s_tail[:, None] + (s_head - s_tail)[:, None] * frac[None, :]
    flat = where.ravel()
    x = np.interp(flat, a, pts[:, 0])
    y = np.interp(flat, a, pts[:, 1])
    return np.stack([x, y], axis=-1).reshape(len(s_tail), n_points, 2)


# -------------------------------------------------------------------- bend
def neck_weights(neck_position: float, neck_width: float,
                 n_points: int = N_BODY_POINTS) -> np.ndarray:
    """Joint weights (sum 1) of a bend concentrated at the neck.

    Joints are the ``n_points - 2`` interior points; ``neck_position`` is the neck's
    distance from the head as a fraction of the length, ``neck_width`` the standard
    deviation of the bend's spread (fraction of the length).
    """
    u = np.arange(1, n_points - 1) / (n_points - 1)  # fraction of length from tail
    w = np.exp(-0.5 * ((u - (1.0 - neck_position)) / max(neck_width, 1e-3)) ** 2)
    return w / w.sum()


def uniform_weights(n_points: int = N_BODY_POINTS) -> np.ndarray:
    """Joint weights (sum 1) of a bend spread evenly along the body (C shape)."""
    return np.full(n_points - 2, 1.0 / (n_points - 2))


def bend(bodies: np.ndarray, increments: np.ndarray, anchor: str = "tail") -> np.ndarray:
    """Add joint-angle increments to bodies.

    ``bodies``: ``(T, n, 2)``; ``increments``: ``(T, n-2)`` angle (rad) added at each
    interior joint (positive = counter-clockwise turn toward the head). Segment lengths
    are kept. ``anchor="tail"`` keeps the tail point and tail segment in place (a head
    sweep); ``anchor="centroid"`` keeps the centroid and the mean segment direction (a
    symmetric C bend).
    """
    seg = np.diff(bodies, axis=1)  # (T, n-1, 2)
    rot = np.zeros(seg.shape[:2])
    np.cumsum(increments, axis=1, out=rot[:, 1:])  # segment k turns by joints 1..k
    if anchor == "centroid":
        rot -= rot.mean(axis=1, keepdims=True)
    c, s = np.cos(rot), np.sin(rot)
    new_seg = np.stack([c * seg[..., 0] - s * seg[..., 1], s * seg[..., 0] + c * seg[..., 1]], axis=-1)
    out = np.empty_like(bodies)
    out[:, 0] = bodies[:, 0]
    np.cumsum(new_seg, axis=1, out=out[:, 1:])
    out[:, 1:] += bodies[:, :1]
    if anchor == "centroid":
        out += (bodies.mean(axis=1) - out.mean(axis=1))[:, None, :]
    return out


# --------------------------------------------------------------- output
def spine_points(bodies: np.ndarray) -> np.ndarray:
    """The 11-point spines (every other body point), tail first."""
    step = (bodies.shape[-2] - 1) // (N_SPINE_POINTS - 1)
    return bodies[..., ::step, :]


def width_profile(n_points: int = N_BODY_POINTS) -> np.ndarray:
    """Half-width profile along the body (tail → head), peak 0.5 (so the full width
    at the widest point is 1 × the width parameter).

    Widest a little behind mid-body, rounded at the tail, more tapered at the head.
    """
    u = np.linspace(0.0, 1.0, n_points)
    v = u ** 1.15  # shifts the widest point toward the tail (~0.45 from the tail)
    prof = (4.0 * v * (1.0 - v)) ** 0.55
    return 0.5 * prof / prof.max()


def outline(bodies: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """Closed contours around bodies, counter-clockwise, starting at the tail tip.

    ``bodies``: ``(T, n, 2)`` tail first; ``widths``: ``(T,)`` full width (mm) at the
    widest point. Returns ``(T, 2 n - 2, 2)`` vertices: the tail tip, the right side
    tail→head, the head tip, the left side head→tail (first vertex not repeated).
    """
    n = bodies.shape[1]
    tangent = np.empty_like(bodies)
    tangent[:, 1:-1] = bodies[:, 2:] - bodies[:, :-2]
    tangent[:, 0] = bodies[:, 1] - bodies[:, 0]
    tangent[:, -1] = bodies[:, -1] - bodies[:, -2]
    tangent /= np.maximum(np.linalg.norm(tangent, axis=-1, keepdims=True), 1e-12)
    normal = np.stack([-tangent[..., 1], tangent[..., 0]], axis=-1)  # left of tail→head
    half = width_profile(n)[None, :] * widths[:, None]
    # on the concave side of a bend the offset must stay below the radius of curvature,
    # otherwise the contour folds over itself: the flesh is squeezed there instead
    seg = np.diff(bodies, axis=1)
    turn = np.zeros(bodies.shape[:2])
    turn[:, 1:-1] = wrap_angle(direction_angle(seg[:, 1:]) - direction_angle(seg[:, :-1]))
    ds = np.maximum(np.linalg.norm(seg, axis=-1).mean(axis=1, keepdims=True), 1e-12)
    radius = ds / np.maximum(np.abs(turn), 1e-9)
    limit = np.minimum(half, 0.7 * radius)
    half_left = np.where(turn > 0, limit, half)[..., None]
    half_right = np.where(turn < 0, limit, half)[..., None]
    half = half[..., None]
    left = bodies + half_left * normal
    right = bodies - half_right * normal
    # rounded tips: the end points pushed a little beyond the midline ends
    tail_tip = bodies[:, 0] - 0.25 * half[:, 1] * tangent[:, 0]
    head_tip = bodies[:, -1] + 0.15 * half[:, -2] * tangent[:, -1]
    return np.concatenate([tail_tip[:, None], right[:, 1:-1], head_tip[:, None],
                           left[:, -2:0:-1]], axis=1)
