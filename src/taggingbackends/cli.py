"""The ``tagging-backend`` command line (typer + rich).

Errors caused by the user's input print one line, ``error: <file>: <problem>``,
and exit with status 1 (2 for usage errors); ``--debug`` shows the traceback.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import inspect
import platform
import sys
from importlib import metadata as _metadata
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from . import __version__
from .errors import OutputExistsError, TaggingError

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


def _no_progress_bars() -> bool:
    """Progress bars only on a terminal (logs and pipes get the summary lines alone)."""
    return state.quiet or not console.is_terminal


def _larvae(n: int) -> str:
    return f"{n} larva" if n == 1 else f"{n} larvae"


def say(message: str) -> None:
    """Print a progress or summary line unless ``--quiet``."""
    if not state.quiet:
        console.print(message)


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


def provenance(command: str, **extra) -> dict:
    """What made an output: tool, version, command, UTC date (inputs are in dependencies)."""
    record = {"software": "taggingbackends", "version": __version__, "command": command,
              "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()}
    record.update({k: v for k, v in extra.items() if v is not None})
    return record


# ----------------------------------------------------------------- info
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


# -------------------------------------------------------------- formats
@app.command()
def formats() -> None:
    """Supported tracking/label formats, their suffixes and how each is detected.

    Example: tagging-backend formats
    """
    from .formats import formats as registered

    table = Table(show_header=True, show_lines=True)
    for column in ("format", "suffixes", "detected by", "read", "write", "description"):
        table.add_column(column)
    for spec in registered():
        table.add_row(spec.name, " ".join(spec.suffixes) + (" (directory)" if spec.reads_directory else ""),
                      spec.detection, "yes", "yes" if spec.write else "no", spec.description)
    console.print(table)


# --------------------------------------------------------------- import
def _reader_options(framerate: Optional[float], pixelsize: Optional[float], verify: bool) -> dict:
    options: dict = {}
    if framerate is not None:
        options["framerate"] = framerate
    if pixelsize is not None:
        options["pixelsize"] = pixelsize
    if not verify:
        options["verify"] = False
    return options


@app.command("import")
def import_(
    input_path: Path = typer.Argument(..., metavar="INPUT", help="Tracking file or directory (or a .label)."),
    output: Optional[Path] = typer.Argument(None, metavar="[OUTPUT]",
                                            help="Label file to write (default: INPUT_DIR/STEM.label)."),
    format: str = typer.Option("auto", "--format", "-f", help="Input format (see `formats`)."),
    run_id: Optional[str] = typer.Option(None, "--id", help="Run id to write (default: from the file)."),
    framerate: Optional[float] = typer.Option(None, "--framerate", help="Frame rate in Hz (FIMTrack, Schleyer CSV)."),
    pixelsize: Optional[float] = typer.Option(None, "--pixelsize", help="Pixel size in µm (FIMTrack)."),
    default_label: Optional[str] = typer.Option(
        None, "--default-label", help="Label for untagged steps (default: 'new behavior' when the "
                                      "file has no tags, else unlabelled)."),
    manual_label: Optional[str] = typer.Option(
        None, "--manual-label", help="Secondary label appended to every imported tag (e.g. edited)."),
    decode: bool = typer.Option(False, "--decode", help="Write label names instead of integer codes."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUTPUT if it exists."),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Check .label dependencies' SHA-1."),
) -> None:
    """Make a .label file for a tracking file, with its tags when it has any
    (e.g. trx.mat behaviour flags), else a default label (as `larvatagger import`).

    Example: tagging-backend import tests/data/chore/20150701_105504@FCF@UAS@t15@r#n#n#n@100.spine
    """
    from .data.labels import Labels
    from .formats import load

    run = load(input_path, format=format, **_reader_options(framerate, pixelsize, verify))
    output = output or _default_label_path(input_path)
    if output.exists() and not overwrite:
        raise OutputExistsError(f"{output}: already exists (pass --overwrite to replace it)")
    tracking = [p for p in run.source if p.suffix.lower() not in (".label", ".labels", ".json", ".nyxlabel")]
    has_tags = bool(run.tag_names)
    default = default_label if default_label is not None else (None if has_tags else "new behavior")
    labels = Labels.from_run(run, default_label=default, tracking=tracking)
    if run_id is not None:
        labels.run_id = run_id
    if manual_label:
        labels.append_label(manual_label)
    labels.metadata["provenance"] = provenance("import")
    labels.dump(output, encode=not decode, overwrite=overwrite)
    say(f"wrote {output} ({_larvae(run.n_tracks)}, {run.n_steps} steps, "
        f"{'tags: ' + ', '.join(labels.used_names()) if has_tags else 'label: ' + str(default)})")


def _default_label_path(input_path: Path) -> Path:
    if input_path.is_dir():
        return input_path / f"{input_path.name}.label"
    stem = input_path.name.split(".")[0] if input_path.suffix else input_path.name
    return input_path.with_name(f"{stem}.label")


# -------------------------------------------------------------- convert
@app.command()
def convert(
    input_path: Path = typer.Argument(..., metavar="INPUT", help="Tracking file or directory."),
    output: Path = typer.Argument(..., metavar="OUTPUT", help="File (or directory for schleyer) to write."),
    to: Optional[str] = typer.Option(None, "--to", help="Output format (default: from OUTPUT's suffix)."),
    format: str = typer.Option("auto", "--format", "-f", help="Input format (see `formats`)."),
    framerate: Optional[float] = typer.Option(None, "--framerate", help="Input frame rate in Hz."),
    pixelsize: Optional[float] = typer.Option(None, "--pixelsize", help="Input pixel size in µm."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUTPUT if it exists."),
) -> None:
    """Convert a tracking file to another format (trxmat, chore, fimtrack, schleyer).

    Example: tagging-backend convert run.spine run_trx.mat
    """
    from .formats import load, save

    if output.exists() and not overwrite:
        raise OutputExistsError(f"{output}: already exists (pass --overwrite to replace it)")
    run = load(input_path, format=format, **_reader_options(framerate, pixelsize, True))
    try:
        save(run, output, format=to)
    except ValueError as err:
        raise TaggingError(str(err)) from err
    say(f"wrote {output} ({_larvae(run.n_tracks)}, {run.n_steps} steps)")


# ------------------------------------------------------------- simulate
_SIMULATE_SUFFIX = {"trxmat": "trx.mat", "chore": None, "fimtrack": "table.csv", "schleyer": None}


@app.command()
def simulate(
    output_dir: Path = typer.Argument(Path("simulated"), metavar="[OUTPUT_DIR]",
                                      help="Directory to write the tracking file and groundtruth.label into."),
    larvae: int = typer.Option(20, "--larvae", "-n", min=1, help="Number of larvae."),
    duration: float = typer.Option(60.0, "--duration", min=1.0, help="Recording length in seconds."),
    frame_rate: float = typer.Option(11.0, "--frame-rate", min=1.0, help="Nominal frame rate in Hz."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed, same files)."),
    to: str = typer.Option("chore", "--format", "-f", help="Tracking format: chore, trxmat, fimtrack, schleyer."),
    frame_jitter: Optional[float] = typer.Option(
        None, "--frame-jitter", min=0.0,
        help="Relative s.d. of frame intervals (default 0.06; 0 for fimtrack/schleyer, "
             "which store frame numbers)."),
    tail_first: bool = typer.Option(False, "--tail-first", help="Store spines tail to head."),
    balanced: bool = typer.Option(False, "--balanced",
                                  help="Oversample rare behaviours (roughly equal shares)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing files."),
) -> None:
    """Generate synthetic larva tracks with per-step ground-truth behaviour labels.

    Writes a tracking file in the chosen format plus `groundtruth.label` (its dependency).
    The behaviour models are described in docs/simulation.md.
    Example: tagging-backend simulate demo --larvae 10 --duration 30 --format trxmat
    """
    from .simulate import SimulationConfig, balanced_weights
    from .simulate import simulate as run_simulation

    if to not in _SIMULATE_SUFFIX:
        raise typer.BadParameter(f"unknown format {to!r}; choose from {', '.join(_SIMULATE_SUFFIX)}",
                                 param_hint="--format")
    if frame_jitter is None:
        frame_jitter = 0.0 if to in ("fimtrack", "schleyer") else 0.06
    config = SimulationConfig(n_larvae=larvae, duration=duration, frame_rate=frame_rate, seed=seed,
                              frame_jitter=frame_jitter, head_first=not tail_first)
    if balanced:
        config = dataclasses.replace(config, behaviour_weights=balanced_weights(config))
    result = run_simulation(config)
    paths = write_simulation(result, output_dir, to, overwrite=overwrite)
    say(f"wrote {', '.join(str(p) for p in paths)} ({_larvae(result.run.n_tracks)}, "
        f"{result.run.n_steps} steps)")


def write_simulation(result, output_dir: Path, to: str, *, overwrite: bool = False) -> list[Path]:
    """Write a simulation as tracking data in format ``to`` plus ``groundtruth.label``."""
    from .data.labels import Labels, TrackLabels
    from .formats import get_format

    run = result.run
    label_path = output_dir / "groundtruth.label"
    if to == "chore":
        tracking_path = output_dir / f"{run.id}@sim@sim@sim@sim#n#n#n@100.spine"
    elif to == "schleyer":  # the directory name is the run id when read back
        tracking_path = output_dir / run.id
    else:
        tracking_path = output_dir / _SIMULATE_SUFFIX[to]
    for path in (label_path, tracking_path):
        if path.exists() and not overwrite:
            raise OutputExistsError(f"{path}: already exists (pass --overwrite to replace it)")
    output_dir.mkdir(parents=True, exist_ok=True)
    get_format(to).write(run, tracking_path)
    written = _written_tracking_files(tracking_path, to)
    labels = Labels(list(result.names), metadata={"id": run.id, **_string_metadata(run.metadata)},
                    tracking=written)
    names = list(result.names)
    for track, behaviour in _per_track(run, result.behaviour):
        labels.tracks[track.larva_id] = TrackLabels(track.t.copy(), [names[b] for b in behaviour])
    labels.metadata["provenance"] = provenance("simulate")
    labels.dump(label_path, overwrite=overwrite)
    return [*written, label_path]


def _written_tracking_files(tracking_path: Path, to: str) -> list[Path]:
    if to == "chore":
        return [tracking_path, tracking_path.with_suffix(".outline")]
    if tracking_path.is_dir():
        return sorted(tracking_path.glob("*.csv"))
    return [tracking_path]


def _string_metadata(metadata: dict) -> dict:
    return {k: v for k, v in metadata.items() if isinstance(v, (str, int, float, dict)) and k != "id"}


def _per_track(run, behaviour):
    for i, track in enumerate(run):
        yield track, behaviour[run.offsets[i]:run.offsets[i + 1]]


# -------------------------------------------------------------- predict
_LABEL_INPUT_SUFFIXES = (".label", ".labels", ".json", ".nyxlabel")


def _tracking_inputs(paths: List[Path]) -> List[Path]:
    """Expand directories into the tracking files they hold (one per run).

    A directory of Schleyer CSV files is one run; otherwise files are
    detected by content, `.outline` partners and `.label` files skipped."""
    from .formats import detect

    found: List[Path] = []
    for path in paths:
        if not path.exists():
            raise TaggingError(f"{path}: no such file or directory")
        if path.is_file():
            found.extend(_listed_inputs(path) if _is_file_list(path) else [path])
            continue
        try:
            if detect(path).name == "schleyer":
                found.append(path)
                continue
        except TaggingError:
            pass
        for candidate in sorted(p for p in path.rglob("*") if p.is_file()):
            if candidate.suffix.lower() in _LABEL_INPUT_SUFFIXES + (".outline",):
                continue
            try:
                detect(candidate)
            except TaggingError:
                continue
            found.append(candidate)
    if not found:
        raise TaggingError("no tracking files found in " + ", ".join(map(str, paths)))
    return found


def _is_file_list(path: Path) -> bool:
    """A ``.txt`` file that is no tracking format: a list of inputs (as `larvatagger predict
    files.txt`)."""
    from .formats import detect

    if path.suffix.lower() != ".txt":
        return False
    try:
        detect(path)
    except TaggingError:
        return True
    return False


def _listed_inputs(list_file: Path) -> List[Path]:
    """The tracking files named in ``list_file``, one path per line (blank lines and
    ``#`` comments skipped; relative paths are relative to the list file's directory);
    directories are expanded as on the command line."""
    try:
        lines = list_file.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise TaggingError(f"{list_file}: not a tracking file, nor a UTF-8 list of files") from None
    entries = []
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        entry = Path(line).expanduser()
        entry = entry if entry.is_absolute() else list_file.parent / entry
        if not entry.exists():
            raise TaggingError(f"{list_file}: line {number}: {line}: no such file or directory")
        if entry.is_file() and _is_file_list(entry):
            raise TaggingError(f"{list_file}: line {number}: {line}: lists of lists are not supported")
        entries.append(entry)
    if not entries:
        raise TaggingError(f"{list_file}: an empty list of files")
    return _tracking_inputs(entries)


def output_paths(inputs: List[Path], template: str, model: str) -> List[Path]:
    """Output file for each input from a template ({dir}, {stem}, {name}, {model});
    two inputs mapping to one output is an error before anything is tagged."""
    outputs = []
    for path in inputs:
        directory = path if path.is_dir() else path.parent
        stem = path.name.split(".")[0] if path.is_file() else path.name
        try:
            outputs.append(Path(template.format(dir=directory, stem=stem, name=path.name, model=model)))
        except (KeyError, IndexError, ValueError) as err:
            raise TaggingError(f"--output {template!r}: bad template ({err}); fields: {{dir}}, "
                               "{stem}, {name}, {model}") from None
    seen: dict = {}
    for path, out in zip(inputs, outputs):
        key = out.resolve()
        if key in seen:
            raise TaggingError(f"{seen[key]} and {path} would both be written to {out}; use an "
                               "--output template such as '{dir}/{stem}.label'")
        seen[key] = path
    return outputs


def _check_existing(outputs: List[Path], overwrite: bool, overwrite_edited: bool) -> None:
    from .data.labels import Labels, is_edited

    for out in outputs:
        if not out.exists():
            continue
        if not overwrite:
            raise OutputExistsError(f"{out}: already exists (pass --overwrite to replace it)")
        try:
            labels = Labels.load(out, verify=False)
        except TaggingError:
            continue
        edited = any(is_edited(e) for track in labels.tracks.values() for e in track.labels)
        if edited and not overwrite_edited:
            raise OutputExistsError(f"{out}: holds manually edited labels; pass --overwrite-edited "
                                    "to replace them (or choose another --output)")


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
    if inputs:
        found = _tracking_inputs(list(inputs))
        model_name = model_instance or "default"
        outputs = output_paths(found, output, Path(model_name).name)
        _check_existing(outputs, overwrite, overwrite_edited)
        _predict_files(backend, model_instance, found, outputs, options)
        return
    if not (model_instance or sandbox):
        raise typer.BadParameter("give input files, or --model-instance/--sandbox in a backend project")
    from .explorer import BackendExplorer

    explorer = BackendExplorer(Path.cwd(), model_instance=model_instance, sandbox=sandbox)
    with explorer.lock():
        if backend is None and explorer.script("predict_model") is not None:
            _run_project_scripts(explorer, "predict_model", make_dataset=make_dataset,
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
        found = _tracking_inputs([raw])
        outputs = [processed / p.relative_to(raw).parent / "predicted.label" if p != raw
                   else processed / "predicted.label" for p in found]
        output_paths(found, "{dir}/predicted.label", "")  # two inputs in one directory: refuse
        _check_existing(outputs, overwrite, overwrite_edited)
        _predict_files(backend, model_instance, found, outputs, options,
                       project=explorer.project_dir)


def _predict_files(backend: Optional[str], model_instance: Optional[str], found: List[Path], outputs: List[Path],
                   options: dict, project: Optional[Path] = None) -> None:
    """Tag ``found`` into ``outputs`` with an installed backend plug-in."""
    from rich.progress import Progress

    from .backends import get_backend

    module = get_backend(backend)
    model_dir = module.resolve_model(model_instance, project) if project else module.resolve_model(model_instance)
    model_name = Path(model_instance).name if model_instance else model_dir.name
    saved = module.load_model(model_dir, device=options["device"])
    predict_options = module.PredictOptions(**options)
    with Progress(console=console, disable=_no_progress_bars(), transient=True) as progress:
        task = progress.add_task("tagging", total=len(found))
        for path, out in zip(found, outputs):
            result = module.predict_file(saved, path, out, predict_options, model_name=model_name)
            progress.advance(task)
            sidecar = result.get("sidecar")
            say(f"{path} → {out} ({_larvae(result['larvae'])}, {result['steps']} steps"
                + (f"; probabilities in {Path(sidecar).name})" if sidecar else ")"))


def _run_project_scripts(explorer, step: str, *, make_dataset: bool, build_features: bool,
                         options: dict) -> None:
    """A backend project's own scripts: make_dataset and build_features when asked
    (skipped quietly if the project has none), then ``step``."""
    from .project import run_script

    if make_dataset:
        run_script(explorer, "make_dataset", options, required=False, debug=state.debug)
    if build_features:
        run_script(explorer, "build_features", options, required=False, debug=state.debug)
    run_script(explorer, step, options, debug=state.debug)


# ---------------------------------------------------------------- train
def _parse_iterations(text: str) -> tuple:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise typer.BadParameter("N or N1,N2 (integers)", param_hint="--iterations") from None
    if len(values) == 1:
        values = [values[0], values[0]]
    if len(values) != 2 or min(values) < 0:
        raise typer.BadParameter("N or N1,N2", param_hint="--iterations")
    return tuple(values)


def _csv(text: Optional[str]) -> Optional[list]:
    return [v.strip() for v in text.split(",") if v.strip()] if text else None


def _int_list(text: Optional[str], hint: str) -> Optional[list]:
    try:
        return [int(v) for v in _csv(text)] if text else None
    except ValueError:
        raise typer.BadParameter("comma-separated integers", param_hint=hint) from None


@dataclasses.dataclass
class _Training:
    """What ``train`` and ``finetune`` were asked, before the mode is known."""

    data: List[str]
    name: Optional[str]
    start_from: Optional[str]
    backend: Optional[str]
    models_dir: Path
    sandbox: Optional[str]
    make_dataset: bool
    build_features: bool
    trxmat_only: bool
    options: dict          # fields of the backend's TrainOptions
    pretrained: Optional[str] = None


def _split_name(data: List[str], name: Optional[str]) -> tuple[List[str], str]:
    """``train DATA_DIR NAME`` (as ``larvatagger.jl train``) or ``train DATA... -m NAME``."""
    data = list(data or [])
    if name is None and len(data) >= 2 and not Path(data[-1]).exists():
        name = data.pop()
    if not name:
        raise typer.BadParameter("name the new model instance: --model-instance NAME (or DATA_DIR NAME)",
                                 param_hint="--model-instance")
    return data, name


def _train_common(request: _Training) -> None:
    """Direct mode (data given), or backend project mode (data in data/raw/<token>):
    with the project's own scripts if it has them, else with a backend plug-in."""
    from .project import new_model_instance

    options = request.options
    if options["balancing"] not in ("auto", "maggotuba", "none"):
        raise typer.BadParameter("auto, maggotuba or none", param_hint="--balancing-strategy")
    if request.data:
        sources = _training_sources([Path(d) for d in request.data], request.trxmat_only)
        name = request.name
        output_dir = Path(name) if ("/" in name or name.startswith(".")) else request.models_dir / name
        with new_model_instance(output_dir) as work:
            result = _train_with_backend(request, sources, work, project=None)
        _report_training(result, output_dir)
        return
    from .explorer import BackendExplorer

    explorer = BackendExplorer(Path.cwd(), model_instance=request.name, sandbox=request.sandbox,
                               pretrained_model_instance=request.pretrained)
    raw = explorer.raw_data_dir(create=False)
    if not raw.is_dir() or not any(raw.iterdir()):
        raise TaggingError(f"{raw}: no training data; put label files and their tracking files there "
                           "(or give a data directory as argument)")
    output_dir = explorer.model_dir()
    step = "finetune_model" if request.start_from else "train_model"
    with explorer.lock():
        if request.backend is None and explorer.script(step) is not None:
            if output_dir.exists() and any(output_dir.iterdir()):
                raise OutputExistsError(f"{output_dir}: model instance already exists; choose another name")
            script_options = {k: v for k, v in options.items() if k != "write_dataset"}
            if request.start_from:
                script_options["original_model_instance"] = request.start_from
            _run_project_scripts(explorer, step, make_dataset=request.make_dataset,
                                 build_features=request.build_features,
                                 options={**script_options, "trxmat_only": request.trxmat_only})
            say(f"{explorer.script(step).name}: wrote {output_dir}")
            return
        with new_model_instance(output_dir) as work:
            interim = explorer.interim_data_dir()
            saved = sorted(interim.glob("larva_dataset_*.hdf5"))
            if not request.make_dataset and saved:
                sources = [saved[-1]]  # --skip-make-dataset: the dataset made by an earlier run
            else:
                sources = _training_sources([raw], request.trxmat_only)
                if options.get("write_dataset") is None and not request.start_from:
                    options = {**options, "write_dataset": interim}
            result = _train_with_backend(dataclasses.replace(request, options=options), sources, work,
                                         project=explorer.project_dir)
    _report_training(result, output_dir)


def _training_sources(paths: List[Path], trxmat_only: bool) -> List[Path]:
    for path in paths:
        if not path.exists():
            raise TaggingError(f"{path}: no such file or directory")
    if not trxmat_only:
        return paths
    found = [p for path in paths for p in (sorted(path.rglob("*.mat")) if path.is_dir() else [path])
             if p.suffix.lower() == ".mat"]
    if not found:
        raise TaggingError("--trxmat-only: no trx.mat files in " + ", ".join(map(str, paths)))
    return found


@contextlib.contextmanager
def _stage_progress(totals: dict):
    """Progress bars for long training work, one per stage, fed by a backend's
    ``progress(stage, done, loss)`` callback. A stage's total comes from ``totals``
    by its name or its last comma-separated part (bagging prefixes the member);
    unknown stages get an open-ended bar. Transient: logs keep only the summary."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]:.4g}"), TimeRemainingColumn())
    with Progress(*columns, console=console, disable=_no_progress_bars(), transient=True) as bar:
        tasks: dict = {}

        def report(stage: str, done: int, loss: float) -> None:
            if stage not in tasks:
                total = totals.get(stage, totals.get(stage.rsplit(", ", 1)[-1]))
                tasks[stage] = bar.add_task(stage, total=total, loss=float(loss))
            bar.update(tasks[stage], completed=done, loss=float(loss))

        yield report


def _accepts_progress(function) -> bool:
    """Whether a plug-in's entry point takes a ``progress`` callback (optional for plug-ins)."""
    return "progress" in inspect.signature(function).parameters


def _train_with_backend(request: _Training, sources: List[Path], output_dir: Path,
                        project: Optional[Path]) -> dict:
    from .backends import get_backend

    module = get_backend(request.backend)
    resolve = (lambda f, n: f(n, project)) if project else (lambda f, n: f(n))
    base = resolve(module.resolve_model, request.start_from) if request.start_from else None
    encoder = None if base else resolve(module.resolve_pretrained, request.pretrained)
    options = module.TrainOptions(**request.options)
    if not _accepts_progress(module.train_instance):
        return module.train_instance(sources, output_dir, options, pretrained=encoder, start_from=base)
    frozen, tuned = request.options["iterations"]
    with _stage_progress({"frozen encoder": frozen, "fine-tuning": tuned}) as report:
        return module.train_instance(sources, output_dir, options, pretrained=encoder, start_from=base,
                                     progress=report)


def _report_training(result: dict, output_dir: Path) -> None:
    say(f"wrote {output_dir} ({', '.join(result['labels'])}; {result['samples']} training windows; "
        f"best validation macro-F1 {result['best_macro_f1']:.3f})")


def _train_options(*, labels, balancing, class_weights, sample_size, include_all, iterations, layers, seed,
                   window_length, frame_interval, device, write_dataset, **classifier) -> dict:
    weights = None
    if class_weights:
        try:
            weights = [float(w) for w in _csv(class_weights)]
        except ValueError:
            raise typer.BadParameter("comma-separated numbers", param_hint="--class-weights") from None
    return dict(labels=_csv(labels), balancing=balancing, class_weights=weights, sample_size=sample_size,
                include_all=include_all or None, iterations=_parse_iterations(iterations), layers=layers,
                seed=seed, window_length=window_length, frame_interval=frame_interval, device=device,
                write_dataset=write_dataset, **classifier)


_TRAIN_OPTIONS = dict(
    labels=typer.Option(None, "--labels", help="Comma-separated labels or selectors (¬label for one-vs-rest)."),
    balancing=typer.Option("auto", "--balancing-strategy", help="auto, maggotuba or none."),
    class_weights=typer.Option(None, "--class-weights", help="Comma-separated, one per label."),
    sample_size=typer.Option(None, "--sample-size", help="At most this many training windows."),
    include_all=typer.Option("edited", "--include-all", help="Always keep steps carrying this label."),
    iterations=typer.Option("1000,1000", "--iterations", help="N1,N2: frozen-encoder then fine-tuning iterations."),
    layers=typer.Option(1, "--layers", help="Dense layers of the classifier."),
    seed=typer.Option(0, "--seed"),
    window_length=typer.Option(None, "--window-length", help="Window points (must match the encoder)."),
    frame_interval=typer.Option(None, "--frame-interval", help="Seconds between window points."),
    device=typer.Option("cpu", "--device"),
    backend=typer.Option(None, "--backend", help="Backend plug-in (default: the project's scripts if any, "
                                                  "else maggotuba)."),
    models_dir=typer.Option(Path("models"), "--models-dir", help="Direct mode: where new model instances go."),
    write_dataset=typer.Option(None, "--write-dataset", help="Also save the larva_dataset_*.hdf5 here."),
    sandbox=typer.Option(None, "--sandbox", help="Backend project mode: read data/raw/SANDBOX."),
    make_dataset=typer.Option(True, "--make-dataset/--skip-make-dataset",
                              help="Backend project mode: build the training dataset (default), or reuse "
                                   "the larva_dataset_*.hdf5 an earlier run left in data/interim/<token>."),
    reuse_h5files=typer.Option(False, "--reuse-h5files", help="Same as --skip-make-dataset."),
    build_features=typer.Option(True, "--build-features/--skip-build-features",
                                help="Backend project mode: run the project's build_features.py, if any."),
    trxmat_only=typer.Option(False, "--trxmat-only",
                             help="Train on the behaviour tags of trx.mat files only (ignore .label files)."),
)


@app.command()
def train(
    data: List[str] = typer.Argument(None, metavar="[DATA_DIR]... [NAME]",
                                     help="Label files or directories of them (default, in a backend "
                                          "project: data/raw/NAME); then, without -m, the new instance's name."),
    name: Optional[str] = typer.Option(None, "--model-instance", "-m", help="Name of the new model instance."),
    pretrained: Optional[str] = typer.Option(None, "--pretrained-model-instance",
                                             help="Pretrained encoder: name or directory (ours or the "
                                                  "original MaggotUBA's); default: shipped default."),
    labels: Optional[str] = _TRAIN_OPTIONS["labels"], balancing: str = _TRAIN_OPTIONS["balancing"],
    class_weights: Optional[str] = _TRAIN_OPTIONS["class_weights"],
    sample_size: Optional[int] = _TRAIN_OPTIONS["sample_size"], include_all: str = _TRAIN_OPTIONS["include_all"],
    iterations: str = _TRAIN_OPTIONS["iterations"], layers: int = _TRAIN_OPTIONS["layers"],
    seed: int = _TRAIN_OPTIONS["seed"], window_length: Optional[int] = _TRAIN_OPTIONS["window_length"],
    frame_interval: Optional[float] = _TRAIN_OPTIONS["frame_interval"], device: str = _TRAIN_OPTIONS["device"],
    backend: Optional[str] = _TRAIN_OPTIONS["backend"], models_dir: Path = _TRAIN_OPTIONS["models_dir"],
    write_dataset: Optional[Path] = _TRAIN_OPTIONS["write_dataset"],
    sandbox: Optional[str] = _TRAIN_OPTIONS["sandbox"], make_dataset: bool = _TRAIN_OPTIONS["make_dataset"],
    reuse_h5files: bool = _TRAIN_OPTIONS["reuse_h5files"], build_features: bool = _TRAIN_OPTIONS["build_features"],
    trxmat_only: bool = _TRAIN_OPTIONS["trxmat_only"],
    classifier: str = typer.Option("dense", "--classifier",
                                   help="dense (encoder + dense layers, fine-tuned), randomforest "
                                        "(frozen encoder + random forest, the 20220418 design) or bagging "
                                        "(an ensemble of dense taggers on several window lengths, majority "
                                        "vote, the 20221228 design)."),
    n_estimators: int = typer.Option(100, "--n-estimators", min=1, help="Trees (random forest)."),
    max_depth: Optional[int] = typer.Option(None, "--max-depth", min=1, help="Tree depth (random forest)."),
    bag_window_lengths: Optional[str] = typer.Option(
        None, "--bag-window-lengths", help="Bagging: comma-separated window lengths in points (default: the "
                                           "pretrained encoder's; upstream's 20221228 used 15,30)."),
    bag_size: int = typer.Option(25, "--bag-size", min=1, help="Bagging: members per window length."),
) -> None:
    """Train a new tagger on labelled data (label files with their tracking files).

    Examples: tagging-backend train demo --model-instance mytagger --iterations 200,200
    (direct), tagging-backend train demo mytagger (as larvatagger.jl train), or, in a backend
    project with the data in data/raw/mytagger: tagging-backend train --model-instance mytagger
    """
    data, name = _split_name(data, name)
    options = _train_options(labels=labels, balancing=balancing, class_weights=class_weights,
                             sample_size=sample_size, include_all=include_all, iterations=iterations,
                             layers=layers, seed=seed, window_length=window_length, frame_interval=frame_interval,
                             device=device, write_dataset=write_dataset, classifier=classifier,
                             n_estimators=n_estimators, max_depth=max_depth,
                             bag_window_lengths=_int_list(bag_window_lengths, "--bag-window-lengths"),
                             bag_members=bag_size)
    _train_common(_Training(data=data, name=name, start_from=None, backend=backend, models_dir=models_dir,
                            sandbox=sandbox, make_dataset=make_dataset and not reuse_h5files,
                            build_features=build_features, trxmat_only=trxmat_only, options=options,
                            pretrained=pretrained))


@app.command()
def finetune(
    data: List[str] = typer.Argument(None, metavar="[DATA_DIR]...",
                                     help="Label files or directories of them (default, in a backend "
                                          "project: data/raw/<output instance>)."),
    model_instance: Optional[str] = typer.Option(None, "--model-instance", "-m",
                                                 help="Existing tagger to start from (default: the shipped "
                                                      "default); the NEW instance when --original-model-instance "
                                                      "is given (upstream form)."),
    output_instance: Optional[str] = typer.Option(None, "--output-instance", "-O",
                                                  help="Name of the new model instance."),
    original: Optional[str] = typer.Option(None, "--original-model-instance",
                                           help="Upstream form: the tagger to start from, with --model-instance "
                                                "naming the new one."),
    labels: Optional[str] = _TRAIN_OPTIONS["labels"], balancing: str = _TRAIN_OPTIONS["balancing"],
    class_weights: Optional[str] = _TRAIN_OPTIONS["class_weights"],
    sample_size: Optional[int] = _TRAIN_OPTIONS["sample_size"], include_all: str = _TRAIN_OPTIONS["include_all"],
    iterations: str = _TRAIN_OPTIONS["iterations"], seed: int = _TRAIN_OPTIONS["seed"],
    device: str = _TRAIN_OPTIONS["device"], backend: Optional[str] = _TRAIN_OPTIONS["backend"],
    models_dir: Path = _TRAIN_OPTIONS["models_dir"], sandbox: Optional[str] = _TRAIN_OPTIONS["sandbox"],
    build_features: bool = _TRAIN_OPTIONS["build_features"], trxmat_only: bool = _TRAIN_OPTIONS["trxmat_only"],
) -> None:
    """Further train an existing tagger on new labelled data; saves a NEW model instance.

    Examples: tagging-backend finetune demo --model-instance default --output-instance default-mylab,
    or, in a backend project with the data in data/raw/mylab (upstream form):
    tagging-backend finetune --original-model-instance default --model-instance mylab
    """
    start_from, name = _finetune_names(model_instance, output_instance, original)
    options = _train_options(labels=labels, balancing=balancing, class_weights=class_weights,
                             sample_size=sample_size, include_all=include_all, iterations=iterations, layers=1,
                             seed=seed, window_length=None, frame_interval=None, device=device, write_dataset=None)
    _train_common(_Training(data=list(data or []), name=name, start_from=start_from, backend=backend,
                            models_dir=models_dir, sandbox=sandbox, make_dataset=True,
                            build_features=build_features, trxmat_only=trxmat_only, options=options))


def _finetune_names(model_instance: Optional[str], output_instance: Optional[str],
                    original: Optional[str]) -> tuple:
    """(tagger to start from, new instance) from either naming form."""
    if original is not None:
        if model_instance and output_instance:
            raise typer.BadParameter("with --original-model-instance, name the new instance once "
                                     "(--model-instance or --output-instance)", param_hint="--output-instance")
        name = output_instance or model_instance
        if not name:
            raise typer.BadParameter("name the new instance", param_hint="--model-instance")
        return original, name
    if not output_instance:
        raise typer.BadParameter("name the new instance (or use --original-model-instance OLD "
                                 "--model-instance NEW)", param_hint="--output-instance")
    return model_instance or "default", output_instance


@app.command()
def pretrain(
    data: List[Path] = typer.Argument(..., metavar="TRACKING...", help="Tracking files (no labels needed)."),
    name: str = typer.Option(..., "--model-instance", "-m", help="Name (or directory) of the new encoder."),
    window_length: int = typer.Option(20, "--window-length", min=2, help="Points per window."),
    frame_interval: float = typer.Option(0.1, "--frame-interval", help="Seconds between points."),
    latent: int = typer.Option(25, "--latent-dim", min=1, help="Latent space size."),
    iterations: int = typer.Option(1000, "--iterations", min=1),
    windows: int = typer.Option(100_000, "--windows", min=10, help="Windows sampled for training."),
    seed: int = typer.Option(100, "--seed"),
    device: str = typer.Option("cpu", "--device"),
    backend: Optional[str] = typer.Option(None, "--backend"),
    models_dir: Path = typer.Option(Path("pretrained_models"), "--models-dir"),
) -> None:
    """Self-supervised pretraining of the MaggotUBA autoencoder on tracking data.

    Resumes from its checkpoint if interrupted. Example:
    tagging-backend pretrain demo/trx.mat --model-instance mine --iterations 200
    """
    from .backends import get_backend

    module = get_backend(backend)
    output_dir = Path(name) if ("/" in name or name.startswith(".")) else models_dir / name
    found = _tracking_inputs(list(data))
    arguments = dict(window_length=window_length, frame_interval=frame_interval, latent=latent,
                     iterations=iterations, windows=windows, seed=seed, device=device)
    with _stage_progress({"pretraining": iterations}) as report:
        if _accepts_progress(module.pretrain_instance):
            arguments["progress"] = lambda done, loss, validation_loss: report("pretraining", done, loss)
        result = module.pretrain_instance(found, output_dir, **arguments)
    say(f"wrote {result['output']} ({result['windows']} windows; best validation MSE {result['best_loss']:.5f})")


# ------------------------------------------------- merge, backends, new
@app.command()
def merge(
    predicted: Path = typer.Argument(..., metavar="PREDICTED", help="Automatic labels (e.g. predicted.label)."),
    manual: Path = typer.Argument(..., metavar="MANUAL", help="Labels holding manual edits."),
    output: Optional[Path] = typer.Argument(None, metavar="[OUTPUT]",
                                            help="Default: PREDICTED's directory, merged.label."),
    manual_label: str = typer.Option("edited", "--manual-label",
                                     help="Secondary label that marks a manually edited step."),
    decode: bool = typer.Option(False, "--decode", help="Write label names instead of integer codes."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUTPUT if it exists."),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Check the files' dependencies' SHA-1."),
) -> None:
    """Merge manually edited steps into automatic labels (as `larvatagger.jl merge`).

    Every step of MANUAL that carries the manual label (default `edited`) replaces the
    automatic label at the same time; tracks only in MANUAL are copied over.
    Example: tagging-backend merge demo/predicted.label demo/groundtruth.label demo/merged.label
    """
    from .data.labels import Labels, is_edited

    automatic = Labels.load(predicted, verify=verify)
    edits = Labels.load(manual, verify=verify)
    output = output or predicted.parent / "merged.label"
    if output.exists() and not overwrite:
        raise OutputExistsError(f"{output}: already exists (pass --overwrite to replace it)")
    merged = automatic.merge(edits, predicate=lambda entry: is_edited(entry, manual_label))
    n_edited = sum(is_edited(e, manual_label) for track in edits.tracks.values() for e in track.labels)
    merged.metadata["provenance"] = provenance("merge", predicted=str(predicted), manual=str(manual),
                                               manual_label=manual_label)
    merged.dump(output, encode=not decode, overwrite=overwrite)
    say(f"wrote {output} ({n_edited} edited steps of {manual.name} merged into {predicted.name})")


@app.command()
def backends() -> None:
    """List the installed backend plug-ins, and the backend project in the current directory.

    Third-party backends register a module under the entry-point group
    `taggingbackends.backends`; projects made by `tagging-backend new` run their own scripts.
    Example: tagging-backend backends
    """
    from .backends import installed
    from .explorer import SCRIPTS, BackendExplorer, is_backend_project

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


@app.command()
def new(
    name: str = typer.Argument(..., metavar="NAME", help="Project name, e.g. My-Tagger (package my_tagger)."),
    parent: Path = typer.Option(Path("."), "--in", help="Directory to create the project in."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing project directory."),
) -> None:
    """Create a backend project (upstream's template layout) with a working example tagger.

    Example: tagging-backend new My-Tagger && cd My-Tagger  (then see its README.md)
    """
    from .newproject import create_project

    path = create_project(name, parent, overwrite=overwrite)
    say(f"created {path}: put labelled data in data/raw/<instance>/, then run "
        "`tagging-backend train --model-instance <instance>` there")


# ----------------------------------------------------------------- main
_GLOBAL_FLAGS = ("--debug", "--quiet", "-q")


def _hoist_global_flags(args: List[str]) -> List[str]:
    """Upstream passes ``--debug`` after the command (``tagging-backend train --debug``):
    global flags are accepted anywhere and moved before the command."""
    flags = [a for a in args if a in _GLOBAL_FLAGS]
    return flags + [a for a in args if a not in _GLOBAL_FLAGS]


def _exit_cleanly_on_sigterm() -> None:
    """SIGTERM (a batch scheduler's first signal, `kill`'s default) raises SystemExit,
    so that temporary files are removed on the way out and no partial output remains."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def main(argv: Optional[List[str]] = None) -> None:
    """Console-script entry point: run the app, turning user errors into one line."""
    args = _hoist_global_flags(list(sys.argv[1:] if argv is None else argv))
    _exit_cleanly_on_sigterm()
    try:
        app(args=args, prog_name="tagging-backend")
    except TaggingError as err:
        if state.debug:
            raise
        err_console.print(f"[red]error:[/red] {err}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except OSError as err:
        if state.debug:
            raise
        where = f"{err.filename}: " if err.filename else ""
        err_console.print(f"[red]error:[/red] {where}{err.strerror or err}", highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
