"""The ``tagging-backend`` command line (typer + rich).

Errors caused by the user's input print one line, ``error: <file>: <problem>``,
and exit with status 1 (2 for usage errors); ``--debug`` shows the traceback.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
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
    """Versions of the package, Python and key dependencies (torch is not imported)."""
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
    """Supported tracking/label formats, their suffixes and how each is detected."""
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
    say(f"wrote {output} ({run.n_tracks} larvae, {run.n_steps} steps, "
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
    say(f"wrote {output} ({run.n_tracks} larvae, {run.n_steps} steps)")


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
    say(f"wrote {', '.join(str(p) for p in paths)} ({result.run.n_tracks} larvae, "
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


# ----------------------------------------------------------------- main
def main(argv: Optional[List[str]] = None) -> None:
    """Console-script entry point: run the app, turning user errors into one line."""
    try:
        app(args=argv, prog_name="tagging-backend")
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
