"""``export``: tags as tables (CSV, Parquet), trx.mat flag fields or NWB epochs."""

from __future__ import annotations

from pathlib import Path
from typing import List

import typer

from ..errors import TaggingError
from .app import app, say, warn
from .options import Overwrite, Verify, refuse_existing


@app.command()
def export(
    inputs: List[Path] = typer.Argument(..., metavar="LABELS...",
                                        help="Label files, or directories of them (*.label)."),
    to: str = typer.Option(..., "--to", help="csv, parquet (a table of all inputs), trxmat or nwb (one "
                                             "file per run)."),
    output: str = typer.Option(..., "--output", "-o",
                               help="Output file; for trxmat/nwb with several runs a template with "
                                    "{dir}, {stem}, {run} (e.g. '{dir}/{run}.nwb')."),
    table: str = typer.Option("steps", "--table", help="csv/parquet: steps, bouts or summary."),
    overwrite: Overwrite = False,
    verify: Verify = True,
) -> None:
    """Export tags for analyses: a steps, bouts or summary table (CSV, Parquet), the tracking
    trx.mat with one ±1 flag field per behaviour (for MATLAB), or NWB behaviour epochs.

    Steps tables hold every class probability of the `<stem>.probabilities.h5` sidecar
    that `predict` writes beside the label file.

    Example: tagging-backend export demo/predicted.label --to parquet --table bouts -o demo/bouts.parquet
    """
    from ..data.predicted import read_label_inputs
    from ..export import FORMATS, TABLE_FORMATS, TABLES, build_table, table_provenance, write_table

    if to not in FORMATS:
        raise typer.BadParameter(f"choose one of {', '.join(FORMATS)}", param_hint="--to")
    if table not in TABLES:
        raise typer.BadParameter(f"choose one of {', '.join(TABLES)}", param_hint="--table")
    if to in TABLE_FORMATS:
        path = Path(output)
        refuse_existing(path, overwrite)
        items = read_label_inputs(inputs, verify=verify)
        result = build_table(table, items)
        write_table(result, path, to, table_provenance("export", items, table=table, to=to), overwrite)
        say(f"wrote {path} ({table} table, {result.num_rows} rows, {len(items)} run(s))")
        return
    if table != "steps":
        raise typer.BadParameter(f"--to {to} writes every step or bout of a run; --table is for csv/parquet",
                                 param_hint="--table")
    _export_runs(inputs, to, output, overwrite, verify)


def _export_runs(inputs: List[Path], to: str, template: str, overwrite: bool, verify: bool) -> None:
    """trx.mat or NWB: one output per run, every output checked before any is written."""
    from ..data.predicted import read_label_inputs
    from ..export import export_nwb, export_trxmat, run_outputs, table_provenance, trxmat_preflight

    items = read_label_inputs(inputs, verify=verify)
    if not items:
        raise TaggingError("no runs in " + ", ".join(map(str, inputs)))
    outputs = run_outputs(items, template)
    for item, out in zip(items, outputs):
        refuse_existing(out, overwrite)
        if to == "trxmat":
            trxmat_preflight(item)
    for item, out in zip(items, outputs):
        record = table_provenance("export", [item], to=to)
        if to == "trxmat":
            for message in export_trxmat(item, out, record, overwrite=overwrite, verify=verify):
                warn(message)
            say(f"wrote {out} (run {item.run_id}, {len(item.labels)} larvae, flags from {item.path.name})")
        else:
            epochs = export_nwb(item, out, record, overwrite=overwrite)
            say(f"wrote {out} (run {item.run_id}, {epochs} behaviour epochs)")
