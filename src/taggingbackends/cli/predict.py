"""``predict``: tag every step of every larva, in direct or backend-project mode."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, List, Optional

import typer

from ..errors import TaggingError
from .app import app, console, err_console, larva_count, say, state
from .options import (Cluster, Cores, Framerate, InputFormat, JobExtra, Jobs, Memory, Pixelsize, Queue, Scheduler,
                      Shard, Summary, Walltime, Workers, batch_progress, check_existing, execution_options,
                      iter_tracking_inputs, output_paths, reader_options,
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
    priors: Optional[str] = typer.Option(None, "--priors",
                                         help="Class base rates to re-weight probabilities to (Bayes' rule): "
                                              "natural, uniform, none, adapted (the estimate stored by `adapt`) or a "
                                              "JSON file {label: frequency} "
                                              "(default: the backend's; see docs/evaluation.md)."),
    uncertain_below: float = typer.Option(0.5, "--uncertain-below", min=0.0, max=1.0,
                                          help="Flag steps as uncertain in the probabilities sidecar when their "
                                               "top probability is below this (or their window spans a tracking "
                                               "gap); see docs/maggotuba.md."),
    no_calibration: bool = typer.Option(False, "--no-calibration",
                                        help="Ignore the model's stored temperature (raw softmax probabilities)."),
    decode: bool = typer.Option(False, "--decode", help="Write label names instead of integer codes."),
    overwrite: bool = typer.Option(False, "--overwrite",
                                   help="Replace existing outputs, up-to-date ones too (without it, an up-to-date "
                                        "prediction is skipped and a stale one redone)."),
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
    workers: Workers = None,
    scheduler: Scheduler = None,
    cluster: Cluster = None,
    jobs: Jobs = 1,
    cores: Cores = None,
    memory: Memory = None,
    walltime: Walltime = None,
    queue: Queue = None,
    job_extra: JobExtra = None,
    shard: Shard = None,
    summary: Summary = None,
    input_format: InputFormat = "auto",
    framerate: Framerate = None,
    pixelsize: Pixelsize = None,
) -> None:
    """Tag every time step of every larva.

    Example (direct mode): tagging-backend predict demo/trx.mat  (writes demo/predicted.label and
    demo/predicted.probabilities.h5 with the shipped default tagger).

    Example (a screen, resumable): tagging-backend predict 'screen/**/trx.mat' --workers 8 --summary
    screen.json  (several inputs run on a local dask cluster; on Slurm: --cluster slurm --jobs 10;
    see docs/batch.md).

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
    if priors is not None:
        options["priors"] = priors
    if uncertain_below != 0.5:
        options["uncertain_below"] = uncertain_below
    if no_calibration:
        options["calibrate"] = False
    reader = reader_options(framerate, pixelsize, input_format=input_format)
    execution = execution_options(workers=workers, scheduler=scheduler, cluster=cluster, jobs=jobs, cores=cores,
                                  memory=memory, walltime=walltime, queue=queue, job_extra=job_extra, shard=shard)
    if inputs:
        _predict_files(backend, model_instance, iter_tracking_inputs(list(inputs)), output, options, execution,
                       overwrite=overwrite, overwrite_edited=overwrite_edited, summary=summary,
                       described=", ".join(map(str, inputs)), reader=reader)
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
        check_existing(outputs, overwrite, overwrite_edited)  # upstream: an existing output is an error
        _predict_files(backend, model_instance, found, "{dir}/predicted.label", options, execution, overwrite=True,
                       overwrite_edited=overwrite_edited, summary=summary, project=explorer.project_dir,
                       outputs=dict(zip(map(str, found), map(str, outputs))), described=str(raw), reader=reader)


def _predict_files(backend: Optional[str], model_instance: Optional[str], inputs: Iterable[Path], template: str,
                   options: dict, execution, *, overwrite: bool, overwrite_edited: bool,
                   summary: Optional[Path] = None, project: Optional[Path] = None,
                   outputs: Optional[dict] = None, described: str = "",
                   reader: Optional[dict] = None) -> None:
    """Tag ``inputs`` (streamed) with an installed backend plug-in through the batch engine
    (:mod:`taggingbackends.batch`): in this process for one input, on dask for several.
    Prints a line per file and, for several, a final table; exit status 1 if any failed."""
    from ..backends import get_backend
    from ..batch import SummaryWriter, TaggingSpec, run_batch

    module = get_backend(backend)
    model_dir = module.resolve_model(model_instance, project) if project else module.resolve_model(model_instance)
    model_name = Path(model_instance).name if model_instance else Path(model_dir).name
    spec = TaggingSpec(backend=backend, model_dir=str(Path(model_dir).resolve()), model_name=model_name,
                       options=options, overwrite=overwrite, overwrite_edited=overwrite_edited,
                       reader_options=dict(reader or {}))
    with SummaryWriter(summary) as writer, batch_progress() as progress:
        def report(record: dict) -> None:
            progress.advance(record)
            writer.write(record)
            _say_record(record)

        totals = run_batch(inputs, template, spec, execution, on_record=report, outputs=outputs,
                           on_total=progress.set_total)
        if totals.files == 0:
            shard = f" for shard {execution.shard[0]}/{execution.shard[1]}" if execution.shard else ""
            raise TaggingError(f"no tracking files found in {described}{shard}")
        writer.finish(totals.as_dict(), {"model": spec.model_dir, "options": options,
                                         "backend": backend or "maggotuba"})
    if totals.files > 1:
        _print_totals(totals)
    if totals.failed:
        raise typer.Exit(1)


def _say_record(record: dict) -> None:
    """One line per file: tagged (where to), skipped (why) or failed (why, on stderr)."""
    if record["status"] == "done":
        sidecar = record.get("sidecar")
        note = f"; {record['reason']}" if record.get("reason") else ""
        what = record.get("read") or f"{larva_count(record['larvae'])}, {record['steps']} steps"
        say(f"{record['input']} → {record['output']} ({what}"
            + (f"; probabilities in {Path(sidecar).name}" if sidecar else "")
            + (f", {100 * record['uncertain_share']:.1f} % of steps uncertain"
               if isinstance(record.get("uncertain_share"), (int, float)) else "") + note + ")")
    elif record["status"] == "skipped":
        say(f"{record['input']}: skipped, {record['output']} is {record['reason']}")
    else:
        reason = record["reason"] or "unknown error"
        where = "" if reason.startswith(record["input"]) else f"{record['input']}: "
        err_console.print(f"[red]failed:[/red] {where}{reason}", highlight=False, soft_wrap=True)


def _print_totals(totals) -> None:
    """The final table: files done, skipped, failed (with reasons), speed."""
    from rich.table import Table

    if state.quiet and not totals.failed:
        return
    seconds = totals.seconds
    table = Table(title="predict", show_header=True, header_style="bold")
    for column in ("done", "skipped", "failed", "larvae", "larva-steps", "seconds", "steps/s"):
        table.add_column(column, justify="right")
    table.add_row(str(totals.done), str(totals.skipped), str(totals.failed), f"{totals.larvae:,}",
                  f"{totals.steps:,}", f"{seconds:.1f}", f"{totals.steps / seconds:,.0f}" if seconds else "-")
    console.print(table)
    if totals.failures:
        failed = Table("failed file", "reason", show_header=True, header_style="bold red")
        for path, reason in totals.failures[:50]:
            failed.add_row(path, reason or "")
        console.print(failed)
        if totals.failed > 50:
            console.print(f"... and {totals.failed - 50} more (see --summary)")


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
