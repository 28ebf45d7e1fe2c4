"""``merge``: manual edits into automatic labels (as ``larvatagger.jl merge``)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .app import app, provenance, say
from .options import Decode, Overwrite, Verify, refuse_existing


@app.command()
def merge(
    predicted: Path = typer.Argument(..., metavar="PREDICTED", help="Automatic labels (e.g. predicted.label)."),
    manual: Path = typer.Argument(..., metavar="MANUAL", help="Labels holding manual edits."),
    output: Optional[Path] = typer.Argument(None, metavar="[OUTPUT]",
                                            help="Default: PREDICTED's directory, merged.label."),
    manual_label: str = typer.Option("edited", "--manual-label",
                                     help="Secondary label that marks a manually edited step."),
    decode: Decode = False,
    overwrite: Overwrite = False,
    verify: Verify = True,
) -> None:
    """Merge manually edited steps into automatic labels (as `larvatagger.jl merge`).

    Every step of MANUAL that carries the manual label (default `edited`) replaces the
    automatic label at the same time; tracks only in MANUAL are copied over.
    Example: tagging-backend merge demo/predicted.label demo/groundtruth.label demo/merged.label
    """
    from ..data.labels import Labels, is_edited

    automatic = Labels.load(predicted, verify=verify)
    edits = Labels.load(manual, verify=verify)
    output = output or predicted.parent / "merged.label"
    refuse_existing(output, overwrite)
    merged = automatic.merge(edits, predicate=lambda entry: is_edited(entry, manual_label))
    n_edited = sum(is_edited(e, manual_label) for track in edits.tracks.values() for e in track.labels)
    merged.metadata["provenance"] = provenance("merge", predicted=str(predicted), manual=str(manual),
                                               manual_label=manual_label)
    merged.dump(output, encode=not decode, overwrite=overwrite)
    say(f"wrote {output} ({n_edited} edited steps of {manual.name} merged into {predicted.name})")
