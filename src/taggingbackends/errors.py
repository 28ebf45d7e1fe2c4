"""Exceptions that carry a one-line, user-facing message.

Every error raised because of a user's file derives from :class:`TaggingError`
and names the file and the problem, so the command line can print
``error: <file>: <problem>`` without a traceback (unless ``--debug``).
"""

from __future__ import annotations

import os
from pathlib import Path


class TaggingError(Exception):
    """Base class of errors caused by user input (files, options)."""


class FormatError(TaggingError):
    """A file cannot be read: wrong format, truncated, inconsistent content.

    ``path`` is the offending file and ``problem`` a short phrase saying what is
    wrong; ``str(err)`` is ``"<path>: <problem>"``.
    """

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = Path(path) if path is not None else None
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path is not None else problem)


class UnknownFormatError(FormatError):
    """No registered reader recognises the file."""


class ValidationError(TaggingError):
    """In-memory data violate the data model (shapes, times, values)."""


class DependencyError(FormatError):
    """A `.label` file's dependency is missing or its SHA-1 differs."""


class OutputExistsError(TaggingError):
    """Refusing to overwrite an existing output file without an explicit flag."""


def one_line(err: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (its type name if empty), shortened."""
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:limit]


class AssumedValueWarning(UserWarning):
    """A reader assumed a value its file does not state (FIMTrack's frame rate, ...).

    The message is one line naming the file, the value assumed and the option that
    sets it; the command line prints it as ``warning: ...`` (see ``cli.app``).
    """
