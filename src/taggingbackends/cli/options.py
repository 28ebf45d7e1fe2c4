"""What several commands share: reader options, input discovery, output templates,
overwrite guards and progress bars. Defined once here, used by every command module.

Options are ``typing.Annotated`` aliases, so a command declares ``framerate: Framerate = None``
and gets the same flag name, type and help as every other command.
"""

from __future__ import annotations

import contextlib
import glob
import inspect
from pathlib import Path
from typing import Annotated, Iterable, Iterator, List, Optional

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
    detected by content, `.outline` partners and `.label` files skipped.
    The whole list; :func:`iter_tracking_inputs` streams the same sequence."""
    found = list(iter_tracking_inputs(paths))
    if not found:
        raise TaggingError("no tracking files found in " + ", ".join(map(str, paths)))
    return found


GLOB_CHARACTERS = frozenset("*?[")


def iter_tracking_inputs(paths: Iterable[Path]) -> Iterator[Path]:
    """The tracking files named by ``paths``, one at a time, in a deterministic order
    (so that ``--shard I/N`` picks the same files in every job of an array).

    Each path is a tracking file, a directory (searched recursively, files detected by
    content), a ``.txt`` list of inputs, or a glob pattern that matched nothing literally
    (``'screen/**/trx.mat'``: quoted, so that the shell does not expand it). Directories are
    walked lazily, so a screen of many thousand files never sits in memory as a list."""
    for path in paths:
        if not path.exists() and GLOB_CHARACTERS & set(str(path)):
            matches = sorted(glob.iglob(str(path), recursive=True))
            if not matches:
                raise TaggingError(f"{path}: no file matches this pattern")
            yield from iter_tracking_inputs(Path(m) for m in matches)
            continue
        if not path.exists():
            raise TaggingError(f"{path}: no such file or directory")
        if path.is_file():
            yield from (listed_inputs(path) if is_file_list(path) else [path])
            continue
        yield from _directory_inputs(path)


def _directory_inputs(directory: Path) -> Iterator[Path]:
    """The tracking files under ``directory`` (a Schleyer CSV folder is one run), in the
    order of ``sorted(directory.rglob("*"))``, found one folder at a time."""
    from ..formats import detect

    try:
        if detect(directory).name == "schleyer":
            yield directory
            return
    except TaggingError:
        pass
    yield from _walk_files(directory)


def _walk_files(directory: Path) -> Iterator[Path]:
    for entry in sorted(directory.iterdir(), key=lambda p: p.name):
        if entry.is_dir() and not entry.is_symlink():
            yield from _walk_files(entry)
        elif entry.is_file() and _is_tracking_candidate(entry):
            yield entry


def _is_tracking_candidate(path: Path) -> bool:
    from ..formats import detect

    if path.suffix.lower() in LABEL_INPUT_SUFFIXES + (".outline",):
        return False
    try:
        detect(path)
    except TaggingError:
        return False
    return True


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
    outputs = [output_path(path, template, model) for path in inputs]
    seen: dict = {}
    for path, out in zip(inputs, outputs):
        key = out.resolve()
        if key in seen:
            raise TaggingError(collision_message(seen[key], path, out))
        seen[key] = path
    return outputs


def output_path(path: Path, template: str, model: str) -> Path:
    """The output file of one input from a template ({dir}, {stem}, {name}, {model})."""
    directory = path if path.is_dir() else path.parent
    stem = path.name.split(".")[0] if path.is_file() else path.name
    try:
        return Path(template.format(dir=directory, stem=stem, name=path.name, model=model))
    except (KeyError, IndexError, ValueError) as err:
        raise TaggingError(f"--output {template!r}: bad template ({err}); fields: {{dir}}, "
                           "{stem}, {name}, {model}") from None


def template_varies(template: str) -> bool:
    """Whether ``template`` gives different inputs different outputs (it names {dir},
    {stem} or {name}); a fixed one can take a single input only."""
    one = template.format(dir="/a", stem="a", name="a.x", model="m") if "{" in template else template
    two = template.format(dir="/b", stem="b", name="b.x", model="m") if "{" in template else template
    return one != two


def collision_message(first: Path, second: Path, out: Path) -> str:
    return (f"{first} and {second} would both be written to {out}; use an --output template "
            "such as '{dir}/{stem}.label'")


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


# ----------------------------------------------------- batch runs (dask)
Workers = Annotated[Optional[int], typer.Option(
    "--workers", min=1, help="Local worker processes for several inputs (default: the usable cores).")]
Scheduler = Annotated[Optional[str], typer.Option(
    "--scheduler", help="Address of a running dask scheduler (tcp://host:8786): tag on its workers.")]
Cluster = Annotated[Optional[str], typer.Option(
    "--cluster", help="slurm: start dask workers as Slurm jobs (needs dask-jobqueue: pip install "
                      "'taggingbackends\\[slurm]').")]
Jobs = Annotated[int, typer.Option("--jobs", min=1, help="--cluster slurm: Slurm jobs to start.")]
Cores = Annotated[Optional[int], typer.Option(
    "--cores", min=1, help="--cluster slurm: cores per job, one worker process each (default 1).")]
Memory = Annotated[Optional[str], typer.Option("--memory", help="--cluster slurm: memory per job (default 4GB).")]
Walltime = Annotated[Optional[str], typer.Option(
    "--walltime", help="--cluster slurm: time limit per job, HH:MM:SS (default 01:00:00).")]
Queue = Annotated[Optional[str], typer.Option("--queue", help="--cluster slurm: partition.")]
JobExtra = Annotated[Optional[List[str]], typer.Option(
    "--job-extra", help="--cluster slurm: extra sbatch option, repeatable (e.g. --job-extra=--gres=gpu:1).")]
Shard = Annotated[Optional[str], typer.Option(
    "--shard", help="I/N: tag only every N-th input starting at the I-th (0-based), e.g. "
                    "$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT in a job array.")]
Summary = Annotated[Optional[Path], typer.Option(
    "--summary", help="Write a JSON summary (every file's status, reason, steps; totals).")]


def execution_options(workers: Optional[int] = None, scheduler: Optional[str] = None,
                      cluster: Optional[str] = None, jobs: int = 1, cores: Optional[int] = None,
                      memory: Optional[str] = None, walltime: Optional[str] = None, queue: Optional[str] = None,
                      job_extra: Optional[List[str]] = None, shard: Optional[str] = None):
    """A :class:`taggingbackends.batch.Execution` from the batch flags, checked."""
    from ..batch import Execution, parse_shard

    if cluster not in (None, "slurm", "local"):
        raise typer.BadParameter("choose slurm (or leave it out for a local cluster)", param_hint="--cluster")
    if cluster == "slurm" and scheduler:
        raise typer.BadParameter("give either --scheduler or --cluster slurm", param_hint="--cluster")
    try:
        parsed_shard = parse_shard(shard) if shard else None
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--shard") from None
    return Execution(workers=workers, scheduler=scheduler, cluster=None if cluster == "local" else cluster,
                     jobs=jobs, cores=cores, memory=memory, walltime=walltime, queue=queue,
                     job_extra=tuple(job_extra or ()), shard=parsed_shard)


class BatchProgress:
    """A progress bar over files and larva-steps (on a terminal only), fed with each file's
    record; its total is set once every input has been found (until then it is open-ended)."""

    def __init__(self, bar) -> None:
        self.bar = bar
        self.task = bar.add_task("tagging", total=None, steps=0, rate=0.0)
        self.started = bar.get_time()
        self.steps = 0

    def advance(self, record: dict) -> None:
        self.steps += record.get("steps", 0)
        elapsed = max(self.bar.get_time() - self.started, 1e-9)
        self.bar.update(self.task, advance=1, steps=self.steps, rate=self.steps / elapsed)

    def set_total(self, total: int) -> None:
        self.bar.update(self.task, total=total)


@contextlib.contextmanager
def batch_progress():
    """A :class:`BatchProgress` on the console (disabled off a terminal or with --quiet)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("files · {task.fields[steps]:,} larva-steps · {task.fields[rate]:,.0f} steps/s"),
               TimeElapsedColumn())
    with Progress(*columns, console=console, disable=no_progress_bars(), transient=True) as bar:
        yield BatchProgress(bar)


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
