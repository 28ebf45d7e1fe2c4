"""Tracking-file formats: one module per format, one registry, one ``load``.

>>> from taggingbackends.formats import load
>>> run = load("trx.mat")            # format detected from the content
>>> run = load("dir/", format="schleyer")

Readers registered here (detection order): ``label`` (a `.label` file
resolved through its tracking dependency), ``trxmat`` (MATLAB v7.3 and v5/v7),
``chore`` (Choreography ``.spine`` + ``.outline``), ``fimtrack`` (FIMTrack v2
``table.csv``), ``schleyer`` (Schleyer-lab per-larva CSV files).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..data.tracks import Run
from ..errors import FormatError, TaggingError, UnknownFormatError, one_line
from .registry import FormatSpec, as_path, formats, get_format, register

__all__ = ["FormatSpec", "load", "save", "detect", "formats", "get_format", "register"]


def _register_builtin() -> None:
    from . import chore, fimtrack, labelfile, schleyer, trxmat

    for module in (labelfile, trxmat, chore, fimtrack, schleyer):
        register(module.SPEC)


def detect(path: str | os.PathLike) -> FormatSpec:
    """The format of ``path``, from its content; UnknownFormatError if none fits."""
    path = as_path(path)
    if not path.exists():
        raise FormatError(path, "no such file or directory")
    for spec in formats():
        try:
            if spec.is_format(path):
                return spec
        except Exception:  # a detector must never break detection
            continue
    if path.is_dir():
        raise UnknownFormatError(path, "is a directory with no recognised tracking data "
                                       "(expected Schleyer CSV files or one .spine/.outline pair)")
    if path.stat().st_size == 0:
        raise UnknownFormatError(path, "is empty")
    suffixes = ", ".join(sorted({s for spec in formats() for s in spec.suffixes}))
    raise UnknownFormatError(path, f"not a recognised tracking or label file (supported: {suffixes}; "
                                   "see `tagging-backend formats`)")


def load(path: str | os.PathLike, format: str = "auto", **options) -> Run:
    """Read a tracking file (or directory) into a :class:`Run`.

    ``format="auto"`` detects the format from the file content; an explicit
    registry name overrides detection. Any problem with the input raises a
    :class:`FormatError` naming the file and the problem.
    """
    path = as_path(path)
    if not path.exists():
        raise FormatError(path, "no such file or directory")
    spec = detect(path) if format == "auto" else get_format(format)
    try:
        return spec.read(path, **options)
    except TaggingError as err:
        if isinstance(err, FormatError):
            raise
        raise FormatError(path, str(err)) from err
    except (OSError, ValueError, KeyError, IndexError, TypeError, UnicodeDecodeError) as err:
        raise FormatError(path, f"cannot be read as {spec.name}: {one_line(err)}") from err


def save(run: Run, path: str | os.PathLike, format: str | None = None, **options) -> None:
    """Write ``run`` to ``path`` in ``format`` (default: guessed from the suffix)."""
    path = as_path(path)
    spec = get_format(format) if format else _format_for_suffix(path)
    if spec.write is None:
        raise ValueError(f"format {spec.name} cannot be written")
    spec.write(run, path, **options)


def _format_for_suffix(path: Path) -> FormatSpec:
    name = path.name.lower()
    for spec in formats():
        if spec.write is not None and any(name.endswith(s) for s in spec.suffixes):
            return spec
    raise ValueError(f"{path}: cannot tell the output format from the suffix; pass format=")


_register_builtin()
