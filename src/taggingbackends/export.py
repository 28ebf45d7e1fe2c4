"""Tags out of `.label` files and into analyses: tables (CSV, Parquet), trx.mat, NWB.

Three tables, built with pyarrow from :class:`~taggingbackends.data.predicted.LabelInput`
runs (one table for all inputs, a ``run`` column telling them apart):

* ``steps``: one row per larva and time step: ``run``, ``larva``, ``t``, ``label``
  (the primary label, null when unlabelled), ``secondary_labels`` (a list in Parquet,
  ``;``-joined in CSV) and ``p_<label>`` for every class of the probabilities sidecar
  when there is one (float32 as in the sidecar; null where a step has no probability);
* ``bouts``: one row per bout (:mod:`taggingbackends.data.bouts`): ``run``, ``larva``,
  ``behaviour``, ``start``, ``end``, ``duration`` (s), ``n_steps``, ``mean_probability``
  (the mean probability of the bout's behaviour over its steps; null without sidecar);
* ``summary``: one row per larva and behaviour: ``labelled_s`` (time the larva was
  labelled, the sum of its bout durations), ``time_s`` and ``time_fraction`` spent in the
  behaviour, ``bouts`` and ``bout_rate_per_min`` (bouts per minute of labelled time).
  Every behaviour of the label files gets a row, zero included, so that means over
  larvae are right.

Per-run formats: ``trxmat`` (a copy of the run's tracking trx.mat with one ±1 flag field
per label, :func:`export_trxmat`) and ``nwb`` (the bouts as an NWB ``TimeIntervals``
table, :func:`export_nwb`). Every writer is atomic and refuses to replace a file unless
asked to; Parquet and NWB outputs carry the provenance.
"""

from __future__ import annotations

import json
import uuid
import warnings
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .data.bouts import Bout, track_bouts
from .data.labels import TIME_PRECISION, entry_names, match_times, primary
from .data.predicted import LabelInput, behaviour_names
from .errors import FormatError, TaggingError
from .fileio import atomic_path

TABLES = ("steps", "bouts", "summary")
TABLE_FORMATS = ("csv", "parquet")
RUN_FORMATS = ("trxmat", "nwb")
FORMATS = TABLE_FORMATS + RUN_FORMATS
PROVENANCE_KEY = b"taggingbackends.provenance"


# --------------------------------------------------------------------- tables
def build_table(name: str, inputs: Sequence[LabelInput]):
    """The ``steps``, ``bouts`` or ``summary`` table of ``inputs`` (a ``pyarrow.Table``)."""
    builders = {"steps": steps_table, "bouts": bouts_table, "summary": summary_table}
    if name not in builders:
        raise TaggingError(f"--table {name}: choose one of {', '.join(TABLES)}")
    return builders[name](inputs)


def steps_table(inputs: Sequence[LabelInput]):
    """One row per larva and step, with the sidecar's class probabilities."""
    import pyarrow as pa

    classes = _probability_classes(inputs)
    parts = [_run_steps(item, classes) for item in inputs]
    schema = pa.schema([("run", pa.string()), ("larva", pa.int64()), ("t", pa.float64()),
                        ("label", pa.string()), ("secondary_labels", pa.list_(pa.string()))]
                       + [(f"p_{name}", pa.float32()) for name in classes])
    return pa.Table.from_pydict(_concatenate(parts, schema.names), schema=schema)


def _probability_classes(inputs: Sequence[LabelInput]) -> list[str]:
    names: dict[str, None] = {}
    for item in inputs:
        if item.probabilities is not None:
            names.update(dict.fromkeys(item.probabilities.names))
    return list(names)


def _run_steps(item: LabelInput, classes: list[str]) -> dict[str, list]:
    columns: dict[str, list] = {"run": [], "larva": [], "t": [], "label": [], "secondary_labels": []}
    columns.update({f"p_{name}": [] for name in classes})
    for larva in sorted(item.labels.tracks):
        track = item.labels.tracks[larva]
        n = len(track)
        columns["run"] += [item.run_id] * n
        columns["larva"] += [larva] * n
        columns["t"] += track.t.tolist()
        columns["label"] += [primary(entry) for entry in track.labels]
        columns["secondary_labels"] += [entry_names(entry)[1:] for entry in track.labels]
        probabilities = (item.probabilities.aligned(larva, track.t) if item.probabilities is not None
                         else None)
        for name in classes:
            if probabilities is None or name not in item.probabilities.names:
                columns[f"p_{name}"] += [None] * n
            else:
                column = probabilities[:, item.probabilities.names.index(name)]
                columns[f"p_{name}"] += [None if np.isnan(v) else v for v in column.tolist()]
    return columns


def _concatenate(parts: list[dict[str, list]], names: list[str]) -> dict[str, list]:
    return {name: [value for part in parts for value in part[name]] for name in names}


def run_bouts(item: LabelInput) -> list[tuple[Bout, float | None]]:
    """The bouts of one run, each with the mean probability of its behaviour (or None)."""
    out = []
    for larva in sorted(item.labels.tracks):
        track = item.labels.tracks[larva]
        probabilities = (item.probabilities.aligned(larva, track.t) if item.probabilities is not None
                         else None)
        for bout in track_bouts(larva, track):
            out.append((bout, _mean_probability(item, probabilities, bout)))
    return out


def _mean_probability(item: LabelInput, probabilities, bout: Bout) -> float | None:
    if probabilities is None or bout.label not in item.probabilities.names:
        return None
    values = probabilities[bout.first:bout.last + 1, item.probabilities.names.index(bout.label)]
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else None


def bouts_table(inputs: Sequence[LabelInput]):
    """One row per bout: run, larva, behaviour, start, end, duration, n_steps, mean_probability."""
    import pyarrow as pa

    rows = [(item.run_id, bout, p) for item in inputs for bout, p in run_bouts(item)]
    schema = pa.schema([("run", pa.string()), ("larva", pa.int64()), ("behaviour", pa.string()),
                        ("start", pa.float64()), ("end", pa.float64()), ("duration", pa.float64()),
                        ("n_steps", pa.int64()), ("mean_probability", pa.float64())])
    return pa.Table.from_pydict({
        "run": [r for r, _, _ in rows], "larva": [b.larva for _, b, _ in rows],
        "behaviour": [b.label for _, b, _ in rows], "start": [b.start for _, b, _ in rows],
        "end": [b.end for _, b, _ in rows], "duration": [b.duration for _, b, _ in rows],
        "n_steps": [b.n_steps for _, b, _ in rows], "mean_probability": [p for _, _, p in rows],
    }, schema=schema)


def summary_table(inputs: Sequence[LabelInput]):
    """Per larva and behaviour: labelled time, time in the behaviour and its fraction,
    bouts and bouts per minute of labelled time (null fractions for a larva never labelled)."""
    import pyarrow as pa

    behaviours = behaviour_names(inputs)
    columns: dict[str, list] = {k: [] for k in ("run", "larva", "behaviour", "labelled_s", "time_s",
                                                "time_fraction", "bouts", "bout_rate_per_min")}
    for item in inputs:
        by_larva: dict[int, list[Bout]] = {larva: [] for larva in item.labels.tracks}
        for bout, _ in run_bouts(item):
            by_larva[bout.larva].append(bout)
        for larva in sorted(by_larva):
            bouts = by_larva[larva]
            labelled = float(sum(b.duration for b in bouts))
            for behaviour in behaviours:
                mine = [b for b in bouts if b.label == behaviour]
                time = float(sum(b.duration for b in mine))
                columns["run"].append(item.run_id)
                columns["larva"].append(larva)
                columns["behaviour"].append(behaviour)
                columns["labelled_s"].append(labelled)
                columns["time_s"].append(time)
                columns["time_fraction"].append(time / labelled if labelled > 0 else None)
                columns["bouts"].append(len(mine))
                columns["bout_rate_per_min"].append(60.0 * len(mine) / labelled if labelled > 0 else None)
    schema = pa.schema([("run", pa.string()), ("larva", pa.int64()), ("behaviour", pa.string()),
                        ("labelled_s", pa.float64()), ("time_s", pa.float64()),
                        ("time_fraction", pa.float64()), ("bouts", pa.int64()),
                        ("bout_rate_per_min", pa.float64())])
    return pa.Table.from_pydict(columns, schema=schema)


def write_table(table, output: Path, fmt: str, provenance: dict, overwrite: bool = False) -> None:
    """Write a table as CSV or Parquet with pyarrow, atomically.

    Parquet keeps list columns and stores ``provenance`` as JSON in the file's key-value
    metadata (key ``taggingbackends.provenance``). CSV has no place for either: list
    columns are ``;``-joined, and the provenance is not written.
    """
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if fmt not in TABLE_FORMATS:
        raise TaggingError(f"--to {fmt}: tables are written as {' or '.join(TABLE_FORMATS)}")
    with atomic_path(output, overwrite=overwrite) as tmp:
        if fmt == "parquet":
            metadata = {PROVENANCE_KEY: json.dumps(provenance, sort_keys=True).encode()}
            pq.write_table(table.replace_schema_metadata(metadata), tmp)
        else:
            pacsv.write_csv(_flat_lists(table), tmp)


def _flat_lists(table):
    """List columns as ``;``-joined strings (CSV has no lists)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for i, field in enumerate(table.schema):
        if pa.types.is_list(field.type):
            table = table.set_column(i, field.name, pc.binary_join(table.column(i), ";"))
    return table


# -------------------------------------------------------------------- trx.mat
def flag_names(item: LabelInput) -> list[str]:
    """The flag fields written for a run: its label names, then its secondary labels."""
    names = list(dict.fromkeys(item.labels.names + [n for n in item.labels.used_names()
                                                    if n not in item.labels.secondarylabels]))
    return names + [n for n in item.labels.secondarylabels if n not in names]


def export_trxmat(item: LabelInput, output: Path, provenance: dict, overwrite: bool = False,
                  verify: bool = True) -> list[str]:
    """Write at ``output`` the run's tracking data as trx.mat with one ±1 flag field per
    label (1 where the step carries it), as the JBM pipeline stores tags.

    When the run's tracking file is a trx.mat, ``output`` is a copy of it with the flag
    fields replaced (the 25 JBM flag fields it held are removed, so that readers see the
    new tags only; every other field is kept). Otherwise a trx.mat is written from the
    tracks. The provenance goes in a top-level char variable ``tagging_provenance``.
    Returns warnings for the user (labels readers will not read back, unmatched steps).
    """
    from .formats import detect, load
    from .formats.trxmat import FLAG_FIELDS, replace_struct_fields, write_trxmat

    if output.exists() and not overwrite:
        raise TaggingError(f"{output}: already exists (pass --overwrite to replace it)")
    names = flag_names(item)
    warnings = [f"label {name!r} is written as field `{name}`, but trx.mat readers (and `import`) "
                "only read the 25 JBM flag fields" for name in names if name not in FLAG_FIELDS]
    _check_matlab_names(item, names)
    variables = {"tagging_provenance": json.dumps(provenance, sort_keys=True)}
    tracking = _trxmat_dependency(item, detect)
    if tracking is None:  # other tracking formats: a trx.mat written from the tracks
        import tempfile

        run = load(item.path, run=item.run_id, verify=verify)
        columns = [run.tag_names.index(name) for name in names]
        tagged = run.with_tags(run.tags[:, columns], names)
        output.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=output.parent, prefix=f".{output.name}.") as scratch:
            plain = Path(scratch) / "trx.mat"
            write_trxmat(tagged, plain)
            replace_struct_fields(plain, output, {}, (), variables)
        return warnings
    from .formats.trxmat import read_trxmat

    run = read_trxmat(tracking, outline=False, tags="none")
    fields, unmatched = _flag_fields(item, run, names)
    if unmatched == item.labels.n_steps and unmatched:
        raise FormatError(item.path, f"no labelled step matches a time step of {tracking}")
    if unmatched:
        warnings.append(f"{item.path}: {unmatched} labelled steps have no time step in {tracking}")
    try:
        replace_struct_fields(tracking, output, fields, drop=FLAG_FIELDS, variables=variables)
    except ValueError as err:
        raise FormatError(item.path, str(err)) from err
    return warnings


def trxmat_preflight(item: LabelInput) -> None:
    """The checks of :func:`export_trxmat` that need no writing (label names, tracking
    file), so that a batch stops before its first file rather than halfway."""
    from .formats import detect

    _check_matlab_names(item, flag_names(item))
    _trxmat_dependency(item, detect)


def _check_matlab_names(item: LabelInput, names: list[str]) -> None:
    """FormatError naming the label file for a label that cannot be a trx field."""
    from .formats.trxmat import _GEOMETRY_FIELDS, _MATLAB_NAME, METADATA_FIELDS

    for name in names:
        if not _MATLAB_NAME.match(name):
            raise FormatError(item.path, f"label {name!r} is not a valid MATLAB field name "
                                         "(letters, digits, _; a letter first): rename it to export to trx.mat")
        if name in _GEOMETRY_FIELDS or name in METADATA_FIELDS or name == "tagging_provenance":
            raise FormatError(item.path, f"label {name!r} clashes with the trx.mat field of that name")


def _trxmat_dependency(item: LabelInput, detect) -> Path | None:
    """The run's trx.mat tracking file when its first existing dependency is one."""
    for path in item.labels.dependency_paths():
        if path.is_file():
            try:
                return path if detect(path).name == "trxmat" else None
            except TaggingError:
                return None
    if item.labels.dependencies:
        raise FormatError(item.path, "tracking dependency not found beside the label file: "
                          + ", ".join(d["filename"] for d in item.labels.dependencies))
    raise FormatError(item.path, "has no tracking dependency: trx.mat export needs the tracking file")


def _flag_fields(item: LabelInput, run, names: list[str]) -> tuple[dict[str, list], int]:
    """±1 columns (n × 1) per label and trx element, and the labelled steps left unmatched."""
    fields: dict[str, list] = {name: [] for name in names}
    matched = 0
    for track in run:
        flags = {name: -np.ones((len(track.t), 1)) for name in names}
        labelled = item.labels.tracks.get(track.larva_id)
        if labelled is not None:
            position, ok = match_times(labelled.t, track.t, TIME_PRECISION)
            matched += int(ok.sum())
            for j in np.flatnonzero(ok):
                for name in entry_names(labelled.labels[position[j]]):
                    flags[name][j, 0] = 1.0
        for name in names:
            fields[name].append(flags[name])
    return fields, item.labels.n_steps - matched


# ------------------------------------------------------------------------ NWB
def export_nwb(item: LabelInput, output: Path, provenance: dict, overwrite: bool = False) -> int:
    """Write the run's bouts as an NWB file: a ``TimeIntervals`` table ``behavior`` in
    ``/intervals`` with columns ``start_time``, ``stop_time`` (s, the label file's times),
    ``larva``, ``behavior``, ``n_steps`` and ``mean_probability`` (NaN without sidecar).
    Returns the number of epochs. Needs pynwb (``pip install taggingbackends[nwb]``).
    """
    try:
        from pynwb import NWBHDF5IO, NWBFile
        from pynwb.epoch import TimeIntervals
    except ImportError:
        raise TaggingError("--to nwb needs pynwb: pip install 'taggingbackends[nwb]'") from None
    if output.exists() and not overwrite:
        raise TaggingError(f"{output}: already exists (pass --overwrite to replace it)")
    bouts = run_bouts(item)
    table = TimeIntervals(name="behavior", description="Behaviour bouts of every larva, one row per "
                          "bout (maximal run of steps with one primary label), from " + item.path.name)
    table.add_column(name="larva", description="larva number in the tracking file")
    table.add_column(name="behavior", description="behaviour label (primary label of the bout's steps)")
    table.add_column(name="n_steps", description="number of tracked time steps in the bout")
    table.add_column(name="mean_probability",
                     description="mean tagger probability of the behaviour over the bout (NaN: unknown)")
    for bout, probability in bouts:
        table.add_interval(start_time=bout.start, stop_time=bout.end, larva=bout.larva,
                           behavior=bout.label, n_steps=bout.n_steps,
                           mean_probability=float("nan") if probability is None else probability)
    nwbfile = NWBFile(
        session_description=f"Behaviour tags of run {item.run_id} (larva tracking)",
        identifier=str(uuid.uuid5(uuid.NAMESPACE_URL, f"taggingbackends:{item.run_id}:{_content_key(item)}")),
        session_start_time=_session_start(item),
        session_id=item.run_id,
        source_script=f"{provenance.get('software', 'taggingbackends')} {provenance.get('version', '')}".strip(),
        source_script_file_name="tagging-backend export",
        notes=json.dumps({"provenance": provenance, "labels": item.labels.metadata.get("provenance")},
                         sort_keys=True, default=str),
        experiment_description="Automatic behaviour tagging of Drosophila larva tracks",
    )
    nwbfile.add_time_intervals(table)
    with atomic_path(output, overwrite=overwrite) as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not end in '.nwb'")  # the temporary name
        with NWBHDF5IO(str(tmp), "w") as io:
            io.write(nwbfile)
    return len(bouts)


def _content_key(item: LabelInput) -> str:
    from .fileio import sha1sum

    return sha1sum(item.path)


def _session_start(item: LabelInput):
    """The run's start: its ``date_time`` (``YYYYMMDD_HHMMSS``, taken as UTC) or the epoch."""
    import datetime as dt

    for candidate in (item.labels.metadata.get("date_time"), item.run_id):
        try:
            return dt.datetime.strptime(str(candidate), "%Y%m%d_%H%M%S").replace(tzinfo=dt.timezone.utc)
        except ValueError:
            continue
    return dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


# -------------------------------------------------------------------- outputs
def run_outputs(inputs: Sequence[LabelInput], template: str) -> list[Path]:
    """One output path per run from a template with ``{dir}``, ``{stem}``, ``{run}``;
    two runs mapping to one path is an error before anything is written."""
    outputs = []
    for item in inputs:
        try:
            outputs.append(Path(template.format(dir=item.path.parent, stem=item.path.name.split(".")[0],
                                                run=item.run_id)))
        except (KeyError, IndexError, ValueError) as err:
            raise TaggingError(f"-o {template!r}: bad template ({err}); "
                               "fields: {dir}, {stem}, {run}") from None
    seen: dict[Path, LabelInput] = {}
    for item, out in zip(inputs, outputs):
        key = out.resolve()
        if key in seen:
            raise TaggingError(f"runs {seen[key].run_id} ({seen[key].path}) and {item.run_id} ({item.path}) "
                               f"would both be written to {out}; use a template such as '{{dir}}/{{run}}.mat'")
        seen[key] = item
    return outputs


def table_provenance(command: str, inputs: Iterable[LabelInput], **extra) -> dict:
    """Provenance of an export: the command's record plus the input files and their runs."""
    from .cli.app import provenance
    from .fileio import sha1sum

    files: dict[str, dict] = {}
    for item in inputs:
        entry = files.setdefault(str(item.path), {"sha1": sha1sum(item.path), "runs": []})
        entry["runs"].append(item.run_id)
        if item.probabilities is not None:
            entry["probabilities"] = str(item.probabilities.path)
    return provenance(command, inputs=[{"path": k, **v} for k, v in files.items()], **extra)
