"""``report``: one self-contained HTML page of plots and tables for labels and evaluations."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .app import app, provenance, say
from .options import Overwrite, Verify, refuse_existing


@app.command()
def report(
    inputs: List[Path] = typer.Argument(..., metavar="INPUT...",
                                        help="Label files (predicted or manual), directories of them, "
                                             "and/or evaluation JSON files (`evaluate --json`)."),
    output: Path = typer.Option(..., "--output", "-o", help="HTML file to write."),
    title: str = typer.Option("Behaviour report", "--title", help="Page title."),
    bin_s: Optional[float] = typer.Option(None, "--bin", min=0.001,
                                          help="Time bin of the behaviour-over-time plot in seconds "
                                               "(default: a round width giving about 120 bins)."),
    overwrite: Overwrite = False,
    verify: Verify = True,
) -> None:
    """Write one self-contained HTML page (embedded PNG plots, no network needed): ethogram,
    behaviour fractions over time with 95 % bands, time budget, bout durations, transitions;
    for an evaluation JSON the confusion matrix, per-class bars and every figure as tables.

    Example: tagging-backend report demo/predicted.label -o demo/report.html
    """
    from ..fileio import atomic_write_text
    from ..report import build_report, read_report_inputs

    refuse_existing(output, overwrite)
    found = read_report_inputs(inputs, verify=verify)
    record = provenance("report", inputs=[str(p) for p in inputs], bin_s=bin_s)
    page = build_report(found, title=title, bin_s=bin_s, provenance=record)
    atomic_write_text(output, page, overwrite=overwrite)
    say(f"wrote {output} ({len(found.runs)} run(s), {len(found.evaluations)} evaluation(s), "
        f"{len(page) // 1024} KiB)")
