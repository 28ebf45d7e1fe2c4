"""Choreography ``.spine`` / ``.outline`` files (MWT + Choreography, SPEC §4.2).

Layout
------
Both files are plain ASCII, one line per (larva, frame), fields separated by
single spaces::

    20150701_105504 512 66.675 x1 y1 x2 y2 ... xn yn

``date_time`` (``YYYYMMDD_HHMMSS``, identical on every line), the integer larva
id, the time in seconds, then ``x y`` pairs in mm. A ``.spine`` line has a fixed
number of points (11 in Choreography output); an ``.outline`` line has a
variable number of contour vertices.

Pairing
-------
A ``.spine`` and its ``.outline`` share a stem
(``<stem>.spine`` + ``<stem>.outline``). :func:`read_chore` accepts either file,
a file with another suffix (detection is by content; the partner is looked up by
stem), or a directory holding exactly one ``.spine`` file. A missing
``.outline`` partner is an error by default; pass ``outline=False`` to read the
spine alone (``run.outline`` is then ``None``). The ``.spine`` is always needed.

Rows of the two files are matched on ``(larva id, time)``: a spine row without
an outline row gets a NaN outline; outline rows without a spine row are dropped.

In memory
---------
* tracks are sorted by larva id; within a track rows keep the file order, which
  must have strictly increasing times (a repeated or decreasing time is a
  :class:`FormatError` naming the larva and the line);
* ``run.spine`` is float64 ``(n_steps, n_points, 2)`` in the file's point order
  (``spine_head="unknown"``: Choreography does not say which end is the head);
* ``run.outline`` is float32 ``(n_steps, max_vertices, 2)`` padded with NaN, the
  vertices in **the file's order**. PlanarLarvae closes the polygon and reverses
  the vertex order when it reads an outline; we do neither, so that
  ``write_chore`` reproduces the file exactly;
* times are rounded to 4 decimals (SPEC §4.8); ``frame_rate`` is ``None``
  because MWT frame intervals are irregular;
* ``run.id`` is the ``date_time`` column; the file name
  ``<date_time>@<genotype>@<effector>@<tracker>@<protocol>@<n>.spine`` gives
  ``run.metadata`` keys ``date_time``, ``genotype``, ``effector``, ``tracker``
  and ``protocol``. As in LarvaTagger ``.label`` files, ``protocol`` keeps the
  trailing ``@<n>`` field (``r_LED50_30s2x15s30s#n#n#n@100``). A name that does
  not split into 6 ``@`` fields gives ``{"date_time": ...}`` only.

Parsing is vectorised: lines are grouped by field count and each group is
parsed by :func:`numpy.loadtxt`'s C tokenizer (a t15-size pair, 134,000 lines,
reads in about a second).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from ..data.tracks import Run, outline_vertex_counts
from ..errors import FormatError, TaggingError
from ..fileio import atomic_path
from .registry import FormatSpec, as_path

__all__ = ["is_chore", "read_chore", "write_chore", "chore_pair", "parse_chore_filename", "SPEC"]

SPINE_SUFFIX = ".spine"
OUTLINE_SUFFIX = ".outline"

_SIGNATURE = re.compile(rb"^[0-9]{8}_[0-9]{6}\s[0-9]")
_DATE_TIME = re.compile(r"^[0-9]{8}_[0-9]{6}$")
_MAX_DECIMALS = 6


# ----------------------------------------------------------------- detection
def _has_signature(path: Path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(17)
    if head.startswith(b"\xef\xbb\xbf"):  # tolerate a UTF-8 byte-order mark
        with open(path, "rb") as handle:
            head = handle.read(20)[3:]
    return bool(_SIGNATURE.match(head))


def _spines_in(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir()
                  if p.suffix.lower() == SPINE_SUFFIX and p.is_file())


def is_chore(path: str | os.PathLike) -> bool:
    """Whether ``path`` looks like Choreography output (never raises).

    A file matches when its first 17 bytes match ``^[0-9]{8}_[0-9]{6}\\s[0-9]``
    (a ``date_time`` then the larva id), whatever its suffix; a directory
    matches when it holds exactly one ``.spine`` file with that signature.
    """
    try:
        path = as_path(path)
        if path.is_dir():
            spines = _spines_in(path)
            return len(spines) == 1 and _has_signature(spines[0])
        return path.is_file() and _has_signature(path)
    except Exception:
        return False


# ------------------------------------------------------------------- pairing
def chore_pair(path: str | os.PathLike, outline: bool = True) -> tuple[Path, Path | None]:
    """The ``(spine, outline)`` files that ``path`` designates.

    ``path`` is a ``.spine`` file, an ``.outline`` file, a file with another
    suffix whose partner follows the stem, or a directory holding exactly one
    ``.spine``. With ``outline=False`` the outline is not looked for (``None``).
    Raises :class:`FormatError` when a file is missing.
    """
    path = as_path(path)
    if not path.exists():
        raise FormatError(path, "no such file or directory")
    if path.is_dir():
        spines = _spines_in(path)
        if len(spines) != 1:
            found = "no .spine file" if not spines else f"{len(spines)} .spine files"
            raise FormatError(path, f"is a directory with {found}; expected exactly one "
                                    ".spine/.outline pair")
        spine = spines[0]
    else:
        suffix = path.suffix.lower()
        if suffix == OUTLINE_SUFFIX or (suffix != SPINE_SUFFIX
                                        and not path.with_suffix(OUTLINE_SUFFIX).exists()
                                        and path.with_suffix(SPINE_SUFFIX).exists()):
            spine = path.with_suffix(SPINE_SUFFIX)
            if not spine.is_file():
                raise FormatError(path, f"missing .spine partner {spine.name}")
            return spine, (path if outline else None)
        spine = path
    if not outline:
        return spine, None
    partner = spine.with_suffix(OUTLINE_SUFFIX)
    if not partner.is_file():
        raise FormatError(spine, f"missing .outline partner {partner.name} "
                                 "(pass outline=False to read the spine alone)")
    return spine, partner


def parse_chore_filename(name: str) -> dict:
    """Metadata from ``<date_time>@<genotype>@<effector>@<tracker>@<protocol>@<n>.ext``.

    Returns ``{}`` when the name does not split into 6 ``@`` fields or does not
    start with a ``date_time``. ``protocol`` keeps the trailing ``@<n>`` field,
    as LarvaTagger writes it in ``.label`` metadata.
    """
    stem = Path(name).name
    for suffix in (SPINE_SUFFIX, OUTLINE_SUFFIX):
        if stem.lower().endswith(suffix):
            stem = stem[:-len(suffix)]
            break
    parts = stem.split("@")
    if len(parts) != 6 or not _DATE_TIME.match(parts[0]):
        return {}
    return {"date_time": parts[0], "genotype": parts[1], "effector": parts[2],
            "tracker": parts[3], "protocol": "@".join(parts[4:])}


# ------------------------------------------------------------------- parsing
class _Table:
    """The parsed content of one ``.spine`` or ``.outline`` file."""

    def __init__(self, date_time: str, ids: np.ndarray, t: np.ndarray, coords: np.ndarray,
                 line_numbers: np.ndarray):
        self.date_time = date_time
        self.ids = ids
        self.t = t
        self.coords = coords            # (n_rows, n_points, 2)
        self.line_numbers = line_numbers


def _read_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise FormatError(path, "is a directory, expected a .spine or .outline file") from None
    except OSError as err:
        raise FormatError(path, f"cannot be read: {err.strerror or err}") from None
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise FormatError(path, "is UTF-16 text; Choreography files are ASCII")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if not data or data.isspace():  # (strip() would copy the whole file)
        raise FormatError(path, "is empty")
    if b"\x00" in data:
        raise FormatError(path, "contains binary data (NUL bytes), not Choreography text")
    if not data.isascii():
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise FormatError(path, f"is not UTF-8 text (byte 0x{data[err.start]:02x} at offset "
                                    f"{err.start})") from None
    return data


def _needs_normalising(data: bytes) -> bool:
    """Whether fields may be separated by anything but single spaces (slow check)."""
    return (b"\r" in data or b"\t" in data or b"\f" in data or b"\v" in data or b"  " in data
            or b" \n" in data or b"\n " in data or data[:1] == b" " or data[-1:] == b" ")


def _normalise_whitespace(data: bytes) -> bytes:
    """Single spaces between fields and ``\\n`` line ends."""
    data = re.sub(rb"[ \t\f\v]+", b" ", data.replace(b"\r\n", b"\n").replace(b"\r", b"\n"))
    return data.replace(b" \n", b"\n").replace(b"\n ", b"\n").strip(b" ")


def _bad_token_line(path: Path, lines: list[bytes], rows: np.ndarray,
                    line_numbers: np.ndarray) -> FormatError:
    for row in rows:
        for token in lines[row].split()[1:]:
            try:
                float(token)
            except ValueError:
                text = token.decode("utf-8", "replace")[:40]
                return FormatError(path, f"line {line_numbers[row]}: {text!r} is not a number")
    return FormatError(path, "unparsable numbers")  # pragma: no cover - loadtxt disagreed


def _parse(path: Path, fixed: bool) -> _Table:
    """Parse a ``.spine`` (``fixed``: same point count on every line) or ``.outline``.

    The fast path assumes single spaces between fields (as Choreography writes
    them); on failure, files with other whitespace are normalised and parsed again.
    """
    data = _read_bytes(path)
    if b"\r" in data or b"\t" in data:  # cheap one-byte searches
        return _parse_data(path, _normalise_whitespace(data), fixed)
    try:
        return _parse_data(path, data, fixed)
    except FormatError:
        if not _needs_normalising(data):
            raise
    return _parse_data(path, _normalise_whitespace(data), fixed)


def _parse_data(path: Path, data: bytes, fixed: bool) -> _Table:
    what = "spine" if fixed else "outline"
    lines = data.split(b"\n")
    if b"\n\n" in data or not lines[0]:
        keep = [i for i, line in enumerate(lines) if line]
        lines = [lines[i] for i in keep]
        line_numbers = np.asarray(keep, dtype=np.int64) + 1
    else:
        if not lines[-1]:
            lines.pop()
        line_numbers = np.arange(1, len(lines) + 1, dtype=np.int64)
    n = len(lines)

    first = lines[0].split(b" ", 1)[0]
    date_time = first.decode("ascii", "replace")
    if not _DATE_TIME.match(date_time):
        raise FormatError(path, f"line {line_numbers[0]} starts with {date_time[:30]!r}, not a "
                                "date_time (YYYYMMDD_HHMMSS): not a Choreography file")
    prefix = first + b" "
    for i, line in enumerate(lines):
        if not line.startswith(prefix):
            token = line.split(b" ", 1)[0].decode("utf-8", "replace")[:30]
            if _DATE_TIME.match(token):
                raise FormatError(path, f"line {line_numbers[i]}: date_time {token} differs from "
                                        f"{date_time} on line {line_numbers[0]} (one run per file)")
            raise FormatError(path, f"line {line_numbers[i]} starts with {token!r}, expected "
                                    f"'{date_time} <larva id> <time> <x y pairs>'")

    counts = np.fromiter((line.count(b" ") for line in lines), np.int64, n) + 1
    n_values = counts - 3  # coordinates after date_time, larva id, time
    bad = (n_values < 2) | (n_values % 2 == 1)
    if fixed:
        expected = int(np.bincount(np.maximum(n_values, 0)).argmax())
        if expected >= 4 and expected % 2 == 0:
            bad = n_values != expected
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise FormatError(path, f"line {line_numbers[i]} has {n_values[i]} spine "
                                        f"coordinates, expected {expected} ({expected // 2} x,y "
                                        "points) as on the other lines: ragged or truncated .spine")
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise FormatError(path, f"line {line_numbers[i]} has {n_values[i]} coordinates; expected "
                                f"'date_time larva_id time' then x y pairs (truncated {what}?)")

    width = int(n_values.max()) // 2
    ids = np.empty(n, dtype=np.float64)
    t = np.empty(n, dtype=np.float64)
    coords = np.empty((n, width, 2), dtype=np.float64 if fixed else np.float32)
    uniq, inverse = np.unique(counts, return_inverse=True)
    infinite = False
    for g, count in enumerate(uniq):
        rows = np.flatnonzero(inverse == g) if len(uniq) > 1 else slice(None)
        group = lines if len(uniq) == 1 else [lines[i] for i in rows]
        try:
            values = np.loadtxt(group, dtype=np.float64, usecols=range(1, int(count)),
                                delimiter=" ", comments=None, ndmin=2)
        except ValueError:
            raise _bad_token_line(path, lines, np.arange(n)[rows], line_numbers) from None
        ids[rows] = values[:, 0]
        t[rows] = values[:, 1]
        points = (int(count) - 3) // 2
        coords[rows, :points] = values[:, 2:].reshape(len(values), points, 2)
        if points < width:
            coords[rows, points:] = np.nan
        infinite = infinite or bool(np.isinf(values).any())

    finite_ids = np.isfinite(ids)
    bad = ~finite_ids | (ids < 0) | (ids != np.round(ids))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise FormatError(path, f"line {line_numbers[i]}: larva id {ids[i]:g} is not a "
                                "non-negative integer")
    bad = ~np.isfinite(t)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise FormatError(path, f"line {line_numbers[i]}: time {t[i]} is not a finite number")
    inf_rows = np.isinf(coords).any(axis=(1, 2)) if infinite else None
    if inf_rows is not None and inf_rows.any():
        i = int(np.flatnonzero(inf_rows)[0])
        raise FormatError(path, f"line {line_numbers[i]}: infinite {what} coordinate")
    return _Table(date_time, ids.astype(np.int64), t, coords, line_numbers)


def _order_tracks(path: Path, table: _Table) -> tuple[np.ndarray | slice, np.ndarray, np.ndarray]:
    """Row permutation grouping rows by larva (file order kept within a larva),
    the larva ids and the offsets; checks that times strictly increase."""
    ids = table.ids
    if np.all(ids[1:] >= ids[:-1]):
        order = slice(None)  # already grouped: views, no copies
    else:
        order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
    offsets = np.r_[starts, sorted_ids.size].astype(np.int64)
    t = table.t[order]
    steps = np.diff(t)
    within = sorted_ids[1:] == sorted_ids[:-1]
    bad = within & (steps <= 0)
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        larva = int(sorted_ids[j])
        rows = np.arange(ids.size)[order]
        a, b = table.line_numbers[rows[j]], table.line_numbers[rows[j + 1]]
        if steps[j] == 0:
            raise FormatError(path, f"larva {larva} has two rows at time {t[j]:g} "
                                    f"(lines {a} and {b})")
        raise FormatError(path, f"larva {larva}: time goes backwards at line {b} "
                                f"({t[j]:g} on line {a}, then {t[j + 1]:g})")
    return order, sorted_ids[starts], offsets


def _match_outlines(path: Path, spine: _Table, order: np.ndarray | slice,
                    outline: _Table) -> np.ndarray:
    """Outline rows aligned with the (reordered) spine rows, NaN where absent."""
    if outline.date_time != spine.date_time:
        raise FormatError(path, f"date_time {outline.date_time} differs from the .spine's "
                                f"{spine.date_time}")
    if (outline.ids.shape == spine.ids.shape and np.array_equal(outline.ids, spine.ids)
            and np.array_equal(outline.t, spine.t)):
        return outline.coords[order]
    ms = np.round(outline.t * 1000).astype(np.int64)
    keys = (outline.ids << 40) + ms
    sorter = np.argsort(keys, kind="stable")
    sorted_keys = keys[sorter]
    dup = np.flatnonzero(sorted_keys[1:] == sorted_keys[:-1])
    if dup.size:
        j = sorter[dup[0] + 1]
        raise FormatError(path, f"larva {outline.ids[j]} has two rows at time {outline.t[j]:g} "
                                f"(line {outline.line_numbers[j]})")
    wanted = (spine.ids[order] << 40) + np.round(spine.t[order] * 1000).astype(np.int64)
    pos = np.minimum(np.searchsorted(sorted_keys, wanted), sorted_keys.size - 1)
    found = sorted_keys[pos] == wanted
    result = np.full((wanted.size,) + outline.coords.shape[1:], np.nan, dtype=np.float32)
    result[found] = outline.coords[sorter[pos[found]]]
    return result


_READ_OPTIONS = ("outline",)


def read_chore(path: str | os.PathLike, *, outline: bool = True, **options) -> Run:
    """Read a Choreography ``.spine`` + ``.outline`` pair into a :class:`Run`.

    Args:
        path: the ``.spine``, the ``.outline`` (its ``.spine`` partner is read
            too), or a directory holding exactly one pair.
        outline: read the ``.outline`` partner (default). Its absence is then a
            :class:`FormatError` ("missing .outline partner ..."). With
            ``False`` only the spine is read and ``run.outline`` is ``None``.
        options: other reader options are accepted only when ``None`` (so that
            a caller may pass a common option set to any reader).

    Raises:
        FormatError: naming the file and the problem, for every bad input:
            missing/empty/binary/non-UTF-8 files, lines that do not start with
            the date_time, ragged spine lines, non-numeric fields, duplicated
            or decreasing times within a larva, larvae whose spine is all NaN.
    """
    _check_options("read_chore", options)
    path = as_path(path)
    spine_path, outline_path = chore_pair(path, outline=outline)
    try:
        return _read(spine_path, outline_path)
    except FormatError:
        raise
    except TaggingError as err:  # ValidationError from Run
        raise FormatError(spine_path, str(err)) from err
    except (ValueError, IndexError, TypeError, OverflowError) as err:
        raise FormatError(spine_path, f"cannot be read as Choreography: {err}") from err


def _read(spine_path: Path, outline_path: Path | None) -> Run:
    spine = _parse(spine_path, fixed=True)
    order, larva_ids, offsets = _order_tracks(spine_path, spine)
    coords = spine.coords[order]
    present = ~np.isnan(coords).all(axis=(1, 2))
    per_track = np.add.reduceat(present.astype(np.int64), offsets[:-1])
    if np.any(per_track == 0):
        larva = int(larva_ids[np.flatnonzero(per_track == 0)[0]])
        raise FormatError(spine_path, f"larva {larva} has no spine data (all values NaN)")
    contour = None
    if outline_path is not None:
        contour = _match_outlines(outline_path, spine, order, _parse(outline_path, fixed=False))
    metadata = parse_chore_filename(spine_path.name)
    metadata["date_time"] = spine.date_time
    return Run(
        id=spine.date_time,
        larva_ids=larva_ids,
        offsets=offsets,
        t=np.round(spine.t[order], 4),
        spine=coords,
        outline=contour,
        metadata=metadata,
        source=(spine_path,) if outline_path is None else (spine_path, outline_path),
        source_format="chore",
        frame_rate=None,
        spine_head="unknown",
        space_unit="mm",
    )


def _check_options(name: str, options: dict) -> None:
    unknown = sorted(key for key, value in options.items() if value is not None)
    if unknown:
        raise TypeError(f"{name}() got unexpected option(s): {', '.join(unknown)}")


# ------------------------------------------------------------------- writing
def _pair_paths(path: Path) -> tuple[Path, Path]:
    suffix = path.suffix.lower()
    if suffix == SPINE_SUFFIX:
        spine = path
    elif suffix == OUTLINE_SUFFIX:
        spine = path.with_suffix(SPINE_SUFFIX)
    else:  # a stem: append (stems may contain dots)
        spine = path.with_name(path.name + SPINE_SUFFIX)
    return spine, spine.with_suffix(OUTLINE_SUFFIX)


def _decimals(values: np.ndarray, float32: bool) -> int | None:
    """Fewest decimals (up to 6) that reproduce ``values`` exactly, else None."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 3
    wide = values.astype(np.float64)
    for decimals in range(3, _MAX_DECIMALS + 1):
        rounded = np.round(wide, decimals)
        if float32:
            same = np.array_equal(rounded.astype(np.float32), values)
        else:
            same = np.array_equal(rounded, values)
        if same:
            return decimals
    return None


def write_chore(run: Run, path: str | os.PathLike, *, date_time: str | None = None,
                overwrite: bool = True) -> None:
    """Write ``run`` as a Choreography ``.spine`` and, if it has outlines, ``.outline``.

    Args:
        run: the run; its ``id`` must be a ``YYYYMMDD_HHMMSS`` date_time unless
            ``date_time`` is given.
        path: the ``.spine`` path, the ``.outline`` path or a stem (``.spine``
            is appended). The ``.outline`` goes beside the ``.spine``.
        date_time: the value of the first column (default ``run.id``).
        overwrite: replace existing files (default) or raise OutputExistsError.

    Format: times with 3 decimals (ms, as Choreography writes them); spine
    coordinates with the fewest decimals (3 to 6) that reproduce them exactly,
    else 6 decimals; outline vertices with the fewest decimals (3 to 6) that
    reproduce the float32 values, else 9 significant digits, so that reading
    the files back gives the same arrays. Steps whose spine is all NaN are not
    written (Choreography writes no line for them); other NaN values are
    written as ``nan``. An outline row is written up to its first missing
    vertex; rows with no vertex are skipped.

    When ``run.outline`` is ``None`` no ``.outline`` is written; if one already
    exists beside the ``.spine`` a ValueError is raised, since it would be
    paired with the new spine on reading. Both files are written atomically.
    """
    path = as_path(path)
    spine_path, outline_path = _pair_paths(path)
    date_time = str(run.id if date_time is None else date_time)
    if not _DATE_TIME.match(date_time):
        raise ValueError(f"cannot write Choreography files: run id {date_time!r} is not a "
                         "YYYYMMDD_HHMMSS date_time (pass date_time=)")
    if run.outline is None and outline_path.exists():
        raise ValueError(f"{outline_path}: exists and the run has no outline to write; "
                         "remove it or write elsewhere")
    if np.any(run.larva_ids < 0):
        raise ValueError("cannot write Choreography files: negative larva ids")
    t = np.round(run.t, 3)
    track = run.track_index
    same_track = track[1:] == track[:-1]
    if np.any(same_track & (np.diff(t) <= 0)):
        raise ValueError("cannot write Choreography files: two time steps of a larva fall in "
                         "the same millisecond (times are written with 3 decimals)")
    ids = run.larva_ids[track]

    spine_text = _spine_text(date_time, ids, t, run.spine)
    outline_text = None if run.outline is None else _outline_text(date_time, ids, t, run.outline)
    with atomic_path(spine_path, overwrite=overwrite) as tmp_spine:
        tmp_spine.write_bytes(spine_text.encode("ascii"))
        if outline_text is not None:
            with atomic_path(outline_path, overwrite=overwrite) as tmp_outline:
                tmp_outline.write_bytes(outline_text.encode("ascii"))


def _spine_text(date_time: str, ids: np.ndarray, t: np.ndarray, spine: np.ndarray) -> str:
    decimals = _decimals(spine, float32=False)
    coord = f" %.{_MAX_DECIMALS if decimals is None else decimals}f"
    fmt = date_time + " %d %.3f" + coord * (2 * spine.shape[1])
    keep = ~np.isnan(spine).all(axis=(1, 2))
    rows = np.column_stack([ids[keep], t[keep], spine[keep].reshape(int(keep.sum()), -1)])
    lines = [fmt % tuple(row) for row in rows.tolist()]
    return "\n".join(lines) + "\n" if lines else ""


def _outline_text(date_time: str, ids: np.ndarray, t: np.ndarray, outline: np.ndarray) -> str:
    counts = outline_vertex_counts(outline)
    decimals = _decimals(outline, float32=True)
    coord = " %.9g" if decimals is None else f" %.{decimals}f"
    head = date_time + " %d %.3f"
    formats: dict[int, str] = {}
    flat = outline.reshape(outline.shape[0], -1).tolist()
    lines = []
    for lid, time, values, count in zip(ids.tolist(), t.tolist(), flat, counts.tolist()):
        if count == 0:
            continue
        fmt = formats.get(count)
        if fmt is None:
            fmt = formats[count] = head + coord * (2 * count)
        lines.append(fmt % (lid, time, *values[:2 * count]))
    return "\n".join(lines) + "\n" if lines else ""


SPEC = FormatSpec(
    name="chore",
    description="Choreography (MWT) .spine + .outline pair, one line per larva and frame",
    suffixes=(SPINE_SUFFIX, OUTLINE_SUFFIX),
    detection="first 17 bytes match ^[0-9]{8}_[0-9]{6}\\s[0-9] (date_time then larva id); "
              "a directory with exactly one such .spine",
    is_format=is_chore,
    read=read_chore,
    write=write_chore,
    reads_directory=True,
)
