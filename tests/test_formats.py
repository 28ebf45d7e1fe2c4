"""The format registry: content-based detection, overrides, errors common to all readers."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from taggingbackends.data.tracks import Run
from taggingbackends.errors import FormatError, UnknownFormatError
from taggingbackends.formats import detect, formats, get_format, load, save

CHORE_NAME = "20150701_105504@FCF_attP2@UAS_TNT@t15@r_LED50_30s2x15s30s#n#n#n@100.spine"


def small_run(points: int = 11) -> Run:
    rng = np.random.default_rng(0)
    times = [np.round(0.1 * np.arange(1, 8), 3), np.round(0.1 * np.arange(3, 9), 3)]
    spines = [rng.normal(size=(len(t), points, 2)).round(3) for t in times]
    outlines = [rng.normal(size=(len(t), 16, 2)).astype(np.float32).round(3) for t in times]
    return Run.from_tracks("20150701_105504", [1, 2], times, spines, outlines=outlines)


def test_registry_lists_every_format_with_detection_text():
    names = [spec.name for spec in formats()]
    assert names == ["label", "trxmat", "chore", "fimtrack", "schleyer"]
    for spec in formats():
        assert spec.detection and spec.description and spec.suffixes
    with pytest.raises(ValueError, match="unknown format"):
        get_format("nope")


@pytest.mark.parametrize("fmt, filename, points", [
    ("trxmat", "trx.mat", 11),
    ("chore", CHORE_NAME, 11),
    ("fimtrack", "table.csv", 5),
])
def test_detection_is_by_content_not_suffix(tmp_path, fmt, filename, points):
    original = tmp_path / filename
    save(small_run(points), original, format=fmt)
    assert detect(original).name == fmt
    disguised = tmp_path / "renamed.dat"
    shutil.copy(original, disguised)
    if fmt == "chore":  # the partner .outline follows the stem
        shutil.copy(original.with_suffix(".outline"), disguised.with_suffix(".outline"))
    assert detect(disguised).name == fmt
    assert load(disguised).n_steps == 13


def test_explicit_format_overrides_detection(tmp_path):
    path = tmp_path / "trx.mat"
    save(small_run(), path, format="trxmat")
    with pytest.raises(FormatError) as info:
        load(path, format="fimtrack")
    assert "trx.mat" in str(info.value)


def test_unknown_empty_missing_and_directory(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(UnknownFormatError, match="is empty"):
        load(empty)
    other = tmp_path / "notes.txt"
    other.write_text("hello, world\n")
    with pytest.raises(UnknownFormatError, match="not a recognised tracking"):
        load(other)
    with pytest.raises(FormatError, match="no such file"):
        load(tmp_path / "absent.mat")
    with pytest.raises(UnknownFormatError, match="is a directory"):
        load(tmp_path)


def test_save_needs_a_known_suffix(tmp_path):
    with pytest.raises(ValueError, match="cannot tell the output format"):
        save(small_run(), tmp_path / "out.xyz")
