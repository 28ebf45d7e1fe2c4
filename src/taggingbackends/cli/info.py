"""``info`` and ``formats``: what is installed and what it reads."""

from __future__ import annotations

import platform
from importlib import metadata as _metadata

from rich.table import Table

from .. import __version__
from .app import app, console

_KEY_DEPENDENCIES = ("numpy", "scipy", "h5py", "typer", "rich", "torch", "scikit-learn",
                     "safetensors", "dask", "distributed")


@app.command()
def info() -> None:
    """Versions of the package, Python and key dependencies (torch is not imported).

    Example: tagging-backend info
    """
    table = Table(title="tagging-backend", show_header=True)
    table.add_column("component")
    table.add_column("version")
    table.add_row("taggingbackends", __version__)
    table.add_row("python", platform.python_version())
    table.add_row("platform", platform.platform())
    for name in _KEY_DEPENDENCIES:
        try:
            version = _metadata.version(name)
        except _metadata.PackageNotFoundError:
            version = "not installed"
        table.add_row(name, version)
    console.print(table)


@app.command()
def formats() -> None:
    """Supported tracking/label formats, their suffixes and how each is detected.

    Example: tagging-backend formats
    """
    from ..formats import formats as registered

    table = Table(show_header=True, show_lines=True)
    for column in ("format", "suffixes", "detected by", "read", "write", "description"):
        table.add_column(column)
    for spec in registered():
        table.add_row(spec.name, " ".join(spec.suffixes) + (" (directory)" if spec.reads_directory else ""),
                      spec.detection, "yes", "yes" if spec.write else "no", spec.description)
    console.print(table)
