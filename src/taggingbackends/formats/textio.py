"""Shared checks for text-based tracking formats (Choreography, FIMTrack, Schleyer CSV).

:func:`read_text_bytes` turns every way a text file can be unusable (a
directory, unreadable, empty, UTF-16, binary, not UTF-8) into one
:class:`FormatError` naming the file, so each reader only parses.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import FormatError

_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_UTF8_BOM = b"\xef\xbb\xbf"


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
    if data.startswith(_UTF8_BOM):
        data = data[len(_UTF8_BOM):]
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
