"""``predict``: tag every step of every larva, in direct or backend-project mode."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..errors import TaggingError
from .app import app, console, larva_count, no_progress_bars, say, state
from .options import (Framerate, InputFormat, Pixelsize, check_existing, output_paths, reader_options,
                      tracking_inputs)

@app.command()
def predict(
    inputs: List[Path] = typer.Argument(None, metavar="[INPUT]...",
                                        help="Tracking files, directories, or .txt lists of them, one "
                                             "per line (default: the backend project's data/raw/<instance>)."),
    model_instance: Optional[str] = typer.Option(None, "--model-instance", "-m",
                                                 help="Tagger name or directory (default: the shipped default)."),
    backend: Optional[str] = typer.Option(None, "--backend", help="Backend plug-in (default: maggotuba)."),
    output: str = typer.Option("{dir}/predicted.label", "--output", "-o",
                               help="Output path template: {dir}, {stem}, {name}, {model}."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N."),
    precision: str = typer.Option("fp32", "--precision",
                                  help="fp32; bf16 (the dominant layer in bf16: fastest on CPUs with AMX and on "
                                       "GPUs) or bf16-full (every layer: fastest on CPUs with AVX512-BF16 but "
                                       "no AMX); both need native bf16 and keep ≥99.5 % of labels equal."),
    edges: str = typer.Option("label", "--edges",
                              help="Steps within half a window of a track end: label (clamped window) or skip."),
    no_post_processing: bool = typer.Option(False, "--no-post-processing", help="Skip the ABC→AAC rule."),
    batch_size: int = typer.Option(2048, "--batch-size", min=1, help="Windows per batch."),
    decode: bool = typer.Option(False, "--decode", help="Write label names instead of integer codes."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing label files."),
    overwrite_edited: bool = typer.Option(False, "--overwrite-edited",
                                          help="Also replace label files holding manual edits."),
    sandbox: Optional[str] = typer.Option(None, "--sandbox",
                                          help="Backend project mode: use data/{raw,interim,processed}/SANDBOX "
                                               "instead of the model instance's (one per concurrent run)."),
    make_dataset: bool = typer.Option(False, "--make-dataset/--skip-make-dataset",
                                      help="Backend project mode: run the project's make_dataset.py first "
                                           "(upstream; off by default since TaggingBackends 0.10)."),
    build_features: bool = typer.Option(False, "--build-features/--skip-build-features",
                                        help="Backend project mode: run the project's build_features.py first."),
    input_format: InputFormat = "auto",
    framerate: Framerate = None,
    pixelsize: Pixelsize = None,
) -> None:
    """Tag every time step of every larva.

    Example (direct mode): tagging-backend predict demo/trx.mat  (writes demo/predicted.label and
    demo/predicted.probabilities.h5 with the shipped default tagger).

    Example (backend project mode, upstream): tagging-backend predict --model-instance NAME [--sandbox TOKEN],
    run in the project root with the tracking files in data/raw/TOKEN (TOKEN defaults to NAME),
    writes data/processed/TOKEN/.../predicted.label.
    """
    if precision not in ("fp32", "bf16", "bf16-full"):
        raise typer.BadParameter("choose fp32, bf16 or bf16-full", param_hint="--precision")
    if edges not in ("label", "skip"):
        raise typer.BadParameter("choose label or skip", param_hint="--edges")
    options = dict(device=device, precision=precision, batch_size=batch_size, edges=edges,
                   post_processing=[] if no_post_processing else None, decode=decode)
    reader = reader_options(framerate, pixelsize, input_format=input_format)
    if inputs:
        found = tracking_inputs(list(inputs))
        model_name = model_instance or "default"
        outputs = output_paths(found, output, Path(model_name).name)
        check_existing(outputs, overwrite, overwrite_edited)
        _predict_files(backend, model_instance, found, outputs, options, reader=reader)
        return
    if not (model_instance or sandbox):
        raise typer.BadParameter("give input files, or --model-instance/--sandbox in a backend project")
    from ..explorer import BackendExplorer

    explorer = BackendExplorer(Path.cwd(), model_instance=model_instance, sandbox=sandbox)
    with explorer.lock():
        if backend is None and explorer.script("predict_model") is not None:
            run_project_scripts(explorer, "predict_model", make_dataset=make_dataset,
                                 build_features=build_features, options=dict(
                                     overwrite=overwrite, overwrite_edited=overwrite_edited, **options))
            written = explorer.list_output_files()
            say(f"{explorer.script('predict_model').name}: {len(written)} file(s) in "
                f"{explorer.processed_data_dir(create=False)}")
            return
        raw, processed = explorer.raw_data_dir(create=False), explorer.processed_data_dir(create=False)
        if not raw.is_dir():
            raise TaggingError(f"{raw}: no such directory; put the tracking files to tag there "
                               "(or give them as arguments)")
        found = tracking_inputs([raw])
        outputs = [processed / p.relative_to(raw).parent / "predicted.label" if p != raw
                   else processed / "predicted.label" for p in found]
        output_paths(found, "{dir}/predicted.label", "")  # two inputs in one directory: refuse
        check_existing(outputs, overwrite, overwrite_edited)
        _predict_files(backend, model_instance, found, outputs, options,
                       project=explorer.project_dir, reader=reader)


def _predict_files(backend: Optional[str], model_instance: Optional[str], found: List[Path], outputs: List[Path],
                   options: dict, project: Optional[Path] = None, reader: Optional[dict] = None) -> None:
    """Tag ``found`` into ``outputs`` with an installed backend plug-in."""
    from rich.progress import Progress

    from ..backends import get_backend

    module = get_backend(backend)
    model_dir = module.resolve_model(model_instance, project) if project else module.resolve_model(model_instance)
    model_name = Path(model_instance).name if model_instance else model_dir.name
    saved = module.load_model(model_dir, device=options["device"])
    predict_options = module.PredictOptions(**options)
    with Progress(console=console, disable=no_progress_bars(), transient=True) as progress:
        task = progress.add_task("tagging", total=len(found))
        for path, out in zip(found, outputs):
            extra = {"reader": reader} if reader else {}  # (plug-ins without reader options still work)
            result = module.predict_file(saved, path, out, predict_options, model_name=model_name, **extra)
            progress.advance(task)
            sidecar = result.get("sidecar")
            what = result.get("summary") or f"{larva_count(result['larvae'])}, {result['steps']} steps"
            say(f"{path} → {out} ({what}"
                + (f"; probabilities in {Path(sidecar).name})" if sidecar else ")"))


def run_project_scripts(explorer, step: str, *, make_dataset: bool, build_features: bool,
                         options: dict) -> None:
    """A backend project's own scripts: make_dataset and build_features when asked
    (skipped quietly if the project has none), then ``step``."""
    from ..project import run_script

    if make_dataset:
        run_script(explorer, "make_dataset", options, required=False, debug=state.debug)
    if build_features:
        run_script(explorer, "build_features", options, required=False, debug=state.debug)
    run_script(explorer, step, options, debug=state.debug)
