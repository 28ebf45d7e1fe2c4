"""The ``tagging-backend`` command line (typer + rich), one module per command or group.

- :mod:`.app`: the typer app, consoles, ``--debug``/``--quiet`` state, provenance;
- :mod:`.options`: options shared by several commands (reader options, output templates,
  overwrite guards, input discovery, progress bars);
- one module per command group: :mod:`.info`, :mod:`.importing`, :mod:`.simulate`,
  :mod:`.predict`, :mod:`.train`, :mod:`.merge`, :mod:`.projects` (backends, new),
  :mod:`.evaluate`, :mod:`.export`, :mod:`.report`, :mod:`.review`, :mod:`.view` (view, retrain),
  :mod:`.adapt`.

Errors caused by the user's input print one line, ``error: <file>: <problem>``,
and exit with status 1 (2 for usage errors); ``--debug`` shows the traceback.
"""

from __future__ import annotations

import sys
from typing import List, Optional

from ..errors import TaggingError
from .app import app, console, err_console, provenance, say, state
from . import (info, importing, simulate, predict, train, merge, projects,  # noqa: F401
               evaluate, export, report, review, view, adapt)  # (register commands)
from .simulate import write_simulation

__all__ = ["app", "main", "console", "err_console", "provenance", "say", "state", "write_simulation"]

_GLOBAL_FLAGS = ("--debug", "--quiet", "-q")


def _hoist_global_flags(args: List[str]) -> List[str]:
    """Upstream passes ``--debug`` after the command (``tagging-backend train --debug``):
    global flags are accepted anywhere and moved before the command."""
    flags = [a for a in args if a in _GLOBAL_FLAGS]
    return flags + [a for a in args if a not in _GLOBAL_FLAGS]


def _exit_cleanly_on_sigterm() -> None:
    """SIGTERM (a batch scheduler's first signal, `kill`'s default) raises SystemExit,
    so that temporary files are removed on the way out and no partial output remains."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def main(argv: Optional[List[str]] = None) -> None:
    """Console-script entry point: run the app, turning user errors into one line."""
    args = _hoist_global_flags(list(sys.argv[1:] if argv is None else argv))
    _exit_cleanly_on_sigterm()
    try:
        app(args=args, prog_name="tagging-backend")
    except TaggingError as err:
        if state.debug:
            raise
        err_console.print(f"[red]error:[/red] {err}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except OSError as err:
        if state.debug:
            raise
        where = f"{err.filename}: " if err.filename else ""
        err_console.print(f"[red]error:[/red] {where}{err.strerror or err}", highlight=False, soft_wrap=True)
        sys.exit(1)
