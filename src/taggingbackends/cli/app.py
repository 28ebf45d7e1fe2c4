"""The typer application, its consoles and global state, shared by every command module.

Command modules register themselves on :data:`app` when imported (see ``__init__``).
"""

from __future__ import annotations

import datetime as _dt

import typer
from rich.console import Console

from .. import __version__

app = typer.Typer(
    name="tagging-backend",
    help="Automatic behaviour tagging of Drosophila larva tracking data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
console = Console()
err_console = Console(stderr=True)


class _State:
    debug: bool = False
    quiet: bool = False


state = _State()


def no_progress_bars() -> bool:
    """Progress bars only on a terminal (logs and pipes get the summary lines alone)."""
    return state.quiet or not console.is_terminal


def larva_count(n: int) -> str:
    """``1 larva``, ``3 larvae``."""
    return f"{n} larva" if n == 1 else f"{n} larvae"


def say(message: str) -> None:
    """Print a progress or summary line unless ``--quiet``."""
    if not state.quiet:
        console.print(message)


def warn(message: str) -> None:
    """Print a one-line warning on stderr (shown even with ``--quiet``)."""
    err_console.print(f"[yellow]warning:[/yellow] {message}", highlight=False, soft_wrap=True)


def _version_callback(value: bool) -> None:
    if value:
        console.print(f"tagging-backend {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True,
                                 help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print errors only."),
) -> None:
    """Tag every time step of every larva with a behaviour; read and convert tracking files."""
    state.debug = debug
    state.quiet = quiet
    _show_reader_warnings()


def _show_reader_warnings() -> None:
    """Readers' :class:`AssumedValueWarning` (e.g. FIMTrack's assumed frame rate) as one
    ``warning:`` line each; other warnings as Python shows them."""
    import warnings

    from ..errors import AssumedValueWarning

    original = warnings.showwarning
    if getattr(original, "_tagging_backend", False):
        return

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, AssumedValueWarning):
            warn(str(message))
        else:
            original(message, category, filename, lineno, file, line)

    show._tagging_backend = True  # type: ignore[attr-defined]
    warnings.showwarning = show
    warnings.simplefilter("always", AssumedValueWarning)


def provenance(command: str, **extra) -> dict:
    """What made an output: tool, version, command, UTC date (inputs are in dependencies)."""
    record = {"software": "taggingbackends", "version": __version__, "command": command,
              "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()}
    record.update({k: v for k, v in extra.items() if v is not None})
    return record
