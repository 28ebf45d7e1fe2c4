"""FIMTrack v2 ``table.csv`` files (SPEC §4.4).

Layout
------
A transposed, comma-separated table written by FIMTrack's
``OutputGenerator::writeLarvaeInverted``::

    ,larva(0),larva(1),...
    mom_x(0),512.3,100.7,...
    mom_x(1),513.0,,...
    ...
    head_x(0),...

The first row names the larvae; every other row is ``<feature>(<frame>)``
followed by one cell per larva. Rows are grouped by feature, then by frame
(0-based). An empty cell is a missing value (the larva is not tracked in that
frame). The features read here are ``head_x/y``, ``spinepoint_<i>_x/y``
(``i = 1..n``, usually 3), ``tail_x/y`` and ``radius_<i>``; the other rows
(``mom_*``, ``area``, ``bending``, booleans, landmark distances, ...) are
checked for shape only.

In memory
---------
* ``run.spine`` is ``[head, spinepoint_1..n, tail]``: **head first**
  (``spine_head="first"``);
* ``run.outline`` (float32) is built from the spine and the radii as ``2n+3``
  vertices, starting and ending at the head:
  ``[head, L_1..L_n, tail, R_n..R_1, head]`` where ``L_i``/``R_i`` are spine point
  ``i`` shifted by ``radius_i`` along the left/right normal of the spine (the
  normal of ``P_{i+1} - P_{i-1}``). ``None`` when the file has no radius rows;
  ``radii=`` replaces the per-frame radii by constants (LarvaTagger's
  ``overrides``, in file units);
* time = frame / ``framerate`` (default 30 fps), rounded to 4 decimals;
* coordinates are in pixels (``space_unit="px"``) unless ``pixelsize=`` (μm per
  pixel) is given: they are then converted to mm;
* a larva's steps are its rows with spine data. With ``gaps="keep"`` (default)
  every such row is kept, so a larva with missing frames has a time gap; with
  ``gaps="truncate"`` a larva stops at its first missing frame, as in
  PlanarLarvae (the two agree on FIMTrack output, where a lost larva gets a new
  id). Larvae with no spine data at all are dropped;
* ``run.id`` is the name of the directory holding ``table.csv`` (FIMTrack
  writes one per recording) or the file stem for other names; ``run_id=``
  overrides it.

Cells may be quoted (``"..."``: quotes are removed, FIMTrack never writes
commas inside a cell); CRLF or CR line ends, a UTF-8 byte-order mark, trailing
separators, and the ``;``/decimal-comma and tab-separated variants of
spreadsheet re-saves are accepted. Besides empty cells, ``na``, ``NA``,
``NaN``, ``-nan`` (padded or not) are missing values; a frame where a larva has
some spine cells but not all is a missing step (NaN spine, time kept), counted
in ``run.metadata["masked"]["missing"]``.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from ..data.tracks import Run, outline_vertex_counts
from ..errors import AssumedValueWarning, FormatError, TaggingError
from ..fileio import atomic_path
from .registry import FormatSpec, as_path
from .textio import float_rows, read_text_bytes, sniff_delimiter, to_comma_separated

__all__ = ["is_fimtrack", "read_fimtrack", "write_fimtrack", "fimtrack_outline", "SPEC"]

DEFAULT_FRAMERATE = 30.0
_SIGNATURE = re.compile(rb"^[,;\t]larva\([0-9]")
_HEADER_CELL = re.compile(r"^\s*larva\((\d+)\)\s*$")
_ROW_NAME = re.compile(r"^\s*(.+?)\((\d+)\)\s*$")
_SPINEPOINT = re.compile(r"^spinepoint_(\d+)_x$")
_RADIUS = re.compile(r"^radius_(\d+)$")


# ----------------------------------------------------------------- detection
def is_fimtrack(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a FIMTrack table (never raises): its first 8 bytes
    (after an optional UTF-8 byte-order mark) match ``^[,;\\t]larva\\([0-9]`` (the
    separator may be ``;`` or a tab in spreadsheet re-saves)."""
    try:
        path = as_path(path)
        if not path.is_file():
            return False
        with open(path, "rb") as handle:
            head = handle.read(11)
        if head.startswith(b"\xef\xbb\xbf"):
            head = head[3:]
        return bool(_SIGNATURE.match(head[:8]))
    except Exception:
        return False


# ------------------------------------------------------------------- reading
def _read_text(path: Path) -> str:
    """The table as comma-separated text with ``\\n`` line ends and no quotes (the
    ``;``/decimal-comma and tab variants of spreadsheet re-saves rewritten)."""
    text = read_text_bytes(path, "a FIMTrack table.csv file").decode("utf-8")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if '"' in text:
        text = text.replace('"', "")
    return to_comma_separated(text, sniff_delimiter(text[:1]))


def _parse_cells(path: Path, rests: list[str], line_numbers: list[int], n_larvae: int,
                 features: list[str]) -> np.ndarray:
    """``(n_rows, n_larvae)`` floats from the value parts of rows; NaN where missing.

    Empty cells (what FIMTrack writes) become ``nan`` by string replacement, then
    :func:`.textio.float_rows` parses every row with numpy's C tokenizer (other
    missing-value tokens, ``na``, ``NA``, padded ones, on its slow path).
    """
    if n_larvae == 1:
        rests = [rest if rest.split(",", 1)[0].strip() else "nan" + rest for rest in rests]
    else:
        block = "\n".join(rests)
        block = block.replace(",,", ",nan,").replace(",,", ",nan,")
        block = block.replace("\n,", "\nnan,").replace(",\n", ",nan\n")
        if block.startswith(","):
            block = "nan" + block
        if block.endswith(","):
            block += "nan"
        rests = block.split("\n")
    return float_rows(path, rests, n_larvae,
                      lambda r, c: f"line {line_numbers[r]}: {features[r]} value (column {c + 2})")


def _nth_comma(line: str, n: int) -> int:
    """Index just past the ``n``-th comma of ``line``."""
    index = -1
    for _ in range(n):
        index = line.index(",", index + 1)
    return index + 1


def read_fimtrack(path: str | os.PathLike, *, framerate: float | None = None,
                  pixelsize: float | None = None, radii: Sequence[float] | None = None,
                  gaps: str = "keep", run_id: str | None = None, **options) -> Run:
    """Read a FIMTrack v2 ``table.csv`` into a :class:`Run`.

    Args:
        path: the table file.
        framerate: frames per second (default 30, with an
            :class:`~taggingbackends.errors.AssumedValueWarning`: the file does not say).
        pixelsize: μm per pixel; coordinates and radii are then in mm
            (``space_unit="mm"``), else they stay in pixels (``"px"``).
        radii: ``n`` constant radii (file units) replacing the ``radius_<i>``
            rows when building outlines.
        gaps: ``"keep"`` (default) keeps every row with spine data;
            ``"truncate"`` ends a larva at its first missing frame (PlanarLarvae).
        run_id: the run id (default: parent directory name for ``table.csv``,
            else the file stem).
        options: other options are accepted only when ``None``.

    Raises:
        FormatError: naming the file and the problem (empty, binary, wrong
            encoding, bad header, ragged or truncated rows, non-numeric cells,
            missing spine features, no larva with spine data, ...).
    """
    unknown = sorted(key for key, value in options.items() if value is not None)
    if unknown:
        raise TypeError(f"read_fimtrack() got unexpected option(s): {', '.join(unknown)}")
    if gaps not in ("keep", "truncate"):
        raise ValueError(f"gaps must be 'keep' or 'truncate', not {gaps!r}")
    path = as_path(path)
    assumed = framerate is None
    framerate = float(DEFAULT_FRAMERATE if assumed else framerate)
    if not np.isfinite(framerate) or framerate <= 0:
        raise ValueError(f"framerate must be positive, not {framerate}")
    if pixelsize is not None and (not np.isfinite(pixelsize) or pixelsize <= 0):
        raise ValueError(f"pixelsize must be positive, not {pixelsize}")
    try:
        run = _read(path, framerate, pixelsize, radii, gaps, run_id)
    except FormatError:
        raise
    except TaggingError as err:  # ValidationError from Run
        raise FormatError(path, str(err)) from err
    except (ValueError, IndexError, TypeError, OverflowError) as err:
        raise FormatError(path, f"cannot be read as FIMTrack: {err}") from err
    if assumed:  # (only for a file that was read: a broken one gets its error alone)
        warnings.warn(f"{path}: FIMTrack tables do not state their frame rate; assuming "
                      f"{DEFAULT_FRAMERATE:g} fps (pass --framerate / framerate=)",
                      AssumedValueWarning, stacklevel=2)
    return run


def _read(path: Path, framerate: float, pixelsize: float | None,
          radii: Sequence[float] | None, gaps: str, run_id: str | None) -> Run:
    text = _read_text(path)
    lines = text.split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    header = lines[0].split(",")
    if header[0].strip() or len(header) < 2:
        raise FormatError(path, "line 1 does not start with ',larva(<id>)': not a FIMTrack table")
    n_cells = len(header)
    while header and not header[-1].strip():  # trailing comma(s)
        header.pop()
    larva_ids = []
    for column, cell in enumerate(header[1:], start=2):
        match = _HEADER_CELL.match(cell)
        if not match:
            raise FormatError(path, f"line 1, column {column}: {cell[:30]!r} is not 'larva(<id>)'")
        larva_ids.append(int(match.group(1)))
    n_larvae = len(larva_ids)
    if len(set(larva_ids)) != n_larvae:
        raise FormatError(path, "line 1: duplicate larva ids")

    # feature -> list of (frame, line index)
    rows: dict[str, list[tuple[int, int]]] = {}
    separators = n_cells - 1
    for index in range(1, len(lines)):
        line = lines[index]
        if not line.strip():
            continue
        count = line.count(",")
        if count > separators and not line[_nth_comma(line, separators):].replace(",", "").strip():
            count = separators  # trailing separators (empty cells past the last larva)
        if count != separators:
            raise FormatError(path, f"line {index + 1} has {line.count(',') + 1} cells, expected "
                                    f"{n_cells} as in the header: ragged or truncated table")
        name = line[:line.index(",")]
        match = _ROW_NAME.match(name)
        if not match:
            raise FormatError(path, f"line {index + 1}: row name {name[:40]!r} is not "
                                    "'<feature>(<frame>)'")
        rows.setdefault(match.group(1), []).append((int(match.group(2)), index))
    if not rows:
        raise FormatError(path, "has a header but no data rows (truncated?)")
    lengths = {feature: len(entries) for feature, entries in rows.items()}
    expected = max(lengths.values())
    short = [feature for feature, count in lengths.items() if count != expected]
    if short:
        raise FormatError(path, f"feature {short[0]} has {lengths[short[0]]} frames, others have "
                                f"{expected}: truncated or inconsistent table")

    n_points = 0
    while f"spinepoint_{n_points + 1}_x" in rows:
        n_points += 1
    names = (["head"] + [f"spinepoint_{i}" for i in range(1, n_points + 1)] + ["tail"])
    needed = [f"{name}_{axis}" for name in names for axis in "xy"]
    missing = [feature for feature in needed if feature not in rows]
    if missing:
        raise FormatError(path, f"has no {missing[0]} rows: not a FIMTrack larva table")

    frames = np.array([frame for frame, _ in rows["head_x"]], dtype=np.int64)
    order = np.argsort(frames, kind="stable")
    frames = frames[order]
    if np.any(frames[1:] == frames[:-1]):
        twice = frames[1:][frames[1:] == frames[:-1]][0]
        raise FormatError(path, f"feature head_x lists frame {twice} twice")

    def line_indices(feature: str) -> list[int]:
        entries = rows[feature]
        feature_frames = np.array([frame for frame, _ in entries], dtype=np.int64)
        feature_order = np.argsort(feature_frames, kind="stable")
        if not np.array_equal(feature_frames[feature_order], frames):
            raise FormatError(path, f"feature {feature} lists other frames than head_x")
        return [entries[i][1] for i in feature_order]

    radius_features = [f"radius_{i}" for i in range(1, n_points + 1)]
    with_radii = (radii is None and n_points > 0
                  and all(feature in rows for feature in radius_features))
    wanted = needed + (radius_features if with_radii else [])
    indices = [index for feature in wanted for index in line_indices(feature)]
    rests = [lines[i][lines[i].index(",") + 1:] for i in indices]
    values = _parse_cells(path, rests, [i + 1 for i in indices], n_larvae,
                          [lines[i][:lines[i].index(",")] for i in indices])
    values = values.reshape(len(wanted), frames.size, n_larvae)
    # (n_frames, n_larvae, n_points + 2, 2)
    coords = np.moveaxis(values[:len(needed)].reshape(len(names), 2, frames.size, n_larvae),
                         (2, 3, 0, 1), (0, 1, 2, 3))
    radius = None
    if radii is not None:
        radii = np.asarray(radii, dtype=np.float64).ravel()
        if radii.size != n_points:
            raise ValueError(f"radii needs {n_points} values (one per spinepoint), "
                             f"got {radii.size}")
        radius = np.broadcast_to(radii, coords.shape[:2] + (n_points,))
    elif with_radii:
        radius = np.moveaxis(values[len(needed):], 0, 2)  # (n_frames, n_larvae, n_points)

    present = ~np.isnan(coords).all(axis=(2, 3))  # (n_frames, n_larvae)
    # a step with some spine cells missing is a missing step (NaN spine, time kept)
    incomplete = present & np.isnan(coords).any(axis=(2, 3))
    coords[incomplete] = np.nan
    if gaps == "truncate":
        started = np.cumsum(present, axis=0) > 0
        stopped = np.cumsum(started & ~present, axis=0) > 0
        present &= ~stopped
    counts = present.sum(axis=0)
    valid = (present & ~incomplete).sum(axis=0)
    kept = np.flatnonzero(valid > 0)  # (larvae whose every step is missing are dropped)
    if kept.size == 0:
        raise FormatError(path, "no larva has spine data (all head/spinepoint/tail cells empty)")
    n_missing = int((present & incomplete)[:, kept].sum())

    # concatenate tracks: larva-major order
    larva_index, frame_index = np.nonzero(present.T[kept])
    columns = kept[larva_index]
    spine = coords[frame_index, columns]
    if pixelsize is not None:
        spine = spine * (pixelsize / 1000.0)
    outline = None
    if radius is not None:
        r = np.asarray(radius[frame_index, columns], dtype=np.float64)
        if pixelsize is not None:
            r = r * (pixelsize / 1000.0)
        outline = fimtrack_outline(spine, r)
    offsets = np.zeros(kept.size + 1, dtype=np.int64)
    np.cumsum(counts[kept], out=offsets[1:])
    t = np.round(frames[frame_index] / framerate, 4)

    if run_id is None:
        by_directory = path.stem.lower() == "table" and path.parent.name
        run_id = path.parent.name if by_directory else path.stem
    camera = {"framerate": framerate}
    if pixelsize is not None:
        camera["pixelsize"] = float(pixelsize)
    metadata: dict = {"camera": camera, "masked": {"missing": n_missing}}
    if radii is not None:
        metadata["overrides"] = {f"radius_{i + 1}": float(v) for i, v in enumerate(radii)}
    return Run(
        id=run_id,
        larva_ids=np.asarray(larva_ids, dtype=np.int64)[kept],
        offsets=offsets,
        t=t,
        spine=spine,
        outline=outline,
        metadata=metadata,
        source=(path,),
        source_format="fimtrack",
        frame_rate=framerate,
        spine_head="first",
        space_unit="px" if pixelsize is None else "mm",
    )


def fimtrack_outline(spine: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Outlines from head-first spines ``(n, n_points, 2)`` and radii ``(n, n_points-2)``.

    Returns float32 ``(n, 2*(n_points-2)+3, 2)``: ``[head, L_1..L_k, tail, R_k..R_1,
    head]`` with ``L_i = P_i + r_i N_i`` and ``R_i = P_i - r_i N_i``, ``N_i`` the unit
    left normal of ``P_{i+1} - P_{i-1}`` (NaN where undefined).
    """
    spine = np.asarray(spine, dtype=np.float64)
    radii = np.asarray(radii, dtype=np.float64)
    head, tail = spine[:, :1], spine[:, -1:]
    inner = spine[:, 1:-1]
    tangent = spine[:, 2:] - spine[:, :-2]
    norm = np.hypot(tangent[..., 0], tangent[..., 1])
    with np.errstate(invalid="ignore", divide="ignore"):
        normal = np.stack([-tangent[..., 1], tangent[..., 0]], axis=-1) / norm[..., None]
    offset = normal * radii[..., None]
    left = inner + offset
    right = (inner - offset)[:, ::-1]
    return np.concatenate([head, left, tail, right, head], axis=1).astype(np.float32)


# ------------------------------------------------------------------- writing
def _estimate_radii(spine: np.ndarray, outline: np.ndarray | None,
                    radius: float | None) -> np.ndarray:
    """Per-step radii at the inner spine points, ``(n, n_points-2)``.

    With an outline: half the chord of the outline polygon along the spine
    normal through each inner point (exact for outlines built by
    :func:`fimtrack_outline`), or the distance to the nearest outline vertex
    where the normal does not cross the polygon on both sides. Without one:
    ``radius`` if given, else 1/10 of the median spine length.
    """
    n, n_points = spine.shape[:2]
    k = n_points - 2
    if radius is not None or k <= 0:
        return np.full((n, max(k, 0)), np.nan if radius is None else float(radius))
    if outline is None:
        lengths = np.hypot(*np.moveaxis(np.diff(spine, axis=1), -1, 0)).sum(axis=1)
        finite = lengths[np.isfinite(lengths)]
        return np.full((n, k), np.median(finite) / 10.0 if finite.size else 1.0)
    counts = outline_vertex_counts(outline)
    inner = spine[:, 1:-1]
    tangent = spine[:, 2:] - spine[:, :-2]
    result = np.full((n, k), np.nan)
    chunk = 2048
    with np.errstate(invalid="ignore", divide="ignore"):
        normal = np.stack([-tangent[..., 1], tangent[..., 0]], axis=-1)
        normal /= np.hypot(normal[..., 0], normal[..., 1])[..., None]
        for lo in range(0, n, chunk):
            hi = min(lo + chunk, n)
            a = outline[lo:hi].astype(np.float64)                       # (c, v, 2)
            b = np.roll(a, -1, axis=1)
            rows = np.arange(hi - lo)
            last = np.maximum(counts[lo:hi] - 1, 0)
            b[rows, last] = a[:, 0]                                     # close each polygon
            edge = (b - a)[:, None]                                     # (c, 1, v, 2)
            w = a[:, None] - inner[lo:hi, :, None]                      # (c, k, v, 2)
            nrm = normal[lo:hi, :, None]                                # (c, k, 1, 2)
            denom = nrm[..., 0] * edge[..., 1] - nrm[..., 1] * edge[..., 0]
            s = (w[..., 0] * edge[..., 1] - w[..., 1] * edge[..., 0]) / denom
            u = (w[..., 0] * nrm[..., 1] - w[..., 1] * nrm[..., 0]) / denom
            hit = (u >= 0) & (u <= 1) & np.isfinite(s)
            ahead = np.where(hit & (s >= 0), s, np.inf).min(axis=2)
            behind = np.where(hit & (s <= 0), -s, np.inf).min(axis=2)
            chord = (ahead + behind) / 2
            nearest = np.sqrt(np.where(np.isnan(w[..., 0]), np.inf,
                                       (w ** 2).sum(axis=-1)).min(axis=2))
            result[lo:hi] = np.where(np.isfinite(chord), chord,
                                     np.where(np.isfinite(nearest), nearest, np.nan))
    return result


def _polygon_area_perimeter(outline: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    counts = outline_vertex_counts(outline)
    o = outline.astype(np.float64)
    rows = np.arange(len(o))
    closed = np.concatenate([o, o[:, :1]], axis=1)
    closed[rows, counts] = o[rows, 0]  # close each polygon after its last vertex
    x, y = closed[..., 0], closed[..., 1]
    cross = x[:, :-1] * y[:, 1:] - x[:, 1:] * y[:, :-1]
    seg = np.hypot(np.diff(x, axis=1), np.diff(y, axis=1))
    area = 0.5 * np.abs(np.nansum(cross, axis=1))
    perimeter = np.nansum(seg, axis=1)
    empty = counts < 3
    area[empty] = np.nan
    perimeter[empty] = np.nan
    return area, perimeter


def _cell_text(value: float) -> str:
    return "" if value != value else repr(value)


def write_fimtrack(run: Run, path: str | os.PathLike, *, framerate: float | None = None,
                   pixelsize: float | None = None, radius: float | None = None,
                   overwrite: bool = True) -> None:
    """Write ``run`` as a FIMTrack v2 ``table.csv``.

    Args:
        run: the run; its spines must be head first (``spine_head`` ``"first"``;
            ``"last"`` spines are reversed; ``"unknown"`` ones are written as
            they are, the first point becoming ``head``). ``n_points`` spine points
            give ``head``, ``spinepoint_1..n_points-2`` and ``tail`` rows.
        path: the output file (usually ``table.csv``).
        framerate: frames per second used to turn times into frame numbers
            (default ``run.frame_rate``, else 30 fps as the reader assumes).
            Two steps of a larva may not fall on the same frame.
        pixelsize: μm per pixel; mm coordinates are converted to pixels.
            Without it coordinates are written in the run's unit.
        radius: a constant radius (run units) for ``radius_<i>``. By default
            the radius at each inner spine point is half the outline's chord
            along the spine normal there (nearest outline vertex as fallback),
            or 1/10 of the median spine length when the run has no outlines.
        overwrite: replace an existing file (default) or raise OutputExistsError.

    Rows written, in FIMTrack's order: ``mom_x/y`` (mean of the spine points),
    ``mom_dst``, ``acc_dst``, ``dst_to_origin``, ``area`` and ``perimeter``
    (only with outlines, from the outline polygon), ``spine_length``,
    ``head_x/y``, ``spinepoint_<i>_x/y``, ``tail_x/y``, ``radius_<i>``. The
    behavioural rows (``bending``, ``is_coiled``, ``go_phase``, ``velosity``, ...)
    are omitted. Frames run from 0 to the last frame; cells of absent larvae
    are empty. Values are written with Python's shortest round-trip repr, so
    ``read_fimtrack(write_fimtrack(run))`` gives the same spines and times
    (up to the 4-decimal time rounding and ``pixelsize`` arithmetic).
    """
    path = as_path(path)
    if framerate is None:
        framerate = run.frame_rate if run.frame_rate else DEFAULT_FRAMERATE
    framerate = float(framerate)
    if not np.isfinite(framerate) or framerate <= 0:
        raise ValueError(f"framerate must be positive, not {framerate}")
    if run.n_points < 2:
        raise ValueError("FIMTrack spines need at least 2 points")
    if np.any(run.larva_ids < 0):
        raise ValueError("cannot write FIMTrack: negative larva ids")
    frames = np.rint(run.t * framerate).astype(np.int64)
    if np.any(frames < 0):
        raise ValueError("cannot write FIMTrack: negative times")
    track = run.track_index
    if np.any((track[1:] == track[:-1]) & (np.diff(frames) <= 0)):
        raise ValueError(f"cannot write FIMTrack: two steps of a larva fall on the same frame at "
                         f"{framerate:g} fps (pass a higher framerate=)")

    spine = run.spine[:, ::-1] if run.spine_head == "last" else run.spine
    outline = run.outline
    radii = _estimate_radii(spine, outline, radius)
    scale = 1.0
    if pixelsize is not None:
        if run.space_unit != "mm":
            raise ValueError(f"pixelsize converts mm to pixels; the run is in {run.space_unit}")
        scale = 1000.0 / float(pixelsize)

    n_frames = int(frames.max()) + 1
    n_tracks = run.n_tracks

    def grid(values: np.ndarray) -> np.ndarray:
        out = np.full((n_frames, n_tracks), np.nan)
        out[frames, track] = values
        return out

    features: list[tuple[str, np.ndarray]] = []
    with warnings.catch_warnings():  # all-NaN steps give NaN without a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        mom = np.nanmean(spine, axis=1) * scale
    mom_grid = [grid(mom[:, 0]), grid(mom[:, 1])]
    features += [("mom_x", mom_grid[0]), ("mom_y", mom_grid[1])]
    step = np.zeros(run.n_steps)
    step[1:] = np.hypot(*np.diff(mom, axis=0).T)
    starts = run.offsets[:-1]
    step[starts] = 0.0
    acc = np.cumsum(np.nan_to_num(step))
    acc -= np.repeat(acc[starts], run.lengths)
    origin = np.repeat(mom[starts], run.lengths, axis=0)
    features += [("mom_dst", grid(step)), ("acc_dst", grid(acc)),
                 ("dst_to_origin", grid(np.hypot(*(mom - origin).T)))]
    if outline is not None:
        area, perimeter = _polygon_area_perimeter(outline)
        features += [("area", grid(area * scale ** 2)), ("perimeter", grid(perimeter * scale))]
    seg = np.hypot(*np.moveaxis(np.diff(spine, axis=1), -1, 0)).sum(axis=1)
    features.append(("spine_length", grid(seg * scale)))
    names = ["head"] + [f"spinepoint_{i}" for i in range(1, run.n_points - 1)] + ["tail"]
    for p, name in enumerate(names):
        features += [(f"{name}_x", grid(spine[:, p, 0] * scale)),
                     (f"{name}_y", grid(spine[:, p, 1] * scale))]
    for i in range(radii.shape[1]):
        features.append((f"radius_{i + 1}", grid(radii[:, i] * scale)))

    out = ["".join(f",larva({lid})" for lid in run.larva_ids.tolist())]
    for name, values in features:
        for frame, row in enumerate(values.tolist()):
            out.append(f"{name}({frame})," + ",".join(map(_cell_text, row)))
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(("\n".join(out) + "\n").encode("ascii"))


SPEC = FormatSpec(
    name="fimtrack",
    description="FIMTrack v2 table.csv (transposed: one column per larva, rows <feature>(<frame>))",
    suffixes=(".csv",),
    detection="first 8 bytes match ^,larva\\([0-9] (the header row ',larva(<id>),...')",
    is_format=is_fimtrack,
    read=read_fimtrack,
    write=write_fimtrack,
)
