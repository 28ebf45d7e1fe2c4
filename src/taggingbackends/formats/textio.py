"""Shared reading of text-based tracking formats (Choreography, FIMTrack, Schleyer CSV).

Labs write these files in many small variations; every text reader accepts the
same ones, defined here once (documented in ``docs/formats.md``):

* **bytes**: :func:`read_text_bytes` turns every way a text file can be unusable
  (a directory, unreadable, empty, UTF-16, binary, not UTF-8) into one
  :class:`FormatError` naming the file; a UTF-8 byte-order mark is dropped.
* **line ends**: ``\\n``, ``\\r\\n`` and old-Mac ``\\r`` alike; a missing final
  line break is fine (:func:`decode_lines`).
* **missing values**: a field that is empty or holds ``na``, ``NA``, ``NaN``,
  ``nan``, ``-nan``, ``+nan`` or ``N/A`` (any case), padded with spaces or not,
  is a missing value (NaN) (:func:`float_rows`).
* **separators** of the comma-separated formats: ``,`` as the trackers write
  them; ``;`` with decimal commas and tab, as a spreadsheet re-saves them in a
  European locale or as "tab-delimited text" (:func:`sniff_delimiter`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import FormatError

_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
UTF8_BOM = b"\xef\xbb\xbf"
MISSING_TOKENS = ("", "na", "n/a", "nan", "-nan", "+nan")  # compared stripped, lower-cased
DELIMITERS = (",", ";", "\t")


def read_text_bytes(path: Path, what: str) -> bytes:
    """The bytes of a text file (UTF-8 BOM removed), checked to be non-empty UTF-8 text.

    ``what`` names the expected content in messages, e.g. ``"a FIMTrack table.csv file"``.
    """
    if path.is_dir():
        raise FormatError(path, f"is a directory, expected {what}")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise FormatError(path, f"cannot be read: {err.strerror or err}") from None
    if data.startswith(_UTF16_BOMS):
        raise FormatError(path, f"is UTF-16 text, expected {what} in ASCII/UTF-8")
    if data.startswith(UTF8_BOM):
        data = data[len(UTF8_BOM):]
    if not data or data.isspace():  # (strip() would copy the whole file)
        raise FormatError(path, "is empty")
    if b"\x00" in data:
        raise FormatError(path, f"contains binary data (NUL bytes), expected {what}")
    if not data.isascii():
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise FormatError(path, f"is not UTF-8 text (byte 0x{data[err.start]:02x} at offset "
                                    f"{err.start})") from None
    return data


def decode_lines(path: Path, what: str) -> list[str]:
    """The lines of a text file (any line ends; trailing blank lines dropped)."""
    text = read_text_bytes(path, what).decode("utf-8")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def head_text(path: Path, size: int = 8192) -> str | None:
    """The first ``size`` bytes of a file as text (BOM dropped, a character cut at the
    end dropped), or None if they are not UTF-8 text. For cheap format detection."""
    with open(path, "rb") as handle:
        head = handle.read(size)
    if head.startswith(UTF8_BOM):
        head = head[len(UTF8_BOM):]
    if b"\x00" in head:
        return None
    try:
        return head.decode("utf-8")
    except UnicodeDecodeError as err:
        if len(head) + len(UTF8_BOM) >= size and err.start >= len(head) - 3:
            return head[:err.start].decode("utf-8", errors="replace")
        return None


def first_line(text: str) -> str:
    """The first line of ``text``, whatever its line end."""
    return re.split(r"\r\n|\r|\n", text, maxsplit=1)[0]


def sniff_delimiter(line: str) -> str:
    """The field separator of a comma-separated format from its first line: ``;`` if
    the line has one (a spreadsheet re-save in a locale with decimal commas), tab if
    it has at least as many tabs as commas ("tab-delimited text", whose commas can
    only be decimal commas), else ``,``."""
    if ";" in line:
        return ";"
    tabs = line.count("\t")
    if tabs and tabs >= line.count(","):
        return "\t"
    return ","


def to_comma_separated(text: str, delimiter: str) -> str:
    """Text of a ``;``- or tab-separated variant rewritten with commas; its commas are
    decimal commas (the locales that write these variants use them) and become points."""
    if delimiter == ",":
        return text
    return text.replace(",", ".").replace(delimiter, ",")


def is_missing(field: str) -> bool:
    """Whether one field is a missing-value token (empty, na, NaN, -nan, ...)."""
    return field.strip().strip('"').lower() in MISSING_TOKENS


_MISSING_FIELD = re.compile(r"(^|,)[ \t]*(?:n/?a|[-+]?nan)?[ \t]*(?=,|$)", re.MULTILINE | re.IGNORECASE)


def normalise_missing(block: str) -> str:
    """Comma-separated lines with every missing-value field written ``nan``."""
    return _MISSING_FIELD.sub(r"\1nan", block)


def float_rows(path: Path, rows: Sequence[str], n_columns: int,
               describe: Callable[[int, int], str]) -> np.ndarray:
    """``(len(rows), n_columns)`` float64 from comma-separated ``rows`` (extra fields
    beyond ``n_columns`` are ignored); missing-value fields are NaN.

    The fast path hands the rows as they are to numpy's C tokenizer, which parses
    ``nan``/``NaN``/``-nan`` itself; only if that fails are the other missing-value
    tokens (empty, ``na``, ``NA``, padded) rewritten, and then, if a field is still
    not a number, the first such field is found and reported as
    ``describe(row, column)`` (``"line 12, column 3"``): ``... 'x' is not a number``.
    """
    if not rows:
        return np.zeros((0, n_columns))
    try:
        return _loadtxt(rows, n_columns)
    except ValueError:
        pass
    fixed = normalise_missing("\n".join(rows)).split("\n")
    try:
        return _loadtxt(fixed, n_columns)
    except ValueError:
        pass
    for r, row in enumerate(rows):
        for c, cell in enumerate(row.split(",")[:n_columns]):
            if is_missing(cell):
                continue
            try:
                float(cell)
            except ValueError:
                raise FormatError(path, f"{describe(r, c)}: {cell.strip()[:30]!r} is not a "
                                        "number") from None
    raise FormatError(path, "has fields that cannot be parsed as numbers")  # pragma: no cover


def _loadtxt(rows: Sequence[str], n_columns: int) -> np.ndarray:
    import warnings

    with warnings.catch_warnings():  # (numpy warns about empty input; rows are never empty)
        warnings.simplefilter("ignore")
        table = np.loadtxt(rows, dtype=np.float64, delimiter=",", comments=None,
                           usecols=range(n_columns), ndmin=2)
    if table.shape != (len(rows), n_columns):
        raise ValueError("shape")
    return table


def mask_incomplete_spines(spine: np.ndarray) -> np.ndarray:
    """Set every step whose spine has a missing coordinate wholly missing (in place);
    return the mask of the steps that were partly present (now masked)."""
    nan = np.isnan(spine)
    partial = nan.any(axis=(1, 2)) & ~nan.all(axis=(1, 2))
    spine[partial] = np.nan
    return partial


def mask_holed_outlines(outline: np.ndarray) -> None:
    """Set an outline wholly missing (in place) where a missing vertex precedes a
    present one: outlines are NaN-padded at the end only."""
    valid = ~np.isnan(outline).any(axis=2)
    holed = (valid[:, 1:] & ~valid[:, :-1]).any(axis=1)
    outline[holed] = np.nan
