"""Schleyer-lab per-larva CSV files (as shipped with larvaworld).

One file per larva, no header, comma-separated (fields padded with spaces,
empty fields for missing values), one row per frame, 78 columns:

====================  =======  ==============================================
columns (0-based)     count    content
====================  =======  ==============================================
0                     1        frame index, 1-based
1..24                 12 x,y   midline points, **tail first, head last**
25..68                22 x,y   contour points (point 0 = midline point 0,
                               point 11 = midline point 11)
69..70                x, y     centroid (see the note on its y sign below)
71..77                7        blob_orientation, area, grey_value,
                               raw_spinelength, width, perimeter,
                               collision_flag
====================  =======  ==============================================

Coordinates are in mm; the frame rate is 16 fps, so ``t = (frame - 1) / 16``
(option ``framerate=``). A directory of such files is one run (``run.id`` is
the directory name); a single file is a run of one larva (``run.id`` is the
name of the directory holding it). The larva id is the integer file stem
(``3.csv`` -> larva 3), else the file's position (1-based, files sorted by
name).

Missing data
------------
A row is *missing* when its midline holds a missing value (``na`` padded with
spaces as the lab's tracker writes an untracked frame, ``NA``, ``NaN``,
``-nan``, an empty field: :mod:`.textio`), and a *collision* when its
``collision_flag`` is > 0 (the larva touches another one, and its contour
and midline are those of the merged blob). Both keep their time step, with
NaN spine and outline, so that time stays regular; they are counted in
``run.metadata["masked"]``. In the recordings, collision rows (flag 2) have
their geometry but empty attribute columns, and untracked rows (``9.csv``
frame 188, ``48.csv`` frame 2380) are ``na`` everywhere but the frame index,
the centroid and the attributes. ``collisions="keep"`` keeps the geometry of
collision rows that have one. A missing frame index is inferred from its
neighbours when only one frame fits. A larva with no valid row is an error.
The file may have a byte-order mark, any line ends, a trailing comma, or be a
``;``/decimal-comma or tab-separated spreadsheet re-save.

Head and tail (verified on the data)
------------------------------------
larvaworld describes the midline as stored tail -> head. Checked on the six
tracks of ``shared/data/schleyer`` (dish01: 3, 7, 10, 11, 12, 17; 9,918 rows):
over 0.5 s (8 frames), the centroid displacement was compared with the vector
from midline point 0 to point 11, for pairs of valid rows where the centroid
moved more than 0.1 mm. In 9,186 of 9,416 such pairs (97.6 %; per larva
98.3, 93.8, 99.6, 96.7, 100.0, 99.9 %) the larva moved towards point 11
(median cosine 0.98-1.00 per larva). Crawling larvae move head first, so the
last point is the head: ``spine_head = "last"``.

The centroid's y coordinate is stored with the opposite sign of the midline
and contour y coordinates (centroid y = -mean(midline y) within 0.05 mm on
the valid rows). The reader does not use the centroid; the writer follows
this convention.

Spine points
------------
The midline has 12 points. Models built for 11- or 5-point spines (SPEC
§4.7) need another count: ``spine_points=11`` resamples each midline to 11
points equally spaced along its arc length (end points kept).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..data.tracks import Run, outline_vertex_counts
from ..errors import FormatError, OutputExistsError, ValidationError
from ..fileio import atomic_path
from .registry import FormatSpec, as_path
from .textio import (decode_lines, first_line, float_rows, head_text, is_missing, mask_holed_outlines,
                     sniff_delimiter, to_comma_separated)

N_COLUMNS = 78
N_MIDLINE = 12
N_CONTOUR = 22
DEFAULT_FRAMERATE = 16.0
MIDLINE = slice(1, 1 + 2 * N_MIDLINE)
CONTOUR = slice(MIDLINE.stop, MIDLINE.stop + 2 * N_CONTOUR)
CENTROID = slice(CONTOUR.stop, CONTOUR.stop + 2)
ATTRIBUTES = ("blob_orientation", "area", "grey_value", "raw_spinelength", "width", "perimeter",
              "collision_flag")
COLLISION = N_COLUMNS - 1

_HEAD_BYTES = 8192
_IGNORED_OPTIONS = ("pixelsize", "verify")  # generic CLI options, meaningless here
_INTEGER = re.compile(r"^\s*\d+\s*$")


# ------------------------------------------------------------------ detection
def is_schleyer(path: Path) -> bool:
    """Content check: a file whose first line has 78 comma-separated numeric
    (or empty) fields, the first an integer; or a directory whose first
    ``.csv`` file (by name) is such a file."""
    try:
        path = as_path(path)
        if path.is_dir():
            files = _csv_files(path)
            return bool(files) and _first_line_matches(files[0])
        return path.is_file() and _first_line_matches(path)
    except Exception:
        return False


def _first_line_matches(path: Path) -> bool:
    text = head_text(path, _HEAD_BYTES)
    if text is None:
        return False
    line = first_line(text)
    fields = _fields(to_comma_separated(line, sniff_delimiter(line)))
    if len(fields) != N_COLUMNS or not _INTEGER.match(fields[0]):
        return False
    for field in fields[1:]:
        if not is_missing(field):
            try:
                float(field)
            except ValueError:
                return False
    return True


def _fields(line: str) -> list[str]:
    """The comma-separated fields of a line, a trailing separator (79th empty field) dropped."""
    fields = line.split(",")
    if len(fields) == N_COLUMNS + 1 and not fields[-1].strip():
        fields.pop()
    return fields


def _csv_files(directory: Path) -> list[Path]:
    files = [p for p in directory.iterdir() if p.suffix.lower() == ".csv" and p.is_file()
             and not p.name.startswith(".")]
    stems = [p.stem for p in files]
    if files and all(s.isdigit() for s in stems):
        return sorted(files, key=lambda p: (int(p.stem), p.name))
    return sorted(files, key=lambda p: p.name)


# -------------------------------------------------------------------- reading
def read_schleyer(path: str | Path, *, framerate: float | None = None, collisions: str = "missing",
                  spine_points: int | None = None, **options) -> Run:
    """Read a directory of Schleyer-lab CSV files (one run) or one such file.

    Args:
        path: a directory of per-larva ``.csv`` files, or one file.
        framerate: frames per second (default 16): ``t = (frame - 1) / framerate``,
            rounded to 4 decimals.
        collisions: ``"missing"`` (default: rows with ``collision_flag`` > 0
            get NaN spine and outline) or ``"keep"`` (keep their geometry).
        spine_points: resample midlines to this many points along their arc
            length (default: keep the 12 stored points).
        options: ``pixelsize`` and ``verify`` are accepted and ignored.

    Raises:
        FormatError: naming the offending file: not UTF-8/ASCII text, ragged
            rows, non-numeric fields, frames not strictly increasing, a larva
            with no valid midline, a directory without ``.csv`` files...
    """
    path = as_path(path)
    unknown = sorted(set(options) - set(_IGNORED_OPTIONS))
    if unknown:
        raise TypeError(f"read_schleyer() got unexpected option(s): {', '.join(unknown)}")
    framerate = DEFAULT_FRAMERATE if framerate is None else float(framerate)
    if not np.isfinite(framerate) or framerate <= 0:
        raise ValueError(f"framerate must be a positive number, not {framerate}")
    if collisions not in ("missing", "keep"):
        raise ValueError(f"collisions must be 'missing' or 'keep', not {collisions!r}")
    if spine_points is not None and int(spine_points) < 2:
        raise ValueError("spine_points must be at least 2")
    if not path.exists():
        raise FormatError(path, "no such file or directory")
    if path.is_dir():
        files = _csv_files(path)
        if not files:
            raise FormatError(path, "is a directory with no .csv files (expected one Schleyer CSV per larva)")
        run_id = path.resolve().name
    else:
        files = [path]
        run_id = path.resolve().parent.name or path.stem
    stems = [p.stem for p in files]
    if all(s.isdigit() for s in stems) and len(set(map(int, stems))) == len(stems):
        larva_ids = [int(s) for s in stems]
    else:
        larva_ids = list(range(1, len(files) + 1))

    times, spines, outlines = [], [], []
    masked = {"missing": 0, "collision": 0}
    for file in files:
        table = parse_csv(file)
        t, spine, outline, counts = _track(file, table, framerate, collisions)
        for key, count in counts.items():
            masked[key] += count
        if spine_points is not None and int(spine_points) != N_MIDLINE:
            spine = resample_polyline(spine, int(spine_points))
        times.append(t)
        spines.append(spine)
        outlines.append(outline)
    try:
        return Run.from_tracks(run_id, larva_ids, times, spines, outlines=outlines,
                               metadata={"camera": {"framerate": framerate}, "masked": masked},
                               source=tuple(files),
                               source_format="schleyer", frame_rate=framerate, spine_head="last",
                               space_unit="mm")
    except ValidationError as err:
        raise FormatError(path, str(err)) from err


def parse_csv(path: Path) -> np.ndarray:
    """The ``(n_rows, 78)`` float64 table of one file (missing values are NaN).

    Accepts the variants of :mod:`.textio`: BOM, any line end, ``;`` (decimal
    commas) or tab separators, a trailing separator on each line, missing-value
    tokens (empty, ``na``, ``NaN``, ``-nan``...) padded or not.
    """
    lines = decode_lines(path, "a Schleyer tracker CSV file")
    delimiter = sniff_delimiter(lines[0])
    rows = []
    for number, line in enumerate(lines, start=1):
        fields = _fields(to_comma_separated(line, delimiter))
        if len(fields) != N_COLUMNS:
            what = "is empty" if not line.strip() else f"has {len(fields)} fields"
            raise FormatError(path, f"line {number} {what}, expected {N_COLUMNS} (ragged rows)")
        rows.append(",".join(fields))
    table = float_rows(path, rows, N_COLUMNS, lambda r, c: f"line {r + 1}, column {c + 1}")
    if np.isinf(table).any():
        row = int(np.flatnonzero(np.isinf(table).any(axis=1))[0]) + 1
        raise FormatError(path, f"line {row} holds an infinite value")
    return table


def _frame_indices(path: Path, column: np.ndarray) -> np.ndarray:
    """The frame index column with missing entries inferred from their neighbours:
    frames are consecutive, so a missing index between frames ``a`` and ``b`` is only
    accepted when the gap holds exactly the missing rows (``a+1 ..``, ``.. b-1``)."""
    frames = column.copy()
    absent = np.isnan(frames)
    if not absent.any():
        return frames
    if absent.all():
        raise FormatError(path, "has no frame index (first column) on any line")
    known = np.flatnonzero(~absent)
    for row in np.flatnonzero(absent):
        before = known[known < row]
        after = known[known > row]
        if before.size:
            guess = frames[before[-1]] + (row - before[-1])
            if after.size and frames[after[0]] - frames[before[-1]] != after[0] - before[-1]:
                raise FormatError(path, f"line {row + 1}: the frame index is missing and the frames "
                                        "around it leave a gap: cannot tell which frame it is")
        else:
            guess = frames[after[0]] - (after[0] - row)
        frames[row] = guess
    return frames


def _track(path: Path, table: np.ndarray, framerate: float, collisions: str):
    """(times, spines, outlines, counts) of one larva; ``counts`` are the steps masked
    as ``missing`` (a midline coordinate absent) and as ``collision``."""
    frames = _frame_indices(path, table[:, 0])
    bad = (frames != np.round(frames)) | (frames < 1)
    if np.any(bad):
        row = int(np.flatnonzero(bad)[0]) + 1
        raise FormatError(path, f"line {row}: the frame index must be a positive integer")
    steps = np.diff(frames)
    if np.any(steps <= 0):
        row = int(np.flatnonzero(steps <= 0)[0]) + 2
        raise FormatError(path, f"line {row}: frame {int(frames[row - 1])} after frame "
                                f"{int(frames[row - 2])} (frames must increase; time is not monotonic)")
    spine = table[:, MIDLINE].reshape(-1, N_MIDLINE, 2).copy()
    outline = table[:, CONTOUR].reshape(-1, N_CONTOUR, 2).astype(np.float32)
    missing = np.isnan(spine).any(axis=(1, 2))
    collided = np.zeros_like(missing)
    if collisions == "missing":
        collided = (table[:, COLLISION] > 0) & ~missing
    masked = missing | collided
    spine[masked] = np.nan
    outline[masked] = np.nan
    mask_holed_outlines(outline)
    if masked.all():
        raise FormatError(path, "has no valid midline (every row is missing or a collision)")
    t = np.round((frames - 1.0) / framerate, 4)
    return t, spine, outline, {"missing": int(missing.sum()), "collision": int(collided.sum())}


def resample_polyline(points: np.ndarray, n: int) -> np.ndarray:
    """Resample ``(..., k, 2)`` polylines to ``n`` points equally spaced along
    their arc length (first and last points kept; NaN polylines stay NaN)."""
    points = np.asarray(points, dtype=np.float64)
    shape = points.shape[:-2]
    flat = points.reshape(-1, points.shape[-2], 2)
    segments = np.linalg.norm(np.diff(flat, axis=1), axis=2)
    arc = np.concatenate([np.zeros((len(flat), 1)), np.cumsum(segments, axis=1)], axis=1)
    total = arc[:, -1:]
    targets = np.linspace(0.0, 1.0, n)[None, :] * total
    # segment index of each target: the last vertex whose arc position is <= target
    index = (arc[:, None, :] <= targets[:, :, None]).sum(axis=2) - 1
    index = np.clip(index, 0, flat.shape[1] - 2)
    rows = np.arange(len(flat))[:, None]
    start = arc[rows, index]
    length = arc[rows, index + 1] - start
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(length > 0, (targets - start) / length, 0.0)
    frac = np.clip(frac, 0.0, 1.0)[..., None]
    out = flat[rows, index] * (1.0 - frac) + flat[rows, index + 1] * frac
    out[np.isnan(total[:, 0])] = np.nan
    return out.reshape(shape + (n, 2))


def _resample_polygon(vertices: np.ndarray, counts: np.ndarray, n: int) -> np.ndarray:
    """Resample closed polygons (NaN-padded, ``counts`` valid vertices) to ``n``
    vertices equally spaced along the perimeter, starting at vertex 0."""
    out = np.full((len(vertices), n, 2), np.nan)
    for k in np.unique(counts):
        if k < 3:
            continue
        rows = np.flatnonzero(counts == k)
        closed = np.concatenate([vertices[rows, :k], vertices[rows, :1]], axis=1).astype(np.float64)
        out[rows] = resample_polyline(closed, n + 1)[:, :n]
    return out


# -------------------------------------------------------------------- writing
def write_schleyer(run: Run, directory: str | Path, *, framerate: float | None = None,
                   snap: bool = False) -> None:
    """Write ``run`` as one Schleyer CSV per larva (``<larva_id>.csv``) in ``directory``.

    Args:
        run: the run.
        directory: output directory (created). It may not hold other ``.csv``
            files, which would be read as part of the run.
        framerate: frames per second used to turn times into frame indices
            (``frame = t * framerate + 1``); default ``run.frame_rate``, else 16.
            Files carry no frame rate: read them back with the same ``framerate``.
        snap: round times that are not on the frame grid (within 0.05 frame)
            to the nearest frame (default: such times are an error).

    Midlines are written tail first: a run whose ``spine_head`` is ``"first"``
    is reversed; ``"unknown"`` is written as stored. Spines of another point
    count are resampled to 12 points along their arc length; outlines of up to
    22 vertices are written as they are (NaN-padded), larger ones resampled to
    22 vertices along their perimeter (all NaN without outline). The centroid is the
    midline mean, with y negated as in the lab's files; the attribute columns
    are NaN and ``collision_flag`` is 0. Missing values are written ``NaN``.
    """
    directory = as_path(directory)
    framerate = float(framerate or run.frame_rate or DEFAULT_FRAMERATE)
    frames = run.t * framerate
    rounded = np.round(frames)
    # tolerance: times rounded to 3-4 decimals (labels, readers) stay on the grid
    off_grid = np.abs(frames - rounded) > 0.05
    if not snap and np.any(off_grid):
        row = int(np.flatnonzero(off_grid)[0])
        raise ValidationError(f"run {run.id}: t={run.t[row]:.4f} s is not on the {framerate:g} fps frame "
                              "grid of the Schleyer format (pass snap=True to round)")
    if np.any(rounded < 0):
        raise ValidationError(f"run {run.id}: negative times cannot be written as frame indices")
    index = rounded.astype(np.int64) + 1
    within = np.ones(max(len(index) - 1, 0), dtype=bool)
    within[run.offsets[1:-1] - 1] = False
    if np.any(within & (np.diff(index) <= 0)):
        raise ValidationError(f"run {run.id}: two time steps fall on the same frame at {framerate:g} fps")

    spine = run.spine
    if run.spine_head == "first":
        spine = spine[:, ::-1]
    if spine.shape[1] != N_MIDLINE:
        spine = resample_polyline(spine, N_MIDLINE)
    if run.outline is None:
        contour = np.full((run.n_steps, N_CONTOUR, 2), np.nan)
    elif run.outline.shape[1] <= N_CONTOUR:  # written as is, NaN-padded
        contour = np.full((run.n_steps, N_CONTOUR, 2), np.nan)
        contour[:, :run.outline.shape[1]] = run.outline
    else:
        contour = _resample_polygon(run.outline, outline_vertex_counts(run.outline), N_CONTOUR)
    centroid = spine.mean(axis=1) * np.array([1.0, -1.0])

    table = np.full((run.n_steps, N_COLUMNS), np.nan)
    table[:, 0] = index
    table[:, MIDLINE] = spine.reshape(run.n_steps, -1)
    table[:, CONTOUR] = contour.reshape(run.n_steps, -1)
    table[:, CENTROID] = centroid
    table[:, COLLISION] = 0.0

    names = [f"{int(larva)}.csv" for larva in run.larva_ids]
    if directory.exists():
        if not directory.is_dir():
            raise OutputExistsError(f"{directory}: exists and is not a directory")
        others = sorted(p.name for p in _csv_files(directory) if p.name not in names)
        if others:
            raise OutputExistsError(f"{directory}: holds other CSV files ({', '.join(others[:3])}"
                                    f"{', ...' if len(others) > 3 else ''}), which would be read "
                                    "as part of the run")
    directory.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        lo, hi = int(run.offsets[i]), int(run.offsets[i + 1])
        with atomic_path(directory / name) as tmp:
            tmp.write_text(_format_rows(table[lo:hi]), encoding="ascii")


def _format_rows(rows: np.ndarray) -> str:
    line = "%d" + ",%.12g" * (N_COLUMNS - 1) + "\n"
    text = "".join(line % (int(row[0]), *row[1:]) for row in rows.tolist())
    return text.replace("nan", "NaN")


SPEC = FormatSpec(
    name="schleyer",
    description="Schleyer-lab per-larva CSV files (78 columns, 16 fps; a directory is one run)",
    suffixes=(".csv",),
    detection="first line has 78 comma-separated numeric or empty fields, the first an integer "
              "(a directory: its first .csv file)",
    is_format=is_schleyer,
    read=read_schleyer,
    write=write_schleyer,
    reads_directory=True,
)
