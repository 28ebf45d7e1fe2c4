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

Parsing is vectorised and reads each file twice, a megabyte at a time: the first
pass checks the bytes and counts the fields of every line (numpy on the raw
bytes), the second parses the numbers of each chunk straight into arrays of the
final size, lines grouped by field count for :func:`numpy.loadtxt`'s C
tokenizer. Neither file is ever held whole: the peak memory of a read is about
1.3 times the arrays returned (a t15-size pair, 134,000 lines, 160 MB of text,
reads in under a second).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..data.tracks import Run, outline_vertex_counts
from ..errors import FormatError, TaggingError
from ..fileio import atomic_path
from .registry import FormatSpec, as_path
from .textio import is_missing, mask_holed_outlines, mask_incomplete_spines

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
_CHUNK_SIZE = 1 << 20  # bytes read at a time; each chunk ends at a line break


class _Table:
    """The parsed content of one ``.spine`` or ``.outline`` file."""

    def __init__(self, date_time: str, ids: np.ndarray, t: np.ndarray, coords: np.ndarray,
                 line_numbers: np.ndarray, placed: bool = False, dropped: int = 0,
                 has_nan: bool = True):
        self.date_time = date_time
        self.ids = ids
        self.t = t
        self.coords = coords            # (n_rows, n_points, 2)
        self.line_numbers = line_numbers
        self.placed = placed            # rows are not in file order but where ``rank`` put them
        self.dropped = dropped          # rows without larva id or time, not kept
        self.has_nan = has_nan          # the file holds missing values (else no masking needed)


class _Chunk(NamedTuple):
    """A piece of the file that ends at a line break (or at the end of the file)."""

    offset: int       # in the file
    size: int         # bytes in the file
    normalise: bool   # whitespace to normalise before parsing
    start: int        # its non-blank lines are the table rows start:stop
    stop: int


class _Scan:
    """What the first pass learns about a file, before any number is parsed."""

    def __init__(self, date_time: str, chunks: list[_Chunk], counts: np.ndarray,
                 line_numbers: np.ndarray, error: FormatError | None):
        self.date_time = date_time
        self.chunks = chunks
        self.counts = counts              # fields on each non-blank line
        self.line_numbers = line_numbers  # 1-based, of each non-blank line
        self.error = error                # first problem found in the lines, raised when parsing


def _read_error(path: Path, err: OSError) -> FormatError:
    if isinstance(err, IsADirectoryError):
        return FormatError(path, "is a directory, expected a .spine or .outline file")
    return FormatError(path, f"cannot be read: {err.strerror or err}")


def _read_chunks(path: Path, start: int, chunk_size: int) -> Iterator[tuple[int, bytes]]:
    """``(offset, bytes)`` pieces of the file from ``start``, each about ``chunk_size``
    bytes and ending at a line break (``\\n``, or a lone ``\\r``), the last one at the end
    of the file: lines, ``\\r\\n`` pairs and UTF-8 sequences are never split."""
    try:
        with open(path, "rb") as handle:
            handle.seek(start)
            offset, pending = start, b""
            while True:
                block = handle.read(max(chunk_size, len(pending)))  # (long lines: linear time)
                if not block:
                    if pending:
                        yield offset, pending
                    return
                if pending:  # a line longer than chunk_size
                    block = pending + block
                    pending = b""
                cut = block.rfind(b"\n") + 1
                if not cut:  # a lone \r (old Mac line ends): never the last byte read,
                    cut = block.rfind(b"\r", 0, len(block) - 1) + 1  # which may precede \n
                if not cut:
                    pending = block
                    continue
                if cut < len(block):
                    block = block[:cut]
                    handle.seek(offset + cut)
                yield offset, block
                offset += cut
    except OSError as err:
        raise _read_error(path, err) from None


def _needs_normalising(data: bytes) -> bool:
    """Whether fields may be separated by anything but single spaces (slow check)."""
    return (b"\r" in data or b"\t" in data or b"\f" in data or b"\v" in data or b"  " in data
            or b" \n" in data or b"\n " in data or data[:1] == b" " or data[-1:] == b" ")


def _normalise_whitespace(data: bytes) -> bytes:
    """Single spaces between fields and ``\\n`` line ends.

    Applied to a chunk that ends at a line break, it gives what it gives on the
    whole file, that piece for piece.
    """
    data = re.sub(rb"[ \t\f\v]+", b" ", data.replace(b"\r\n", b"\n").replace(b"\r", b"\n"))
    return data.replace(b" \n", b"\n").replace(b"\n ", b"\n").strip(b" ")


def _prefix_error(path: Path, line: bytes, number: int, date_time: str,
                  first_number: int) -> FormatError:
    token = line.split(b" ", 1)[0].decode("utf-8", "replace")[:30]
    if _DATE_TIME.match(token):
        return FormatError(path, f"line {number}: date_time {token} differs from "
                                 f"{date_time} on line {first_number} (one run per file)")
    return FormatError(path, f"line {number} starts with {token!r}, expected "
                             f"'{date_time} <larva id> <time> <x y pairs>'")


def _scan(path: Path, chunk_size: int, normalise_all: bool) -> _Scan:
    """First pass: byte checks, line numbers, field counts and the date_time prefix.

    File-level problems (unreadable, UTF-16, empty, binary, not UTF-8) are raised,
    in that order of precedence whatever their place in the file; the first problem
    with the lines (no date_time, a line with another prefix) is kept in ``error``.
    Chunks holding ``\\r`` or tabs are normalised, every chunk that needs it when
    ``normalise_all``.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(3)
    except OSError as err:
        raise _read_error(path, err) from None
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise FormatError(path, "is UTF-16 text; Choreography files are ASCII")
    start = 3 if head == b"\xef\xbb\xbf" else 0  # tolerate a UTF-8 byte-order mark

    blank, utf8_error, error = True, None, None
    date_time, prefix, first_number = "", b"", 0
    chunks: list[_Chunk] = []
    counts: list[np.ndarray] = []
    numbers: list[np.ndarray] = []
    rows = breaks = 0  # non-blank lines and line breaks so far
    for offset, raw in _read_chunks(path, start, chunk_size):
        if b"\x00" in raw:
            raise FormatError(path, "contains binary data (NUL bytes), not Choreography text")
        blank = blank and raw.isspace()
        if utf8_error is None and not raw.isascii():
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as err:
                utf8_error = FormatError(path, f"is not UTF-8 text (byte 0x{raw[err.start]:02x} "
                                               f"at offset {offset - start + err.start})")
        if utf8_error is not None or error is not None:
            continue  # only the byte checks matter now
        normalise = (_needs_normalising(raw) if normalise_all
                     else b"\r" in raw or b"\t" in raw)  # (cheap one-byte searches)
        data = _normalise_whitespace(raw) if normalise else raw
        # line ends, lengths and spaces per line, by numpy on the raw bytes
        codes = np.frombuffer(data, dtype=np.uint8)
        ends = np.flatnonzero(codes == 10)
        n_breaks = ends.size
        if data[-1:] not in (b"\n", b""):
            ends = np.append(ends, len(data))
        lengths = np.diff(ends, prepend=-1) - 1
        spaces = np.diff(np.searchsorted(np.flatnonzero(codes == 32), ends), prepend=0)
        nonblank = lengths > 0
        if nonblank.all():
            index = np.arange(ends.size)
        else:
            index = np.flatnonzero(nonblank)
            ends, lengths, spaces = ends[index], lengths[index], spaces[index]
        starts = ends - lengths
        line_numbers = index + (breaks + 1)
        breaks += n_breaks
        if index.size:
            if not prefix:
                first = data[starts[0]:ends[0]].split(b" ", 1)[0]
                date_time = first.decode("ascii", "replace")
                first_number = int(line_numbers[0])
                if not _DATE_TIME.match(date_time):
                    error = FormatError(path, f"line {first_number} starts with "
                                              f"{date_time[:30]!r}, not a date_time "
                                              "(YYYYMMDD_HHMMSS): not a Choreography file")
                    continue
                prefix = first + b" "
            good = lengths >= len(prefix)
            last = codes.size - 1
            for j, byte in enumerate(prefix):
                good &= codes[np.minimum(starts + j, last)] == byte
            if not good.all():
                i = int(np.argmin(good))
                error = _prefix_error(path, data[starts[i]:ends[i]], int(line_numbers[i]),
                                      date_time, first_number)
                continue
        chunks.append(_Chunk(offset, len(raw), normalise, rows, rows + index.size))
        counts.append(spaces + 1)
        numbers.append(line_numbers)
        rows += index.size
    if blank:  # (whitespace only, or nothing after a byte-order mark)
        raise FormatError(path, "is empty")
    if utf8_error is not None:
        raise utf8_error
    if error is not None:
        return _Scan(date_time, [], np.zeros(0, np.int64), np.zeros(0, np.int64), error)
    return _Scan(date_time, chunks, np.concatenate(counts), np.concatenate(numbers), None)


def _file_needs_normalising(path: Path, chunk_size: int) -> bool:
    """:func:`_needs_normalising` of the whole file (after any byte-order mark), by chunks."""
    try:
        with open(path, "rb") as handle:
            start = 3 if handle.read(3) == b"\xef\xbb\xbf" else 0
        return any(_needs_normalising(raw) for _, raw in _read_chunks(path, start, chunk_size))
    except (OSError, FormatError):
        return False


def _bad_token_line(path: Path, lines: list[bytes], rows: np.ndarray,
                    line_numbers: np.ndarray) -> FormatError:
    for row in rows:
        for token in lines[row].split()[1:]:
            if is_missing(token.decode("utf-8", "replace")):
                continue
            try:
                float(token)
            except ValueError:
                text = token.decode("utf-8", "replace")[:40]
                return FormatError(path, f"line {line_numbers[row]}: {text!r} is not a number")
    return FormatError(path, "unparsable numbers")  # pragma: no cover - loadtxt disagreed


def _parse(path: Path, fixed: bool, chunk_size: int | None = None,
           rank: np.ndarray | None = None) -> _Table:
    """Parse a ``.spine`` (``fixed``: same point count on every line) or ``.outline``.

    With ``rank`` (one entry per line), the ``i``-th non-blank line goes to row
    ``rank[i]`` (``placed``), which saves reordering a copy afterwards; it is
    ignored when the file has another number of lines.

    The file is read twice, ``chunk_size`` bytes at a time, so that only the
    returned arrays are ever held in full: a first pass checks the bytes and the
    line prefixes and counts the fields of each line, the second parses the numbers
    straight into arrays of the final size. The fast path assumes single spaces
    between fields (as Choreography writes them); on failure, files with other
    whitespace are normalised and parsed again.
    """
    chunk_size = int(chunk_size or _CHUNK_SIZE)
    scan = _scan(path, chunk_size, normalise_all=False)
    try:
        return _parse_numbers(path, scan, fixed, rank)
    except FormatError:
        if not _file_needs_normalising(path, chunk_size):
            raise
    return _parse_numbers(path, _scan(path, chunk_size, normalise_all=True), fixed, rank)


def _first(bad: np.ndarray, line_numbers: np.ndarray) -> int:
    """The row of the first line (in file order) where ``bad`` is set."""
    rows = np.flatnonzero(bad)
    return int(rows[np.argmin(line_numbers[rows])])


def _parse_numbers(path: Path, scan: _Scan, fixed: bool, rank: np.ndarray | None) -> _Table:
    """Second pass: check the field counts, then parse each chunk into the arrays."""
    if scan.error is not None:
        raise scan.error
    what = "spine" if fixed else "outline"
    counts, line_numbers = scan.counts, scan.line_numbers
    n = counts.size
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
    if rank is not None and rank.shape != (n,):
        rank = None
    infinite = False
    try:
        with open(path, "rb") as handle:
            for chunk in scan.chunks:
                if chunk.start == chunk.stop:
                    continue
                handle.seek(chunk.offset)
                data = handle.read(chunk.size)
                if len(data) != chunk.size:
                    raise FormatError(path, "changed while it was being read")
                if chunk.normalise:
                    data = _normalise_whitespace(data)
                lines = data.split(b"\n")
                del data
                if not lines[-1]:
                    lines.pop()
                if len(lines) != chunk.stop - chunk.start:
                    lines = [line for line in lines if line]  # blank lines
                    if len(lines) != chunk.stop - chunk.start:
                        raise FormatError(path, "changed while it was being read")
                infinite = _parse_lines(path, lines, chunk.start, counts[chunk.start:chunk.stop],
                                        line_numbers[chunk.start:chunk.stop], rank,
                                        ids, t, coords) or infinite
    except OSError as err:
        raise _read_error(path, err) from None
    if rank is not None:
        line_numbers = np.empty_like(line_numbers)
        line_numbers[rank] = scan.line_numbers

    unplaced = np.isnan(ids) | np.isnan(t)
    if unplaced.any():  # no larva id or no time: the row cannot be placed, it is dropped
        keep = ~unplaced
        ids, t, coords, line_numbers = ids[keep], t[keep], coords[keep], line_numbers[keep]
        if not keep.any():
            raise FormatError(path, "has no line with both a larva id and a time")
    finite_ids = np.isfinite(ids)
    bad = ~finite_ids | (ids < 0) | (ids != np.round(ids))
    if bad.any():
        i = _first(bad, line_numbers)
        raise FormatError(path, f"line {line_numbers[i]}: larva id {ids[i]:g} is not a "
                                "non-negative integer")
    bad = ~np.isfinite(t)
    if bad.any():
        i = _first(bad, line_numbers)
        raise FormatError(path, f"line {line_numbers[i]}: time {t[i]} is not a finite number")
    inf_rows = np.isinf(coords).any(axis=(1, 2)) if infinite else None
    if inf_rows is not None and inf_rows.any():
        i = _first(inf_rows, line_numbers)
        raise FormatError(path, f"line {line_numbers[i]}: infinite {what} coordinate")
    return _Table(scan.date_time, ids.astype(np.int64), t, coords, line_numbers,
                  placed=rank is not None, dropped=int(unplaced.sum()), has_nan=infinite)


_NA_TOKEN = re.compile(rb"(?<![^ ])[nN]/?[aA](?![^ \n])")


def _loadtxt(lines: list[bytes], count: int) -> np.ndarray:
    return np.loadtxt(lines, dtype=np.float64, usecols=range(1, count), delimiter=" ",
                      comments=None, ndmin=2)


def _parse_lines(path: Path, lines: list[bytes], first_row: int, counts: np.ndarray,
                 line_numbers: np.ndarray, rank: np.ndarray | None, ids: np.ndarray,
                 t: np.ndarray, coords: np.ndarray) -> bool:
    """Parse the lines of one chunk into rows ``first_row:`` of the arrays (or where
    ``rank`` puts them), lines with the same field count at once by
    :func:`numpy.loadtxt`'s C tokenizer; whether a value is not finite (NaN or
    infinite: one pass, which tells whether missing values need masking)."""
    width = coords.shape[1]
    if counts[0] == counts[-1] and (counts == counts[0]).all():
        groups = [(int(counts[0]), slice(first_row, first_row + len(lines)), lines)]
    else:
        order = np.argsort(counts, kind="stable")
        sorted_counts = counts[order]
        bounds = np.flatnonzero(np.diff(sorted_counts)) + 1
        groups = [(int(counts[rows[0]]), rows + first_row, [lines[i] for i in rows])
                  for rows in np.split(order, bounds)]
    infinite = False
    for count, rows, group in groups:
        if rank is not None:
            rows = rank[rows]
        try:
            values = _loadtxt(group, count)
        except ValueError:
            try:  # the slow path: ``na``/``NA``/``N/A`` missing-value tokens
                values = _loadtxt([_NA_TOKEN.sub(b"nan", line) for line in group], count)
            except ValueError:
                raise _bad_token_line(path, lines, range(len(lines)), line_numbers) from None
        ids[rows] = values[:, 0]
        t[rows] = values[:, 1]
        points = (count - 3) // 2
        coords[rows, :points] = values[:, 2:].reshape(len(values), points, 2)
        if points < width:
            coords[rows, points:] = np.nan
        infinite = infinite or not bool(np.isfinite(values).all())
    return infinite


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
    # (a ``placed`` outline was parsed straight into the spine's track order)
    ids, t = (spine.ids[order], spine.t[order]) if outline.placed else (spine.ids, spine.t)
    if (outline.ids.shape == ids.shape and np.array_equal(outline.ids, ids)
            and np.array_equal(outline.t, t)):
        return outline.coords if outline.placed else outline.coords[order]
    ms = np.round(outline.t * 1000).astype(np.int64)
    keys = (outline.ids << 40) + ms
    if outline.placed:  # rows with equal keys in file order, as below
        sorter = np.lexsort((outline.line_numbers, keys))
    else:
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
    # gather straight into the result (mode="clip": no buffered copy of it), then blank
    result = np.empty((wanted.size,) + outline.coords.shape[1:], dtype=np.float32)
    np.take(outline.coords, np.where(found, sorter[pos], 0), axis=0, out=result, mode="clip")
    result[~found] = np.nan
    return result


_IGNORED_OPTIONS = ("framerate", "pixelsize", "verify")  # the CLI's reader options: the files
# state their times (s) and coordinates (mm), so these are meaningless here


def read_chore(path: str | os.PathLike, *, outline: bool = True, **options) -> Run:
    """Read a Choreography ``.spine`` + ``.outline`` pair into a :class:`Run`.

    Args:
        path: the ``.spine``, the ``.outline`` (its ``.spine`` partner is read
            too), or a directory holding exactly one pair.
        outline: read the ``.outline`` partner (default). Its absence is then a
            :class:`FormatError` ("missing .outline partner ..."). With
            ``False`` only the spine is read and ``run.outline`` is ``None``.
        options: ``framerate``, ``pixelsize`` and ``verify`` (the command line's
            reader options) are accepted and ignored: the files state times in
            seconds and coordinates in mm. Others are accepted only when ``None``.

    Raises:
        FormatError: naming the file and the problem, for every bad input:
            missing/empty/binary/non-UTF-8 files, lines that do not start with
            the date_time, ragged spine lines, non-numeric fields, duplicated
            or decreasing times within a larva, larvae whose spine is all NaN.
    """
    _check_options("read_chore", {k: v for k, v in options.items() if k not in _IGNORED_OPTIONS})
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
    spine.coords = None  # (a copy when rows were reordered: free the file-order one)
    if spine.has_nan:  # a missing coordinate: a missing step (NaN spine, time kept)
        mask_incomplete_spines(coords)
    present = ~np.isnan(coords).all(axis=(1, 2))
    per_track = np.add.reduceat(present.astype(np.int64), offsets[:-1])
    if np.any(per_track == 0):
        larva = int(larva_ids[np.flatnonzero(per_track == 0)[0]])
        raise FormatError(spine_path, f"larva {larva} has no spine data (all values NaN)")
    contour = None
    if outline_path is not None:
        rank = None  # where each spine line went; the outline's usually go to the same rows
        if not isinstance(order, slice):
            rank = np.empty_like(order)
            rank[order] = np.arange(order.size)
        outline_table = _parse(outline_path, fixed=False, rank=rank)
        contour = _match_outlines(outline_path, spine, order, outline_table)
        if outline_table.has_nan:  # (padding NaNs alone make no holes)
            mask_holed_outlines(contour)
        del outline_table
    metadata = parse_chore_filename(spine_path.name)
    metadata["date_time"] = spine.date_time
    metadata["masked"] = {"missing": int((~present).sum()) + spine.dropped}
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
