"""``evaluate``: score predicted labels against true ones (files or a model instance)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import List, Optional

import typer

from ..errors import TaggingError
from .app import app, console, provenance, say, state
from .options import Overwrite, refuse_existing

_PRIORS_HELP = ("With --model-instance: class priors for prediction (natural, uniform, none or a JSON "
                "file; default: the predict command's).")


@app.command()
def evaluate(
    inputs: List[Path] = typer.Argument(..., metavar="PREDICTED...|DATA...",
                                        help="Predicted label files or directories of them; with "
                                             "--model-instance, true label files (or directories) "
                                             "whose tracking files are tagged first."),
    truth: Optional[List[Path]] = typer.Option(None, "--truth", "-t",
                                               help="True label files or directories (paired by run id)."),
    model_instance: Optional[str] = typer.Option(None, "--model-instance", "-m",
                                                 help="Tag the tracking files of the true labels with this "
                                                      "tagger (name or directory), then compare."),
    backend: Optional[str] = typer.Option(None, "--backend", help="Backend plug-in (default: maggotuba)."),
    priors: Optional[str] = typer.Option(None, "--priors", help=_PRIORS_HELP),
    device: str = typer.Option("cpu", "--device", help="With --model-instance: cpu, cuda or cuda:N."),
    label_map: Optional[str] = typer.Option(None, "--map",
                                            help="Rename true labels: OLD=NEW,... or 'simulator' (the "
                                                 "simulator's run, cast... → run_large, cast_large...)."),
    predicted_glob: str = typer.Option("*.label", "--predicted-glob",
                                       help="Label files taken from predicted directories."),
    truth_glob: str = typer.Option("*.label", "--truth-glob",
                                   help="Label files taken from true (or DATA) directories."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the evaluation as JSON."),
    csv_path: Optional[Path] = typer.Option(None, "--csv", help="Write the per-class table as CSV."),
    overwrite: Overwrite = False,
) -> None:
    """Score predicted labels against true ones: per-class precision, recall, F1, confusion,
    coverage and bout-level agreement.

    Example: tagging-backend evaluate runs/ --truth runs/ --truth-glob groundtruth.label --json eval.json

    Example (predict, then compare): tagging-backend evaluate --model-instance default sim/groundtruth.label
    --map simulator
    """
    from ..evaluation import evaluate_files, label_files, parse_label_map

    for out in (json_path, csv_path):
        if out is not None:
            refuse_existing(out, overwrite)
    mapping = parse_label_map(label_map)
    record = provenance("evaluate", model_instance=model_instance, priors=priors)
    if model_instance is not None:
        if truth:
            raise typer.BadParameter("with --model-instance, give the true label files as arguments",
                                     param_hint="--truth")
        truth_files = label_files(inputs, truth_glob)
        with tempfile.TemporaryDirectory(prefix="tagging-backend-evaluate-") as tmp:
            predicted = _predict_for(truth_files, Path(tmp), backend, model_instance, device, priors)
            result = evaluate_files(predicted, truth_files, label_map=mapping, provenance=record)
        for entry in result["files"]:
            entry["predicted"] = f"(tagged by {model_instance})"
    else:
        if priors is not None:
            raise typer.BadParameter("only with --model-instance (predict applies priors)", param_hint="--priors")
        if not truth:
            raise typer.BadParameter("give the true labels (--truth FILE_OR_DIR), or --model-instance",
                                     param_hint="--truth")
        truth_files = label_files(truth, truth_glob)
        excluded = {p.resolve() for p in truth_files}
        predicted = [p for p in label_files(inputs, predicted_glob) if p.resolve() not in excluded]
        result = evaluate_files(predicted, truth_files, label_map=mapping, provenance=record)
    show(result)
    _save(result, json_path, csv_path)


def _save(result: dict, json_path: Optional[Path], csv_path: Optional[Path]) -> None:
    from ..evaluation import to_csv, to_json

    if json_path is not None:
        to_json(result, json_path)
        say(f"evaluation → {json_path}")
    if csv_path is not None:
        to_csv(result, csv_path)
        say(f"per-class table → {csv_path}")


def tracking_of(label_file: Path) -> Path:
    """The tracking input of a true label file: its dependency (the directory of a
    several-file run, e.g. Schleyer CSVs)."""
    from ..data.labels import Labels

    labels = Labels.load(label_file, verify=False)
    paths = [p for p in labels.dependency_paths() if p.suffix.lower() != ".outline"]
    if not paths:
        raise TaggingError(f"{label_file}: names no tracking file (dependencies); tag it with "
                           "`tagging-backend predict` and give both label files instead")
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise TaggingError(f"{label_file}: its tracking file {missing[0]} is missing")
    if len(paths) > 1 and len({p.parent for p in paths}) == 1:
        return paths[0].parent
    return paths[0]


def _predict_for(truth_files: List[Path], directory: Path, backend: Optional[str], model_instance: str,
                 device: str, priors: Optional[str]) -> List[Path]:
    """Tag the tracking file of each true label file into ``directory``; the predicted paths."""
    from ..backends import get_backend

    module = get_backend(backend)
    saved = module.load_model(module.resolve_model(model_instance), device=device)
    options = {"device": device, "priors": priors} if priors is not None else {"device": device}
    predict_options = module.PredictOptions(**options)
    outputs = []
    for i, label_file in enumerate(truth_files):
        out = directory / f"{i:04d}.label"
        result = module.predict_file(saved, tracking_of(label_file), out, predict_options,
                                     model_name=Path(model_instance).name)
        say(f"tagged {result['input']} ({result['steps']} steps)")
        outputs.append(out)
    return outputs


# ------------------------------------------------------------------ tables
def _fmt(value) -> str:
    return "—" if value is None else f"{value:.2f}"


def show(result: dict) -> None:
    """Rich tables: summary, per class (weakest first), bouts, confusion (row-normalised)."""
    from rich import box
    from rich.table import Table

    from ..evaluation import weakest_first

    if state.quiet:
        return
    steps = result["steps"]
    console.print(f"{len(result['files'])} run(s), {steps['truth']} true steps: {steps['compared']} compared, "
                  f"{steps['unpredicted']} without prediction, {steps['unlabelled_truth']} unlabelled in the "
                  f"truth; {steps['predicted_unmatched']} predicted steps without truth", highlight=False)
    console.print(f"accuracy {_fmt(result['accuracy'])}   macro F1 {_fmt(result['macro']['f1'])}   "
                  f"weighted F1 {_fmt(result['weighted']['f1'])}   bout macro precision "
                  f"{_fmt(result['bouts']['macro']['precision'])} recall {_fmt(result['bouts']['macro']['recall'])}",
                  highlight=False)
    order = weakest_first(result)
    table = Table(title="steps, per class (weakest first)", box=box.SIMPLE_HEAD)
    table.add_column("label", no_wrap=True)
    for column in ("precision", "recall", "F1", "support", "unpredicted"):
        table.add_column(column, justify="right", no_wrap=True)
    for name in order:
        s = result["per_class"][name]
        table.add_row(name, _fmt(s["precision"]), _fmt(s["recall"]), _fmt(s["f1"]), str(s["support"]),
                      str(s["unpredicted"]))
    console.print(table)
    bouts = Table(title="bouts, per class (onset and offset errors in s)", box=box.SIMPLE_HEAD)
    bouts.add_column("label", no_wrap=True)
    for column in ("true", "predicted", "precision", "recall", "onset", "offset"):
        bouts.add_column(column, justify="right", no_wrap=True)
    for name in order:
        b = result["bouts"]["per_class"][name]
        bouts.add_row(name, str(b["true"]), str(b["predicted"]), _fmt(b["precision"]), _fmt(b["recall"]),
                      _fmt(b["onset_error_s"]), _fmt(b["offset_error_s"]))
    console.print(bouts)
    matrix = Table(title="confusion, row-normalised (rows truth, columns predicted)", box=box.SIMPLE_HEAD)
    matrix.add_column("truth", no_wrap=True)
    for i, name in enumerate(result["labels"]):
        matrix.add_column(str(i + 1), justify="right", no_wrap=True)
    result = dict(result, labels=[f"{i + 1} {name}" for i, name in enumerate(result["labels"])])
    for name, row in zip(result["labels"], result["confusion"]["normalised"]):
        matrix.add_row(name, *(f"{x:.2f}" for x in row))
    console.print(matrix)
