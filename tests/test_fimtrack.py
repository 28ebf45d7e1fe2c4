"""FIMTrack v2 table.csv reader and writer (taggingbackends.formats.fimtrack)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from taggingbackends.data.tracks import Run
from taggingbackends.errors import FormatError
from taggingbackends.formats import detect, load, save
from taggingbackends.formats.fimtrack import (fimtrack_outline, is_fimtrack, read_fimtrack,
                                              write_fimtrack)

SAMPLE = Path(__file__).parent / "data" / "fimtrack" / "table.csv"
SAMPLE_TEXT = SAMPLE.read_text()
SAMPLE_LINES = SAMPLE_TEXT.splitlines()


def make_run(space_unit: str = "px", ids=(4, 1, 9), outline: bool = True) -> Run:
    """Three larvae with 5-point head-first spines on a 30 fps frame grid."""
    rng = np.random.default_rng(7)
    times, spines, outlines = [], [], []
    for k, _ in enumerate(ids):
        first = 3 * k
        frames = np.arange(first, first + 6 + 2 * k)
        times.append(np.round(frames / 30, 4))
        centre = rng.uniform(100, 900, 2)
        spine = centre + np.cumsum(rng.normal(2, 0.5, size=(len(frames), 5, 2)), axis=1)
        spines.append(spine)
        outlines.append(rng.uniform(90, 910, size=(len(frames), 12, 2)).astype(np.float32))
    return Run.from_tracks("20200101_120000", list(ids), times, spines,
                           outlines=outlines if outline else None, spine_head="first",
                           space_unit=space_unit, frame_rate=30.0)


# ---------------------------------------------------------------- round trips
def test_round_trip_spines_and_times(tmp_path):
    run = make_run()
    path = tmp_path / "20200101_120000" / "table.csv"
    write_fimtrack(run, path)
    back = read_fimtrack(path)
    assert back.larva_ids.tolist() == [4, 1, 9]  # column order
    np.testing.assert_array_equal(back.offsets, run.offsets)
    np.testing.assert_array_equal(back.t, run.t)
    np.testing.assert_array_equal(back.spine, run.spine)
    assert back.id == "20200101_120000"  # the directory of table.csv
    assert back.source_format == "fimtrack" and back.spine_head == "first"
    assert back.space_unit == "px" and back.frame_rate == 30.0
    assert back.metadata == {"camera": {"framerate": 30.0}, "masked": {"missing": 0}}
    assert back.outline.shape == (run.n_steps, 2 * 3 + 3, 2)
    # outline: starts and ends at the head, passes through the tail
    np.testing.assert_allclose(back.outline[:, 0], run.spine[:, 0], rtol=1e-6)
    np.testing.assert_allclose(back.outline[:, -1], run.spine[:, 0], rtol=1e-6)
    np.testing.assert_allclose(back.outline[:, 4], run.spine[:, -1], rtol=1e-6)


def test_sample_round_trip_keeps_radii_and_outlines(tmp_path):
    """Radii re-estimated from outlines built from radii: the cycle is stable."""
    sample = load(SAMPLE)
    write_fimtrack(sample, tmp_path / "table.csv")
    text = (tmp_path / "table.csv").read_text()
    assert "head_x(0),512.5,\n" in text and "radius_2(1),4.2" in text  # float32 outline
    back = load(tmp_path / "table.csv")
    np.testing.assert_array_equal(back.spine, sample.spine)
    np.testing.assert_array_equal(back.t, sample.t)
    np.testing.assert_allclose(back.outline, sample.outline, atol=1e-4)


def test_round_trip_in_mm_with_pixelsize(tmp_path):
    run = make_run(space_unit="mm")
    path = tmp_path / "table.csv"
    write_fimtrack(run, path, pixelsize=80.0)
    back = read_fimtrack(path, pixelsize=80.0)
    assert back.space_unit == "mm"
    assert back.metadata["camera"] == {"framerate": 30.0, "pixelsize": 80.0}
    np.testing.assert_allclose(back.spine, run.spine, rtol=1e-12)
    np.testing.assert_array_equal(back.t, run.t)
    in_px = read_fimtrack(path)
    np.testing.assert_allclose(in_px.spine, run.spine * 1000 / 80.0, rtol=1e-12)


def test_writer_without_outline_and_other_frame_rates(tmp_path):
    run = make_run(outline=False)
    path = tmp_path / "table.csv"
    write_fimtrack(run, path, framerate=60.0)
    text = path.read_text()
    assert "area(" not in text and "radius_3(0)," in text
    back = read_fimtrack(path, framerate=60.0)
    np.testing.assert_array_equal(back.t, run.t)
    np.testing.assert_array_equal(back.spine, run.spine)
    with pytest.raises(ValueError, match="same frame"):
        write_fimtrack(run, path, framerate=10.0)
    reversed_run = Run(id=run.id, larva_ids=run.larva_ids, offsets=run.offsets, t=run.t,
                       spine=run.spine[:, ::-1], spine_head="last")
    write_fimtrack(reversed_run, path)
    np.testing.assert_array_equal(read_fimtrack(path).spine, run.spine)  # head first again


def test_eleven_point_spines_give_nine_spinepoints(tmp_path):
    rng = np.random.default_rng(3)
    run = Run.from_tracks("x", [1], [np.arange(4) / 30], [rng.normal(size=(4, 11, 2))])
    path = tmp_path / "table.csv"
    write_fimtrack(run, path)
    back = read_fimtrack(path)
    assert back.n_points == 11 and back.outline.shape == (4, 21, 2)
    np.testing.assert_array_equal(back.spine, run.spine)


# ----------------------------------------------------- registry and detection
def test_load_detect_and_save(tmp_path):
    run = make_run()
    path = tmp_path / "table.csv"
    save(run, path, format="fimtrack")
    assert is_fimtrack(path)
    assert detect(path).name == "fimtrack"
    np.testing.assert_array_equal(load(path).spine, run.spine)
    assert detect(SAMPLE).name == "fimtrack"


def test_detection_never_raises(tmp_path):
    assert not is_fimtrack(tmp_path)
    assert not is_fimtrack(tmp_path / "absent.csv")
    other = tmp_path / "other.csv"
    other.write_text("a,b,c\n1,2,3\n")
    assert not is_fimtrack(other)


def test_sample_file_exact_values():
    run = load(SAMPLE)
    assert run.id == "fimtrack"  # table.csv: the directory name
    assert run.larva_ids.tolist() == [0, 3]
    assert run.offsets.tolist() == [0, 5, 8]
    np.testing.assert_array_equal(run[0].t, [0.0, 0.0333, 0.0667, 0.1, 0.1333])
    np.testing.assert_array_equal(run[3].t, [0.0333, 0.0667, 0.1])
    np.testing.assert_array_equal(run[0].spine[0], [[512.5, 300.25], [506.5, 300.75],
                                                    [500.5, 301.25], [494.5, 301.75],
                                                    [488.5, 302.25]])
    np.testing.assert_array_equal(run[3].spine[2, 0], [103.0, 201.0])
    assert run.space_unit == "px" and run.spine_head == "first"
    outline = run[0].outline[0]
    assert outline.shape == (9, 2)
    np.testing.assert_array_equal(outline[0], [512.5, 300.25])
    np.testing.assert_array_equal(outline[8], [512.5, 300.25])
    np.testing.assert_array_equal(outline[4], [488.5, 302.25])
    spine = run[0].spine[0]
    for i, radius in enumerate([3.5, 4.25, 3.0], start=1):
        left, right = outline[i], outline[8 - i]
        np.testing.assert_allclose(np.hypot(*(left - spine[i])), radius, atol=1e-4)
        np.testing.assert_allclose(np.hypot(*(right - spine[i])), radius, atol=1e-4)
        np.testing.assert_allclose((left + right) / 2, spine[i], atol=1e-4)


def test_reader_options():
    run = read_fimtrack(SAMPLE, framerate=10, pixelsize=100.0, radii=[1.0, 1.0, 1.0])
    np.testing.assert_array_equal(run[3].t, [0.1, 0.2, 0.3])
    np.testing.assert_allclose(run[0].spine[0, 0], [51.25, 30.025])
    assert run.space_unit == "mm" and run.frame_rate == 10.0
    assert run.metadata["overrides"] == {"radius_1": 1.0, "radius_2": 1.0, "radius_3": 1.0}
    np.testing.assert_allclose(np.hypot(*(run.outline[0, 1] - run.spine[0, 1])), 0.1, atol=1e-5)
    assert read_fimtrack(SAMPLE, run_id="abc", pixelsize=None).id == "abc"
    with pytest.raises(TypeError, match="outline"):
        read_fimtrack(SAMPLE, outline=False)
    with pytest.raises(ValueError, match="gaps"):
        read_fimtrack(SAMPLE, gaps="fill")


def test_fimtrack_outline_straight_spine():
    spine = np.array([[[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [4.0, 0.0]]])
    outline = fimtrack_outline(spine, np.array([[0.5, 1.0, 0.5]]))
    np.testing.assert_allclose(outline[0], [[0, 0], [1, 0.5], [2, 1], [3, 0.5], [4, 0],
                                            [3, -0.5], [2, -1], [1, -0.5], [0, 0]])


# --------------------------------------------------------------- robustness
def rewrite(tmp_path: Path, content: bytes | str, name: str = "table.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def test_crlf_quotes_and_bom(tmp_path):
    quoted = "\r\n".join(",".join(f'"{cell}"' if cell else cell for cell in line.split(","))
                         for line in SAMPLE_LINES)
    path = rewrite(tmp_path, b"\xef\xbb\xbf" + SAMPLE_TEXT.replace("\n", "\r\n").encode())
    assert is_fimtrack(path)
    reference = load(SAMPLE)
    np.testing.assert_array_equal(load(path).spine, reference.spine)
    path = rewrite(tmp_path, quoted, "quoted.csv")
    np.testing.assert_array_equal(read_fimtrack(path).spine, reference.spine)


def test_gaps_keep_or_truncate(tmp_path):
    # larva 0 loses its spine in frame 2 (every spine row empty for that column)
    lines = []
    for line in SAMPLE_LINES:
        name, _, rest = line.partition(",")
        feature = name.split("(")[0]
        if name.endswith("(2)") and (feature.startswith(("head", "spinepoint", "tail"))):
            rest = "," + rest.split(",", 1)[1]
        lines.append(name + "," + rest if name else line)
    path = rewrite(tmp_path, "\n".join(lines) + "\n")
    kept = read_fimtrack(path)
    np.testing.assert_array_equal(kept[0].t, [0.0, 0.0333, 0.1, 0.1333])
    truncated = read_fimtrack(path, gaps="truncate")
    np.testing.assert_array_equal(truncated[0].t, [0.0, 0.0333])
    np.testing.assert_array_equal(truncated[3].t, [0.0333, 0.0667, 0.1])


def cut_cell(line: str, column: int, value: str) -> str:
    cells = line.split(",")
    cells[column] = value
    return ",".join(cells)


def replaced(index: int, line: str) -> str:
    lines = list(SAMPLE_LINES)
    lines[index] = line
    return "\n".join(lines) + "\n"


HEAD_X1 = SAMPLE_LINES.index("head_x(1),514.5,100")


def all_spine_cells_empty() -> str:
    out = [SAMPLE_LINES[0]]
    for line in SAMPLE_LINES[1:]:
        name = line.split(",")[0]
        if name.startswith(("head", "spinepoint", "tail")):
            line = name + ",,"
        out.append(line)
    return "\n".join(out) + "\n"


@pytest.mark.parametrize("content, message", [
    ("", "is empty"),
    ("\n\n", "is empty"),
    (SAMPLE_TEXT[:len(SAMPLE_TEXT) // 2 + 7], "ragged or truncated"),
    ("\n".join(SAMPLE_LINES[:-3]) + "\n", "acceleration has 2 frames, others have 5"),
    (SAMPLE_LINES[0] + "\n", "no data rows"),
    (replaced(HEAD_X1, "head_x(1),514.5"), f"line {HEAD_X1 + 1} has 2 cells, expected 3"),
    (replaced(HEAD_X1, "head_x(1),514.5,1O0"),
     f"line {HEAD_X1 + 1}: head_x\\(1\\) value \\(column 3\\): '1O0' is not a number"),
    (replaced(0, ",larva(0),larva(x)"), "column 3: 'larva\\(x\\)' is not 'larva\\(<id>\\)'"),
    (replaced(0, ",larva(0),larva(0)"), "duplicate larva ids"),
    (replaced(HEAD_X1, "head_x(0),514.5,100"), "head_x lists frame 0 twice"),
    (replaced(HEAD_X1, "head_x,514.5,100"), "row name 'head_x' is not"),
    ("\n".join(line for line in SAMPLE_LINES if not line.startswith("tail_y")) + "\n",
     "has no tail_y rows"),
    (all_spine_cells_empty(), "no larva has spine data"),
    ("frame,x,y\n1,2,3\n", "not a FIMTrack table"),
    (SAMPLE_TEXT.encode("utf-16"), "UTF-16"),
    (SAMPLE_TEXT.replace("mom_x(1)", "mom_\xe9(1)").encode("latin-1"), "not UTF-8"),
    (b"\x89HDF\r\n\x1a\n\x00\x00binary", "binary"),
], ids=["empty", "blank", "truncated-mid-line", "truncated-at-line", "header-only", "ragged",
        "not-a-number", "bad-header", "duplicate-ids", "duplicate-frame", "bad-row-name",
        "missing-feature", "no-spine-data", "wrong-signature", "utf16", "latin1", "binary"])
def test_broken_tables(tmp_path, content, message):
    path = rewrite(tmp_path, content, "broken.csv")
    with pytest.raises(FormatError, match=message) as info:
        read_fimtrack(path)
    assert "broken.csv" in str(info.value)
    with pytest.raises(FormatError):
        load(path, format="fimtrack")


def test_directory_and_missing_file(tmp_path):
    with pytest.raises(FormatError, match="is a directory") as info:
        read_fimtrack(tmp_path)
    assert tmp_path.name in str(info.value)
    with pytest.raises(FormatError, match="cannot be read"):
        read_fimtrack(tmp_path / "absent.csv")


def test_infinite_values_are_a_format_error(tmp_path):
    path = rewrite(tmp_path, replaced(HEAD_X1, "head_x(1),inf,100"), "inf.csv")
    with pytest.raises(FormatError, match="infinite") as info:
        read_fimtrack(path)
    assert "inf.csv" in str(info.value)
