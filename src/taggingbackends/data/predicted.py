"""Label files as analyses read them: each run with its class probabilities when known.

``predict`` writes ``<stem>.label`` and, beside it, ``<stem>.probabilities.h5`` (datasets
``larva_id``, ``t``, ``probabilities`` (n_steps × n_labels), attributes ``labels`` and
``run_id``; see :mod:`maggotuba.predict`). Export and report read both through
:func:`read_label_inputs`, which expands directories, reads every run of each file and
attaches the sidecar to the run it belongs to. This module never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import FormatError, TaggingError, one_line
from .labels import LABEL_SUFFIXES, TIME_PRECISION, Labels, match_times

SIDECAR_SUFFIX = ".probabilities.h5"
DIRECTORY_LABEL_SUFFIXES = (".label", ".labels", ".nyxlabel")  # .json in a folder may be anything


@dataclass
class Probabilities:
    """Per-step class probabilities of one run, grouped by larva (times sorted)."""

    path: Path
    names: list[str]
    by_larva: dict[int, tuple[np.ndarray, np.ndarray]]  # larva -> (t, probabilities (n, k))

    def aligned(self, larva: int, t: np.ndarray) -> np.ndarray:
        """``(len(t), len(names))`` probabilities at the times ``t`` of ``larva``
        (matched within 1 ms); NaN where the sidecar has no such step."""
        out = np.full((len(t), len(self.names)), np.nan, dtype=np.float64)
        found = self.by_larva.get(int(larva))
        if found is None:
            return out
        times, values = found
        position, ok = match_times(times, np.asarray(t, dtype=np.float64), TIME_PRECISION)
        out[ok] = values[position[ok]]
        return out


@dataclass
class LabelInput:
    """One run of a label file, with its probabilities when a sidecar exists."""

    path: Path
    labels: Labels
    probabilities: Probabilities | None = None

    @property
    def run_id(self) -> str:
        return str(self.labels.run_id)


def sidecar_path(label_path: Path) -> Path:
    """``predicted.label`` → ``predicted.probabilities.h5`` (as ``predict`` names it)."""
    return label_path.with_name(label_path.name.rsplit(".", 1)[0] + SIDECAR_SUFFIX)


def read_probabilities(path: Path) -> tuple[str | None, Probabilities]:
    """The run id a sidecar belongs to and its probabilities; FormatError on a bad file."""
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            missing = [name for name in ("larva_id", "t", "probabilities") if name not in handle]
            if missing:
                raise FormatError(path, f"is not a probabilities sidecar (no dataset {', '.join(missing)})")
            larva = np.asarray(handle["larva_id"][()], dtype=np.int64).reshape(-1)
            t = np.asarray(handle["t"][()], dtype=np.float64).reshape(-1)
            values = np.asarray(handle["probabilities"][()], dtype=np.float64)
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in handle.attrs.get("labels", [])]
            run_id = handle.attrs.get("run_id")
    except FormatError:
        raise
    except OSError as err:
        raise FormatError(path, f"cannot be read as HDF5 ({one_line(err)})") from err
    if values.ndim != 2 or values.shape[0] != larva.size or t.size != larva.size:
        raise FormatError(path, f"datasets disagree: {larva.size} larva ids, {t.size} times, "
                                f"probabilities of shape {values.shape}")
    if len(names) != values.shape[1]:
        raise FormatError(path, f"{values.shape[1]} probability columns but {len(names)} label names")
    order = np.lexsort((t, larva))
    larva, t, values = larva[order], t[order], values[order]
    ids, starts = np.unique(larva, return_index=True)
    bounds = list(starts) + [larva.size]
    by_larva = {int(i): (t[a:b], values[a:b]) for i, a, b in zip(ids, bounds[:-1], bounds[1:])}
    if isinstance(run_id, bytes):
        run_id = run_id.decode()
    return (str(run_id) if run_id is not None else None), Probabilities(path, names, by_larva)


def label_files(paths: Iterable[Path]) -> list[Path]:
    """Files as given; directories expanded into the label files they hold (recursively)."""
    found: list[Path] = []
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise TaggingError(f"{path}: no such file or directory")
        if path.is_dir():
            inside = sorted(p for p in path.rglob("*") if p.is_file()
                            and p.suffix.lower() in DIRECTORY_LABEL_SUFFIXES)
            if not inside:
                raise TaggingError(f"{path}: no label files (*.label) in this directory")
            found.extend(inside)
        else:
            found.append(path)
    return found


def read_label_inputs(paths: Iterable[Path], verify: bool = True) -> list[LabelInput]:
    """Every run of every label file under ``paths``, with its sidecar probabilities.

    A sidecar is attached to the run whose id it records (the only run when it records
    none); a sidecar naming another run is an error, as it means files were mixed up.
    """
    inputs: list[LabelInput] = []
    for path in label_files(paths):
        if path.suffix.lower() not in LABEL_SUFFIXES:
            raise FormatError(path, f"is not a label file (expected {', '.join(LABEL_SUFFIXES)})")
        runs = Labels.load_all(path, verify=verify)
        if not any(labels.tracks for labels in runs.values()):
            raise FormatError(path, "holds no larva tracks (no \"data\"): not a label file of a run")
        sidecar = sidecar_path(path)
        run_id, probabilities = read_probabilities(sidecar) if sidecar.is_file() else (None, None)
        if probabilities is not None and run_id is not None and run_id not in runs:
            raise FormatError(sidecar, f"holds the probabilities of run {run_id}, but {path.name} "
                                       f"holds run(s) {', '.join(runs)}")
        for key, labels in runs.items():
            attach = probabilities is not None and (run_id == key or (run_id is None and len(runs) == 1))
            inputs.append(LabelInput(path, labels, probabilities if attach else None))
    return inputs


def behaviour_names(inputs: Iterable[LabelInput]) -> list[str]:
    """Primary label names of the inputs, declared order first, then any used but undeclared."""
    names: dict[str, None] = {}
    for item in inputs:
        secondary = set(item.labels.secondarylabels)
        for name in item.labels.names:
            names.setdefault(name, None)
        for name in item.labels.used_names():
            if name not in secondary:
                names.setdefault(name, None)
    return list(names)


def label_colours(inputs: Iterable[LabelInput]) -> dict[str, str]:
    """The colour of each label as the label files declare it (first file wins)."""
    colours: dict[str, str] = {}
    for item in inputs:
        if item.labels.colors:
            for name, colour in zip(item.labels.names, item.labels.colors):
                colours.setdefault(name, colour)
    return colours
