"""A `.label` file given as tracking input (SPEC §4.5).

A label file holds no tracking data: its spines come from its first
dependency that exists (trx.mat, Choreography or FIMTrack file, resolved
relative to the label file). The labels are attached to the tracking time
steps as tags (time match within 1 ms); steps without a label get no tag.
Tag columns are the label names followed by the secondary labels.
"""

from __future__ import annotations

from pathlib import Path

from ..data.labels import LABEL_SUFFIXES, Labels, is_label_text
from ..data.tracks import Run
from ..errors import FormatError
from .registry import FormatSpec

_HEAD_BYTES = 4096
# formats that store frame numbers, whose timestamps depend on a frame rate
_FRAME_NUMBER_FORMATS = ("fimtrack", "schleyer")


def is_label(path: Path) -> bool:
    """Content check: the text up to the first comma matches `{"metadata": {"id":`."""
    if not path.is_file():
        return False
    try:
        with open(path, "rb") as handle:
            head = handle.read(_HEAD_BYTES).decode("utf-8-sig", errors="strict")
    except (OSError, UnicodeDecodeError):
        return False
    return is_label_text(head)


def read_label(path: Path, *, verify: bool = True, run: str | None = None, **options) -> Run:
    """Tracking data of the label file's dependency, tagged with its labels.

    Extra ``options`` go to the dependency's reader (e.g. ``framerate``).
    """
    from . import detect, load  # the registry, resolved lazily (this module is part of it)

    labels = Labels.load(path, verify=verify, run=run)
    candidates = [p for p in labels.dependency_paths()
                  if p.exists() and p.suffix.lower() not in LABEL_SUFFIXES]
    if not labels.dependencies:
        raise FormatError(path, "has no tracking dependency to read spines from")
    if not candidates:
        missing = ", ".join(d["filename"] for d in labels.dependencies)
        raise FormatError(path, f"tracking dependency not found beside the label file: {missing}")
    source = _tracking_source(candidates)
    camera = labels.metadata.get("camera")
    if (isinstance(camera, dict) and camera.get("framerate") and "framerate" not in options
            and detect(source).name in _FRAME_NUMBER_FORMATS):
        options["framerate"] = float(camera["framerate"])  # SPEC §4.4: the label's camera wins
    tracking = load(source, **options)
    tags, names = labels.tag_matrix(tracking)
    tagged = tracking.with_tags(tags, names)
    tagged.metadata = {**tracking.metadata, **{k: v for k, v in labels.metadata.items() if k != "id"}}
    tagged.source = (path, *tracking.source)
    tagged.source_format = "label"
    return tagged


def _tracking_source(candidates: list[Path]) -> Path:
    """The path to read: the first dependency, or the directory holding them
    when the dependencies are several per-larva CSV files (Schleyer format)."""
    first = candidates[0]
    csvs = [p for p in candidates if p.suffix.lower() == ".csv" and p.parent == first.parent]
    if len(csvs) > 1:
        return first.parent
    return first


SPEC = FormatSpec(
    name="label",
    description="LarvaTagger .label file (JSON), read through its tracking dependency",
    suffixes=LABEL_SUFFIXES,
    detection='text up to the first comma matches ^{\\s*"metadata":\\s*{\\s*"id":',
    is_format=is_label,
    read=read_label,
    write=None,
)
