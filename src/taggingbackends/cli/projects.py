"""``backends`` (installed plug-ins, the project here) and ``new`` (a backend project in
upstream's template layout, with a working example tagger)."""

from __future__ import annotations

from pathlib import Path

import typer

from rich.table import Table

from .app import app, console, say


@app.command()
def new(
    name: str = typer.Argument(..., metavar="NAME", help="Project name, e.g. My-Tagger (package my_tagger)."),
    parent: Path = typer.Option(Path("."), "--in", help="Directory to create the project in."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing project directory."),
) -> None:
    """Create a backend project (upstream's template layout) with a working example tagger.

    Example: tagging-backend new My-Tagger && cd My-Tagger  (then see its README.md)
    """
    from ..newproject import create_project

    path = create_project(name, parent, overwrite=overwrite)
    say(f"created {path}: put labelled data in data/raw/<instance>/, then run "
        "`tagging-backend train --model-instance <instance>` there")


@app.command()
def backends() -> None:
    """List the installed backend plug-ins, and the backend project in the current directory.

    Third-party backends register a module under the entry-point group
    `taggingbackends.backends`; projects made by `tagging-backend new` run their own scripts.
    Example: tagging-backend backends
    """
    from ..backends import installed
    from ..explorer import SCRIPTS, BackendExplorer, is_backend_project

    table = Table(title="installed backends")
    for column in ("name", "module", "distribution", "version"):
        table.add_column(column)
    for name, entry in sorted(installed().items()):
        dist = entry.dist
        table.add_row(name, entry.value, dist.name if dist else "?", dist.version if dist else "?")
    console.print(table)
    here = Path.cwd()
    if is_backend_project(here):
        explorer = BackendExplorer(here)
        scripts = [step for step in SCRIPTS if explorer.script(step) is not None]
        console.print(f"backend project here: {explorer.project_name} (scripts: {', '.join(scripts) or 'none'}; "
                      f"model instances: {', '.join(explorer.list_model_instances()) or 'none'})")
