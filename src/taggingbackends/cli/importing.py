"""``import`` (a .label for a tracking file) and ``convert`` (change tracking format)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import TaggingError
from .app import app, larva_count, provenance, say
from .options import (Decode, Framerate, InputFormat, LABEL_INPUT_SUFFIXES, Overwrite, Pixelsize, Verify,
                      reader_options, refuse_existing)


@app.command("import")
def import_(
    input_path: Path = typer.Argument(..., metavar="INPUT", help="Tracking file or directory (or a .label)."),
    output: Optional[Path] = typer.Argument(None, metavar="[OUTPUT]",
                                            help="Label file to write (default: INPUT_DIR/STEM.label)."),
    format: InputFormat = "auto",
    run_id: Optional[str] = typer.Option(None, "--id", help="Run id to write (default: from the file)."),
    framerate: Framerate = None,
    pixelsize: Pixelsize = None,
    default_label: Optional[str] = typer.Option(
        None, "--default-label", help="Label for untagged steps (default: 'new behavior' when the "
                                      "file has no tags, else unlabelled)."),
    manual_label: Optional[str] = typer.Option(
        None, "--manual-label", help="Secondary label appended to every imported tag (e.g. edited)."),
    decode: Decode = False,
    overwrite: Overwrite = False,
    verify: Verify = True,
) -> None:
    """Make a .label file for a tracking file, with its tags when it has any
    (e.g. trx.mat behaviour flags), else a default label (as `larvatagger import`).

    Example: tagging-backend import tests/data/chore/20150701_105504@FCF@UAS@t15@r#n#n#n@100.spine
    """
    from ..data.labels import Labels
    from ..data.tracks import masked_counts, run_summary
    from ..formats import load

    run = load(input_path, format=format, **reader_options(framerate, pixelsize, verify))
    output = output or default_label_path(input_path)
    refuse_existing(output, overwrite)
    tracking = [p for p in run.source if p.suffix.lower() not in LABEL_INPUT_SUFFIXES]
    has_tags = bool(run.tag_names)
    default = default_label if default_label is not None else (None if has_tags else "new behavior")
    labels = Labels.from_run(run, default_label=default, tracking=tracking)
    if run_id is not None:
        labels.run_id = run_id
    if manual_label:
        labels.append_label(manual_label)
    summary = run_summary(run)
    labels.metadata["provenance"] = provenance("import", summary=summary, masked=masked_counts(run))
    labels.dump(output, encode=not decode, overwrite=overwrite)
    say(f"wrote {output} ({summary}; "
        f"{'tags: ' + ', '.join(labels.used_names()) if has_tags else 'label: ' + str(default)})")


def default_label_path(input_path: Path) -> Path:
    """``dir/stem.label`` beside a tracking file; ``dir/dir.label`` inside a directory run."""
    if input_path.is_dir():
        return input_path / f"{input_path.name}.label"
    stem = input_path.name.split(".")[0] if input_path.suffix else input_path.name
    return input_path.with_name(f"{stem}.label")


@app.command()
def convert(
    input_path: Path = typer.Argument(..., metavar="INPUT", help="Tracking file or directory."),
    output: Path = typer.Argument(..., metavar="OUTPUT", help="File (or directory for schleyer) to write."),
    to: Optional[str] = typer.Option(None, "--to", help="Output format (default: from OUTPUT's suffix)."),
    format: InputFormat = "auto",
    framerate: Framerate = None,
    pixelsize: Pixelsize = None,
    overwrite: Overwrite = False,
) -> None:
    """Convert a tracking file to another format (trxmat, chore, fimtrack, schleyer).

    Example: tagging-backend convert run.spine run_trx.mat
    """
    from ..formats import load, save

    refuse_existing(output, overwrite)
    run = load(input_path, format=format, **reader_options(framerate, pixelsize))
    try:
        save(run, output, format=to)
    except ValueError as err:
        raise TaggingError(str(err)) from err
    say(f"wrote {output} ({larva_count(run.n_tracks)}, {run.n_steps} steps)")
