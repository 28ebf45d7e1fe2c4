"""Schleyer-lab CSV: the real excerpt read with exact values, options, writer round
trips, detection, broken files."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from taggingbackends.data.tracks import Run
from taggingbackends.errors import FormatError, OutputExistsError, ValidationError
from taggingbackends.formats import detect, load
from taggingbackends.formats.schleyer import (is_schleyer, parse_csv, read_schleyer, resample_polyline,
                                              write_schleyer)

DISH = Path(__file__).parent / "data" / "schleyer" / "dish01"
MISSING_17 = list(range(13, 20))  # frames 82..88: collision flag 2, empty attributes


# ------------------------------------------------------------ the real excerpt
def test_real_excerpt_exact_values():
    run = read_schleyer(DISH)
    assert run.id == "dish01"
    assert run.larva_ids.tolist() == [3, 17]
    assert run.lengths.tolist() == [40, 40]
    assert run.n_points == 12 and run.outline.shape == (80, 22, 2)
    assert run.spine_head == "last" and run.frame_rate == 16.0 and run.space_unit == "mm"
    assert run.source_format == "schleyer" and run.tags is None
    assert [p.name for p in run.source] == ["3.csv", "17.csv"]
    assert run.metadata == {"camera": {"framerate": 16.0}, "masked": {"missing": 0, "collision": 7}}

    three = run[3]
    assert three.t[:3].tolist() == [0.0, 0.0625, 0.125] and three.t[-1] == 2.4375
    assert three.spine[0, 0].tolist() == [-4.83259, 22.4073]    # tail
    assert three.spine[0, 11].tolist() == [-6.56273, 20.0552]   # head
    assert three.spine[1, 5].tolist() == [-6.42761, 22.3233]
    np.testing.assert_array_equal(three.outline[0, [0, 1, 21]],
                                  np.array([[-4.83259, 22.4073], [-5.14422, 22.3776], [-4.89664, 23.0446]],
                                           dtype=np.float32))
    assert not np.isnan(three.spine).any()

    seventeen = run[17]
    assert seventeen.t[0] == 4.25 and seventeen.t[-1] == 6.6875  # frames 69..108
    missing = np.isnan(seventeen.spine).all(axis=(1, 2))
    assert np.flatnonzero(missing).tolist() == MISSING_17
    assert np.isnan(seventeen.outline[MISSING_17]).all()
    assert seventeen.spine[12, 0].tolist() == [5.47138, -22.2289]
    assert seventeen.spine[20, 11].tolist() == [9.31184, -20.0426]


def test_head_is_the_last_point_on_the_excerpt():
    """Larvae crawl head first: the centroid moves towards midline point 11."""
    run = read_schleyer(DISH)
    for track in run:
        centre = track.spine.mean(axis=1)
        motion = centre[8:] - centre[:-8]
        axis = (track.spine[:, -1] - track.spine[:, 0])[:-8]
        cosine = np.sum(motion * axis, axis=1)
        valid = ~np.isnan(cosine) & (np.linalg.norm(motion, axis=1) > 0.1)
        assert valid.sum() > 10 and (cosine[valid] > 0).mean() > 0.9


def test_single_file_options_and_load():
    one = read_schleyer(DISH / "17.csv")
    assert one.id == "dish01" and one.larva_ids.tolist() == [17] and one.n_steps == 40
    kept = read_schleyer(DISH / "17.csv", collisions="keep")
    assert not np.isnan(kept.spine).any()  # collision rows have geometry
    slow = read_schleyer(DISH / "3.csv", framerate=10)
    assert slow.t[:2].tolist() == [0.0, 0.1] and slow.frame_rate == 10.0
    eleven = read_schleyer(DISH / "3.csv", spine_points=11)
    assert eleven.n_points == 11
    np.testing.assert_allclose(eleven.spine[:, [0, -1]], one_spine(DISH / "3.csv")[:, [0, -1]])
    steps = np.linalg.norm(np.diff(eleven.spine, axis=1), axis=2)
    # equal spacing along the stored midline (chords of a curved line differ slightly)
    np.testing.assert_allclose(steps, np.median(steps, axis=1, keepdims=True).repeat(10, axis=1), rtol=0.05)
    assert read_schleyer(DISH, pixelsize=100, verify=False).n_steps == 80  # CLI options ignored
    with pytest.raises(TypeError, match="unexpected option"):
        read_schleyer(DISH, nonsense=1)
    assert detect(DISH).name == "schleyer" and detect(DISH / "3.csv").name == "schleyer"
    assert load(DISH).n_tracks == 2 and load(DISH / "3.csv").n_tracks == 1


def one_spine(path: Path) -> np.ndarray:
    return parse_csv(path)[:, 1:25].reshape(-1, 12, 2)


def test_parser_matches_genfromtxt():
    table = parse_csv(DISH / "17.csv")
    expected = np.genfromtxt(DISH / "17.csv", delimiter=",")
    assert table.shape == (40, 78)
    np.testing.assert_array_equal(table, expected)


# -------------------------------------------------------------------- writer
def sample_run(points: int = 12, head: str = "last") -> Run:
    rng = np.random.default_rng(5)
    times = [np.arange(0, 10) / 16, np.arange(4, 30) / 16]
    spines = [rng.normal(size=(len(t), points, 2)).round(5) for t in times]
    spines[1][3] = np.nan
    outlines = [rng.normal(size=(len(t), 22, 2)).astype(np.float32) for t in times]
    outlines[1][3] = np.nan
    outlines[0][2, 15:] = np.nan  # a shorter contour
    return Run.from_tracks("dish07", [4, 11], times, spines, outlines=outlines, frame_rate=16.0,
                           spine_head=head)


def test_round_trip(tmp_path):
    run = sample_run()
    out = tmp_path / "dish07"
    write_schleyer(run, out)
    assert sorted(p.name for p in out.iterdir()) == ["11.csv", "4.csv"]
    first = (out / "4.csv").read_text().splitlines()[0].split(",")
    assert len(first) == 78 and first[0] == "1" and first[-1] == "0"
    assert is_schleyer(out) and is_schleyer(out / "4.csv")
    back = read_schleyer(out)
    assert back.id == "dish07"
    np.testing.assert_array_equal(back.larva_ids, run.larva_ids)
    np.testing.assert_array_equal(back.t, run.t)
    np.testing.assert_allclose(back.spine, run.spine, rtol=1e-11, atol=0)
    np.testing.assert_allclose(back.outline, run.outline, rtol=1e-6)
    # the real excerpt survives a round trip too (missing rows included)
    real = read_schleyer(DISH)
    write_schleyer(real, tmp_path / "copy")
    again = read_schleyer(tmp_path / "copy")
    np.testing.assert_array_equal(again.spine, real.spine)
    np.testing.assert_array_equal(again.t, real.t)


def test_writer_conventions(tmp_path):
    run = sample_run(points=11, head="first")
    write_schleyer(run, tmp_path / "a")
    back = read_schleyer(tmp_path / "a")
    assert back.n_points == 12
    ok = ~np.isnan(run.spine).any(axis=(1, 2))
    np.testing.assert_allclose(back.spine[ok, 0], run.spine[ok, -1])  # head written last
    np.testing.assert_allclose(back.spine[ok, -1], run.spine[ok, 0])
    off_grid = Run.from_tracks("x", [1], [np.array([0.0, 0.05, 0.1])], [np.zeros((3, 12, 2))])
    with pytest.raises(ValidationError, match="frame grid"):
        write_schleyer(off_grid, tmp_path / "b", framerate=16)
    write_schleyer(off_grid, tmp_path / "b", framerate=16, snap=True)
    assert read_schleyer(tmp_path / "b").t.tolist() == [0.0, 0.0625, 0.125]
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "99.csv").write_text("stale")
    with pytest.raises(OutputExistsError, match="other CSV files"):
        write_schleyer(sample_run(), tmp_path / "c")


def test_resample_polyline_keeps_straight_lines():
    line = np.stack([np.linspace(0, 3, 4) ** 2, np.zeros(4)], axis=1)[None]  # uneven spacing
    out = resample_polyline(line, 5)
    np.testing.assert_allclose(out[0, :, 0], [0, 2.25, 4.5, 6.75, 9])
    assert np.isnan(resample_polyline(np.full((1, 4, 2), np.nan), 3)).all()


# -------------------------------------------------------------- broken files
def _copy(tmp_path: Path, name: str = "3.csv") -> Path:
    target = tmp_path / "dish" / name
    target.parent.mkdir(exist_ok=True)
    shutil.copy(DISH / "3.csv", target)
    return target


def _expect_error(path: Path, match: str, name: str | None = None) -> None:
    with pytest.raises(FormatError, match=match) as info:
        read_schleyer(path)
    message = str(info.value)
    assert (name or path.name) in message and "\n" not in message
    with pytest.raises(FormatError):
        load(path, format="schleyer")


def test_directory_without_csv(tmp_path):
    (tmp_path / "notes.txt").write_text("nothing here")
    _expect_error(tmp_path, "no .csv files")
    assert not is_schleyer(tmp_path)


def test_empty_file(tmp_path):
    path = _copy(tmp_path)
    path.write_bytes(b"")
    _expect_error(path, "is empty")


def test_ragged_rows(tmp_path):
    path = _copy(tmp_path)
    lines = path.read_text().splitlines()
    lines[4] = lines[4].rsplit(",", 1)[0]
    path.write_text("\n".join(lines) + "\n")
    _expect_error(path, "line 5 has 77 fields")
    _expect_error(path.parent, "line 5 has 77 fields", name="3.csv")  # the file, not the directory


def test_nan_only_larva(tmp_path):
    path = _copy(tmp_path)
    lines = [line.rsplit(",", 1)[0] + ",2" for line in path.read_text().splitlines()]
    path.write_text("\n".join(lines) + "\n")
    _expect_error(path, "no valid midline")


def test_non_monotonic_frames(tmp_path):
    path = _copy(tmp_path)
    lines = path.read_text().splitlines()
    lines[5], lines[6] = lines[6], lines[5]
    path.write_text("\n".join(lines) + "\n")
    _expect_error(path, "line 7: frame 6 after frame 7")


def test_wrong_encoding(tmp_path):
    path = _copy(tmp_path)
    text = path.read_text()
    path.write_bytes(text.encode("utf-16"))
    _expect_error(path, "UTF-16")
    assert not is_schleyer(path)
    path.write_bytes(text.encode("ascii").replace(b"22.4073", b"22.4\xe973", 1))
    _expect_error(path, "not UTF-8 text \\(byte 0xe9")


def test_non_numeric_field(tmp_path):
    path = _copy(tmp_path)
    path.write_text(path.read_text().replace("22.4073", "22.4o73", 1))
    _expect_error(path, r"line 1, column 3: .22\.4o73. is not a number")
    assert not is_schleyer(path)


def test_detection_never_raises(tmp_path):
    assert not is_schleyer(tmp_path / "absent.csv")
    fim = tmp_path / "table.csv"
    fim.write_text(",larva(1),larva(2)\nhead_x(0),1,2\n")
    assert not is_schleyer(fim)
    short = tmp_path / "short.csv"
    short.write_text("1," + ",".join(["0.5"] * 76) + "\n")
    assert not is_schleyer(short)
    binary = tmp_path / "b.csv"
    binary.write_bytes(bytes(range(256)))
    assert not is_schleyer(binary)


def test_na_rows_are_missing_frames(tmp_path):
    """The tracker writes untracked frames as rows of space-padded `na` fields (9.csv, 48.csv
    of the shared data): missing steps, not an error."""
    path = _copy(tmp_path)
    lines = path.read_text().splitlines()
    fields = lines[5].split(",")
    lines[5] = ",".join([fields[0]] + ["na        "] * (len(fields) - 1))
    path.write_text("\n".join(lines) + "\n")
    from taggingbackends.formats.schleyer import parse_csv

    table = parse_csv(path)
    assert np.isnan(table[5, 1:]).all() and table[5, 0] == float(fields[0])
    assert not np.isnan(table[4]).any()
