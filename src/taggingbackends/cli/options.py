"""What several commands share: reader options, input discovery, output templates,
overwrite guards and progress bars. Defined once here, used by every command module.

Options are ``typing.Annotated`` aliases, so a command declares ``framerate: Framerate = None``
and gets the same flag name, type and help as every other command.
"""

from __future__ import annotations

import contextlib
import inspect
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from ..errors import OutputExistsError, TaggingError
from .app import console, no_progress_bars

# ------------------------------------------------------------ reader options
InputFormat = Annotated[str, typer.Option("--format", "-f", help="Input format (see `formats`); "
                                                                 "default: detected from the content.")]
Framerate = Annotated[Optional[float], typer.Option(
    "--framerate", help="Frame rate in Hz, for formats whose files do not state it (FIMTrack, Schleyer CSV).")]
Pixelsize = Annotated[Optional[float], typer.Option("--pixelsize", help="Pixel size in µm (FIMTrack).")]
Verify = Annotated[bool, typer.Option("--verify/--no-verify", help="Check .label dependencies' SHA-1.")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace the output if it exists.")]
Decode = Annotated[bool, typer.Option("--decode", help="Write label names instead of integer codes.")]


def reader_options(framerate: Optional[float] = None, pixelsize: Optional[float] = None,
                   verify: bool = True, input_format: str = "auto") -> dict:
    """Keyword arguments for :func:`taggingbackends.formats.load` from the reader flags
    (only those the user gave, so each format keeps its own defaults).

    Every command that reads tracking files takes these flags (``import``, ``convert``,
    ``predict``, ``train``, ``finetune``, ``pretrain``) and hands this dict on, so that
    a file is read the same way by all of them. ``input_format`` (``--format``) is
    included as ``format`` unless ``auto``."""
    for flag, value in (("--framerate", framerate), ("--pixelsize", pixelsize)):
        if value is not None and not (value > 0 and value != float("inf")):
            raise typer.BadParameter("must be a positive number", param_hint=flag)
    options: dict = {}
    if input_format and input_format != "auto":
        from ..formats import get_format

        try:
            get_format(input_format)
        except ValueError as err:
            raise typer.BadParameter(str(err), param_hint="--format") from None
        options["format"] = input_format
    if framerate is not None:
        options["framerate"] = framerate
    if pixelsize is not None:
        options["pixelsize"] = pixelsize
    if not verify:
        options["verify"] = False
    return options


# ----------------------------------------------------------- input discovery
LABEL_INPUT_SUFFIXES = (".label", ".labels", ".json", ".nyxlabel")


def tracking_inputs(paths: List[Path]) -> List[Path]:
    """Expand directories into the tracking files they hold (one per run).

    A directory of Schleyer CSV files is one run; otherwise files are
    detected by content, `.outline` partners and `.label` files skipped."""
    from ..formats import detect

    found: List[Path] = []
    for path in paths:
        if not path.exists():
            raise TaggingError(f"{path}: no such file or directory")
        if path.is_file():
            found.extend(listed_inputs(path) if is_file_list(path) else [path])
            continue
        try:
            if detect(path).name == "schleyer":
                found.append(path)
                continue
        except TaggingError:
            pass
        for candidate in sorted(p for p in path.rglob("*") if p.is_file()):
            if candidate.suffix.lower() in LABEL_INPUT_SUFFIXES + (".outline",):
                continue
            try:
                detect(candidate)
            except TaggingError:
                continue
            found.append(candidate)
    if not found:
        raise TaggingError("no tracking files found in " + ", ".join(map(str, paths)))
    return found


def is_file_list(path: Path) -> bool:
    """A ``.txt`` file that is no tracking format: a list of inputs (as `larvatagger predict
    files.txt`)."""
    from ..formats import detect

    if path.suffix.lower() != ".txt":
        return False
    try:
        detect(path)
    except TaggingError:
        return True
    return False


def listed_inputs(list_file: Path) -> List[Path]:
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
        if entry.is_file() and is_file_list(entry):
            raise TaggingError(f"{list_file}: line {number}: {line}: lists of lists are not supported")
        entries.append(entry)
    if not entries:
        raise TaggingError(f"{list_file}: an empty list of files")
    return tracking_inputs(entries)


# --------------------------------------------- output templates, overwrite guards
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


def refuse_existing(output: Path, overwrite: bool) -> None:
    """OutputExistsError unless ``output`` is new or ``--overwrite`` was given."""
    if output.exists() and not overwrite:
        raise OutputExistsError(f"{output}: already exists (pass --overwrite to replace it)")


def check_existing(outputs: List[Path], overwrite: bool, overwrite_edited: bool) -> None:
    """Refuse to replace existing label files without ``--overwrite``, and files holding
    manual edits without ``--overwrite-edited``: a user's labels are never lost silently."""
    from ..data.labels import Labels, is_edited

    for out in outputs:
        if not out.exists():
            continue
        refuse_existing(out, overwrite)
        try:
            labels = Labels.load(out, verify=False)
        except TaggingError:
            continue
        edited = any(is_edited(e) for track in labels.tracks.values() for e in track.labels)
        if edited and not overwrite_edited:
            raise OutputExistsError(f"{out}: holds manually edited labels; pass --overwrite-edited "
                                    "to replace them (or choose another --output)")


# ------------------------------------------------------------- progress bars
@contextlib.contextmanager
def stage_progress(totals: dict):
    """Progress bars for long training work, one per stage, fed by a backend's
    ``progress(stage, done, loss)`` callback. A stage's total comes from ``totals``
    by its name or its last comma-separated part (bagging prefixes the member);
    unknown stages get an open-ended bar. Transient: logs keep only the summary."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]:.4g}"), TimeRemainingColumn())
    with Progress(*columns, console=console, disable=no_progress_bars(), transient=True) as bar:
        tasks: dict = {}

        def report(stage: str, done: int, loss: float) -> None:
            if stage not in tasks:
                total = totals.get(stage, totals.get(stage.rsplit(", ", 1)[-1]))
                tasks[stage] = bar.add_task(stage, total=total, loss=float(loss))
            bar.update(tasks[stage], completed=done, loss=float(loss))

        yield report


def accepts_progress(function) -> bool:
    """Whether a plug-in's entry point takes a ``progress`` callback (optional for plug-ins)."""
    return accepts_keyword(function, "progress")


def accepts_keyword(function, name: str) -> bool:
    """Whether a plug-in's entry point takes the keyword ``name`` (``progress``,
    ``reader``: optional for plug-ins)."""
    return name in inspect.signature(function).parameters


# ------------------------------------------------------------ small parsers
def csv_list(text: Optional[str]) -> Optional[list]:
    """``"a, b,c"`` → ``["a", "b", "c"]``; None for an empty or missing value."""
    return [v.strip() for v in text.split(",") if v.strip()] if text else None


def int_list(text: Optional[str], hint: str) -> Optional[list]:
    """Comma-separated integers, or a usage error naming the flag ``hint``."""
    try:
        return [int(v) for v in csv_list(text)] if text else None
    except ValueError:
        raise typer.BadParameter("comma-separated integers", param_hint=hint) from None
