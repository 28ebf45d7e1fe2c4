"""The format registry: what each tracking format is called, how it is
recognised, and which functions read and write it.

Detection (``is_format``) is kept apart from parsing (``read``), as in the
``movement`` package: detectors are cheap, never raise, and look at content
signatures (SPEC §3.1), not only at suffixes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from ..data.tracks import Run


@dataclass(frozen=True)
class FormatSpec:
    """One supported format.

    Attributes:
        name: registry key, used by ``--format``.
        description: one line for ``tagging-backend formats``.
        suffixes: file suffixes the format uses (informative; detection is by content).
        detection: how ``is_format`` recognises a file, in words.
        is_format: cheap content check, ``True`` if ``read`` should accept the path.
        read: ``read(path, **options) -> Run``; raises FormatError on bad input.
        write: ``write(run, path, **options)`` or ``None`` if read-only.
        reads_directory: whether ``read`` takes a directory.
    """

    name: str
    description: str
    suffixes: tuple[str, ...]
    detection: str
    is_format: Callable[[Path], bool]
    read: Callable[..., Run]
    write: Optional[Callable[..., None]] = None
    reads_directory: bool = False


_REGISTRY: dict[str, FormatSpec] = {}


def register(spec: FormatSpec) -> FormatSpec:
    """Add a format to the registry (later registrations replace earlier ones)."""
    _REGISTRY[spec.name] = spec
    return spec


def formats() -> list[FormatSpec]:
    """Registered formats, in detection order."""
    return list(_REGISTRY.values())


def get_format(name: str) -> FormatSpec:
    """The format called ``name``; ValueError listing the known names otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise ValueError(f"unknown format {name!r} (known: {known})") from None


def as_path(path: str | os.PathLike) -> Path:
    return Path(os.fspath(path))
