"""Choreography .spine/.outline reader and writer (taggingbackends.formats.chore)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from taggingbackends.data.tracks import Run, outline_vertex_counts
from taggingbackends.errors import FormatError
from taggingbackends.formats import detect, load, save
from taggingbackends.formats.chore import (chore_pair, is_chore, parse_chore_filename,
                                           read_chore, write_chore)

DATA = Path(__file__).parent / "data" / "chore"
STEM = ("20150701_105504@FCF_attP2_1500062@UAS_Chrimson_Venus_X_0070@t15@"
        "r_LED50_30s2x15s30s#n#n#n@100")
SAMPLE = DATA / f"{STEM}.spine"


def make_run(decimals: int | None = 3, ids=(7, 2, 40)) -> Run:
    """Three larvae, 11-point spines, outlines whose vertex count varies per step."""
    rng = np.random.default_rng(42)
    times, spines, outlines = [], [], []
    for k, _ in enumerate(ids):
        n = 4 + 2 * k
        t = np.round(3.675 + np.cumsum(rng.uniform(0.08, 0.1, n)), 3)
        spine = rng.uniform(10, 150, size=(n, 11, 2))
        steps = []
        for _ in range(n):
            vertices = rng.uniform(10, 150, size=(int(rng.integers(6, 25)), 2)).astype(np.float32)
            steps.append(vertices if decimals is None else vertices.round(decimals))
        if decimals is not None:
            spine = spine.round(decimals)
        times.append(t)
        spines.append(spine)
        outlines.append(steps)
    return Run.from_tracks("20150701_105504", list(ids), times, spines, outlines=outlines)


def assert_same_tracks(expected: Run, actual: Run, spine_atol: float = 0.0) -> None:
    assert sorted(expected.larva_ids.tolist()) == actual.larva_ids.tolist()
    for track in expected:
        other = actual[track.larva_id]
        np.testing.assert_array_equal(other.t, track.t)
        np.testing.assert_allclose(other.spine, track.spine, rtol=0, atol=spine_atol)
        counts = outline_vertex_counts(track.outline)
        np.testing.assert_array_equal(outline_vertex_counts(other.outline), counts)
        width = min(track.outline.shape[1], other.outline.shape[1])
        np.testing.assert_array_equal(other.outline[:, :width], track.outline[:, :width])


# ---------------------------------------------------------------- round trips
def test_round_trip_file_precision(tmp_path):
    run = make_run()
    path = tmp_path / f"{STEM}.spine"
    write_chore(run, path)
    assert path.with_suffix(".outline").is_file()
    back = read_chore(path)
    assert_same_tracks(run, back)
    assert back.larva_ids.tolist() == [2, 7, 40]  # tracks sorted by larva id
    assert back.id == "20150701_105504"
    assert back.source_format == "chore" and back.spine_head == "unknown"
    assert back.space_unit == "mm" and back.frame_rate is None
    assert back.source == (path, path.with_suffix(".outline"))
    assert back.metadata == {"date_time": "20150701_105504", "genotype": "FCF_attP2_1500062",
                             "effector": "UAS_Chrimson_Venus_X_0070", "tracker": "t15",
                             "protocol": "r_LED50_30s2x15s30s#n#n#n@100", "masked": {"missing": 0}}
    # writing what was read reproduces the lines exactly (tracks now sorted by larva id)
    again = tmp_path / "again" / f"{STEM}.spine"
    write_chore(back, again)
    for suffix in (".spine", ".outline"):
        written = again.with_suffix(suffix).read_text().splitlines()
        original = path.with_suffix(suffix).read_text().splitlines()
        assert sorted(written) == sorted(original)
        assert [line.split()[1] for line in written] == sorted(
            [line.split()[1] for line in original], key=int)


def test_round_trip_full_precision(tmp_path):
    run = make_run(decimals=None)  # float32 outlines need 9 digits, spines get 6 decimals
    path = tmp_path / "run.spine"
    write_chore(run, path)
    assert_same_tracks(run, read_chore(path), spine_atol=5.1e-7)


def test_writer_takes_a_stem_or_the_outline_path(tmp_path):
    run = make_run()
    write_chore(run, tmp_path / "a.b")  # a stem: .spine is appended
    assert (tmp_path / "a.b.spine").is_file() and (tmp_path / "a.b.outline").is_file()
    write_chore(run, tmp_path / "c.outline")
    assert (tmp_path / "c.spine").is_file()


def test_run_without_outline_writes_no_outline(tmp_path):
    run = make_run()
    bare = Run(id=run.id, larva_ids=run.larva_ids, offsets=run.offsets, t=run.t, spine=run.spine)
    path = tmp_path / "bare.spine"
    write_chore(bare, path)
    assert not path.with_suffix(".outline").exists()
    with pytest.raises(FormatError, match=r"missing \.outline partner bare\.outline"):
        read_chore(path)
    back = read_chore(path, outline=False)
    assert back.outline is None and back.source == (path,)
    np.testing.assert_array_equal(back.spine, read_chore(path, outline=False).spine)
    # a stale .outline beside the spine would be paired with it: refuse
    write_chore(run, path)
    with pytest.raises(ValueError, match="no outline"):
        write_chore(bare, path)


def test_writer_needs_a_date_time_id(tmp_path):
    run = make_run()
    odd = Run(id="sim", larva_ids=run.larva_ids, offsets=run.offsets, t=run.t, spine=run.spine)
    with pytest.raises(ValueError, match="date_time"):
        write_chore(odd, tmp_path / "x.spine")
    write_chore(odd, tmp_path / "x.spine", date_time="20200101_000000")
    assert read_chore(tmp_path / "x.spine", outline=False).id == "20200101_000000"


# ----------------------------------------------------- registry and detection
def test_load_and_detect_pick_chore(tmp_path):
    run = make_run()
    path = tmp_path / f"{STEM}.spine"
    save(run, path)  # format from the .spine suffix
    outline = path.with_suffix(".outline")
    for target in (path, outline, tmp_path):
        assert is_chore(target)
        assert detect(target).name == "chore"
        assert_same_tracks(run, load(target))
    assert chore_pair(outline) == (path, outline)
    assert chore_pair(tmp_path) == (path, outline)


def test_detection_never_raises(tmp_path):
    assert not is_chore(tmp_path / "absent.spine")
    assert not is_chore(tmp_path)  # a directory without .spine
    (tmp_path / "x.spine").write_bytes(b"\xff\xfe\x00")
    assert not is_chore(tmp_path / "x.spine")
    assert not is_chore(tmp_path)
    (tmp_path / "y.spine").write_text("not chore\n")
    assert not is_chore(tmp_path)  # two .spine files


def test_sample_file_exact_values():
    run = load(SAMPLE)
    assert run.id == "20150701_105504"
    assert run.larva_ids.tolist() == [12, 512]
    assert run.offsets.tolist() == [0, 5, 10]
    assert run.n_points == 11
    np.testing.assert_array_equal(run[12].t, [3.675, 3.756, 3.838, 3.921, 4.005])
    np.testing.assert_array_equal(run[512].t, [3.756, 3.838, 3.921, 4.005, 4.087])
    np.testing.assert_array_equal(run[12].spine[0, :2], [[45.12, 67.89], [45.47, 67.915]])
    np.testing.assert_array_equal(run[512].spine[4, 0], [110.7, 22.33])
    assert outline_vertex_counts(run.outline).tolist() == [10, 12, 11, 12, 10, 11, 11, 13, 12, 12]
    assert run.outline.dtype == np.float32 and run.outline.shape == (10, 13, 2)
    np.testing.assert_array_equal(run[12].outline[0, :2],
                                  np.array([[48.67, 67.861], [48.326, 68.096]], dtype=np.float32))
    assert np.isnan(run[12].outline[0, 10:]).all()
    assert run.metadata["tracker"] == "t15"
    assert run.metadata["protocol"] == "r_LED50_30s2x15s30s#n#n#n@100"
    assert load(DATA).n_steps == 10  # the directory holds one pair


def test_parse_chore_filename():
    assert parse_chore_filename(f"{STEM}.outline")["genotype"] == "FCF_attP2_1500062"
    assert parse_chore_filename("plain.spine") == {}
    assert parse_chore_filename("a@b@c@d@e@f.spine") == {}  # no date_time


# --------------------------------------------------------------- robustness
def copy_pair(tmp_path: Path, name: str = "run") -> tuple[Path, Path]:
    spine, outline = tmp_path / f"{name}.spine", tmp_path / f"{name}.outline"
    shutil.copy(SAMPLE, spine)
    shutil.copy(SAMPLE.with_suffix(".outline"), outline)
    return spine, outline


def test_whitespace_variants_and_blank_lines(tmp_path):
    reference = load(SAMPLE)
    spine, outline = copy_pair(tmp_path)
    text = spine.read_text()
    # double and trailing spaces (retried after normalising), a leading blank line
    spine.write_bytes(("\n" + text.replace(" ", "  ", 3).replace("\n", " \n")).encode())
    # tabs, CRLF and blank lines
    outline.write_bytes(outline.read_text().replace(" ", "\t").replace("\n", "\r\n\r\n").encode())
    run = read_chore(spine)  # (detection needs the signature on the first line)
    np.testing.assert_array_equal(run.spine, reference.spine)
    np.testing.assert_array_equal(run.outline, reference.outline)


def test_interleaved_rows_are_grouped_and_outlines_matched(tmp_path):
    spine, outline = copy_pair(tmp_path)
    lines = spine.read_text().splitlines()
    order = [0, 5, 1, 6, 2, 7, 3, 8, 4, 9]  # sorted by time, larvae interleaved
    spine.write_text("\n".join(lines[i] for i in order) + "\n")
    outline_lines = outline.read_text().splitlines()
    del outline_lines[3]  # larva 12 at 3.921 s has no outline
    outline.write_text("\n".join(outline_lines) + "\n")
    run = load(spine)
    reference = load(SAMPLE)
    np.testing.assert_array_equal(run.spine, reference.spine)
    assert np.isnan(run.outline[3]).all()
    np.testing.assert_array_equal(np.delete(run.outline, 3, axis=0),
                                  np.delete(reference.outline, 3, axis=0))


def test_options(tmp_path):
    assert read_chore(SAMPLE, framerate=None).n_steps == 10  # None options are ignored
    # the command line's reader options mean nothing here (times and mm are in the files)
    assert read_chore(SAMPLE, framerate=10, pixelsize=3.0, verify=False).n_steps == 10
    with pytest.raises(TypeError, match="radii"):
        read_chore(SAMPLE, radii=[1, 2])


def broken(tmp_path: Path, spine_text: bytes | str, name: str = "bad") -> Path:
    spine, _ = copy_pair(tmp_path, name)
    spine.write_bytes(spine_text.encode() if isinstance(spine_text, str) else spine_text)
    return spine


SPINE_TEXT = SAMPLE.read_text()
SPINE_LINES = SPINE_TEXT.splitlines()


@pytest.mark.parametrize("content, message", [
    ("", "is empty"),
    ("\n  \n", "is empty"),
    (SPINE_TEXT[:-40], "line 10 has .* spine coordinates, expected 22"),  # truncated
    ("\n".join(SPINE_LINES[:3] + [SPINE_LINES[3].rsplit(" ", 2)[0]] + SPINE_LINES[4:]),
     "line 4 has 20 spine coordinates"),  # ragged row
    ("\n".join(SPINE_LINES[:2] + [SPINE_LINES[2].replace("3.838 45.220", "3.838 45.2x0")]),
     r"line 3: '45.2x0' is not a number"),
    ("hello world 1 2\n", "not a date_time"),
    ("\n".join(SPINE_LINES[:2] + [SPINE_LINES[2].replace("20150701_105504", "20150702_105504")]),
     "line 3: date_time 20150702_105504 differs"),
    ("\n".join(SPINE_LINES[:1] + SPINE_LINES),
     r"larva 12 has two rows at time 3.675 \(lines 1 and 2\)"),
    ("\n".join([SPINE_LINES[1], SPINE_LINES[0]] + SPINE_LINES[2:]),
     "larva 12: time goes backwards at line 2"),
    ("\n".join(SPINE_LINES[:5] + [" ".join(SPINE_LINES[5].split()[:3] + ["nan"] * 22)]),
     "larva 512 has no spine data"),
    ("\n".join([SPINE_LINES[0].replace(" 12 ", " 1.5 ", 1)]), "larva id 1.5 is not a non-negative"),
    ("\n".join([SPINE_LINES[0].replace("45.120", "inf")]), "infinite spine coordinate"),
    ("\n".join([SPINE_LINES[0] + " 1.0"]), "line 1 has 23 coordinates"),
    (SPINE_TEXT.encode("utf-16"), "UTF-16"),
    (SPINE_TEXT.encode() + "é".encode("latin-1"), "not UTF-8"),
    (b"20150701_105504 1\x00\x01\x02binary", "binary"),
])
def test_broken_spine_files(tmp_path, content, message):
    path = broken(tmp_path, content)
    with pytest.raises(FormatError, match=message) as info:
        read_chore(path)
    assert "bad.spine" in str(info.value)
    with pytest.raises(FormatError):  # load() keeps the FormatError
        load(path, format="chore")


def test_broken_outline_file_is_named(tmp_path):
    spine, outline = copy_pair(tmp_path)
    outline.write_text(outline.read_text().replace("48.670", "4x.670"))
    with pytest.raises(FormatError, match="is not a number") as info:
        read_chore(spine)
    assert "run.outline" in str(info.value)


def test_missing_files_and_directories(tmp_path):
    spine, outline = copy_pair(tmp_path)
    outline.unlink()
    with pytest.raises(FormatError, match=r"missing \.outline partner run\.outline") as info:
        load(spine)
    assert "run.spine" in str(info.value)
    assert load(spine, outline=False).outline is None
    lone = tmp_path / "lone.outline"
    shutil.copy(SAMPLE.with_suffix(".outline"), lone)
    with pytest.raises(FormatError, match=r"missing \.spine partner lone\.spine"):
        read_chore(lone)
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    with pytest.raises(FormatError, match="no .spine file") as info:
        read_chore(empty_dir)
    assert "empty" in str(info.value)
    with pytest.raises(FormatError, match=r"2 \.spine files"):
        copy_pair(tmp_path, "other")
        read_chore(tmp_path)
    with pytest.raises(FormatError, match="no such file"):
        read_chore(tmp_path / "absent.spine")


def test_wrong_format_is_a_format_error(tmp_path):
    path = tmp_path / "table.spine"
    path.write_text(",larva(1),larva(2)\nhead_x(0),1,2\n")
    with pytest.raises(FormatError, match="not a date_time") as info:
        load(path, format="chore", outline=False)
    assert "table.spine" in str(info.value)


# ------------------------------------------------------------ chunked reading
@pytest.fixture
def tiny_chunks(monkeypatch):
    """Read files a few bytes at a time, so that lines straddle many chunk reads."""
    from taggingbackends.formats import chore

    def use(size: int) -> None:
        monkeypatch.setattr(chore, "_CHUNK_SIZE", size)
    return use


def assert_same_run(expected: Run, actual: Run) -> None:
    assert actual.larva_ids.tolist() == expected.larva_ids.tolist()
    np.testing.assert_array_equal(actual.offsets, expected.offsets)
    np.testing.assert_array_equal(actual.t, expected.t)
    np.testing.assert_array_equal(actual.spine, expected.spine)
    assert actual.outline.dtype == expected.outline.dtype
    np.testing.assert_array_equal(actual.outline, expected.outline)


@pytest.mark.parametrize("size", [1, 17, 333, 1 << 20])
def test_chunk_boundaries_change_nothing(tmp_path, tiny_chunks, size):
    run = make_run(ids=tuple(range(1, 8)))
    grouped = tmp_path / "grouped.spine"
    write_chore(run, grouped)
    # the same rows interleaved (sorted by time) in both files, with trailing spaces
    # in the spine, CRLF, blank lines and doubled spaces in the outline
    mixed = tmp_path / "mixed.spine"
    spine_lines = grouped.read_text().splitlines()
    outline_lines = grouped.with_suffix(".outline").read_text().splitlines()
    order = sorted(range(len(spine_lines)), key=lambda i: float(spine_lines[i].split()[2]))
    mixed.write_text("\n".join(spine_lines[i] + " " * (i % 5 == 2)  # (read again, normalised)
                               for i in order) + "\n")
    mixed.with_suffix(".outline").write_bytes("\r\n".join(
        outline_lines[i].replace(" ", "  ", 2) + ("\r\n" if k % 7 == 3 else "")
        for k, i in enumerate(order)).encode())
    reference = read_chore(grouped)
    assert_same_tracks(run, reference)
    tiny_chunks(size)
    assert_same_run(reference, read_chore(grouped))
    assert_same_run(reference, read_chore(mixed))


def numbered(lines: list[str]) -> str:
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("size", [5, 64, 1 << 20])
def test_errors_name_the_right_line_whatever_the_chunks(tmp_path, tiny_chunks, size):
    tiny_chunks(size)
    long = [f"20150701_105504 {1 + k // 40} {3.675 + 0.1 * (k % 40):.3f} "
            + " ".join(f"{10 + k + j:.3f}" for j in range(22)) for k in range(200)]
    cases = [
        (long[:150] + [long[150].replace(" 160.000", " 16o.000")] + long[151:],
         r"line 151: '16o.000' is not a number"),
        (long[:120] + [long[120].rsplit(" ", 2)[0]] + long[121:], "line 121 has 20 spine"),
        (long[:90] + [long[90].replace("20150701_105504", "20150702_105504")] + long[91:],
         "line 91: date_time 20150702_105504 differs from 20150701_105504 on line 1"),
        (long[:170] + [long[169]] + long[170:],
         r"larva 5 has two rows at time 4.575 \(lines 170 and 171\)"),
        (long[:60] + [""] * 3 + long[60:80] + [long[80].replace(" 3 ", " -3 ", 1)] + long[81:],
         "line 84: larva id -3 is not a non-negative integer"),
        (long[:199] + [long[199].replace(" 230.000", " inf")], "line 200: infinite spine"),
    ]
    for k, (lines, message) in enumerate(cases):
        path = tmp_path / f"case{k}.spine"
        path.write_text(numbered(lines))
        with pytest.raises(FormatError, match=message):
            read_chore(path, outline=False)
    # outline errors, also when the outline is read straight into track order
    spine = tmp_path / "pair.spine"
    outline_lines = [" ".join(line.split()[:9 + 2 * (k % 5)]) for k, line in enumerate(long)]
    interleaved = sorted(range(200), key=lambda i: (float(long[i].split()[2]), i))
    for rows in (range(200), interleaved):
        spine.write_text(numbered([long[i] for i in rows]))
        bad = [outline_lines[i] for i in rows]
        target = bad.index(outline_lines[130])
        bad[target] = bad[target].replace("20150701_105504 4 ", "20150701_105504 4.5 ")
        spine.with_suffix(".outline").write_text(numbered(bad))
        with pytest.raises(FormatError, match=f"line {target + 1}: larva id 4.5 is not") as info:
            read_chore(spine)
        assert "pair.outline" in str(info.value)
        dup = [outline_lines[i] for i in rows]
        dup[target] = dup[target - 1]  # two rows of a larva at the same time
        spine.with_suffix(".outline").write_text(numbered(dup))
        larva, time = dup[target].split()[1:3]
        with pytest.raises(FormatError, match=rf"larva {larva} has two rows at time "
                                               rf"{float(time):g} \(line {target + 1}\)"):
            read_chore(spine)


def test_long_lines_and_lone_cr_line_ends(tmp_path, tiny_chunks):
    reference = load(SAMPLE)
    spine, outline = copy_pair(tmp_path)
    spine.write_bytes(spine.read_bytes().replace(b"\n", b"\r"))  # old Mac line ends
    outline.write_bytes(b"\xef\xbb\xbf" + outline.read_bytes())  # a UTF-8 byte-order mark
    for size in (1, 3, 40, 1 << 20):  # lines far longer than a chunk, or many per chunk
        tiny_chunks(size)
        run = read_chore(spine)
        np.testing.assert_array_equal(run.spine, reference.spine)
        np.testing.assert_array_equal(run.outline, reference.outline)
    text = SAMPLE.read_bytes()
    spine.write_bytes(text + "é".encode("latin-1") + b"\n" + text)
    with pytest.raises(FormatError, match=f"byte 0xe9 at offset {len(text)}"):
        read_chore(spine)
    spine.write_bytes(text[:-300] + b"x" * 5 + b"\n" + text + b"\x00")
    with pytest.raises(FormatError, match="binary"):  # wherever the NUL byte is
        read_chore(spine)
