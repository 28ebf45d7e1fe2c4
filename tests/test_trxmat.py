"""trx.mat: round trips (v7.3, v5), MATLAB's HDF5 layout, liberal reading, broken files."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io

from taggingbackends.data.tracks import Run
from taggingbackends.errors import FormatError
from taggingbackends.formats import detect, load
from taggingbackends.formats.trxmat import (FLAG_FIELDS, is_trxmat, matlab_header, metadata_from_path,
                                            read_trxmat, write_trxmat)

RUN_ID = "20150701_105504"
TAGS = ("run", "cast", "stop_large", "small_motion")  # not in canonical order


def sample_run(n_larvae: int = 3, seed: int = 1, tags=TAGS) -> Run:
    """Larvae of different lengths, 11-point spines, contours whose vertex count
    varies per step, a few tags, a NaN spine step."""
    rng = np.random.default_rng(seed)
    times, spines, outlines, flags = [], [], [], []
    for k in range(n_larvae):
        n = 5 + 3 * k
        times.append(np.round(1.5 + k + 0.0913 * np.arange(n), 4))
        spine = rng.normal(size=(n, 11, 2)).round(6)
        if k == 1:
            spine[2] = np.nan
        spines.append(spine)
        outlines.append([rng.normal(size=(int(rng.integers(6, 14)), 2)).astype(np.float32) for _ in range(n)])
        flags.append(rng.random((n, len(tags))) < 0.4)
    return Run.from_tracks(RUN_ID, [7, 12, 40][:n_larvae] if n_larvae <= 3 else range(1, n_larvae + 1),
                           times, spines, outlines=outlines, tags=flags, tag_names=tags,
                           metadata={"protocol": "p_8_45s1x30s0s#n#n#n", "tracker": "t15"})


def assert_same_run(back: Run, run: Run) -> None:
    assert back.id == run.id
    np.testing.assert_array_equal(back.larva_ids, run.larva_ids)
    np.testing.assert_array_equal(back.offsets, run.offsets)
    np.testing.assert_array_equal(back.t, run.t)
    np.testing.assert_array_equal(back.spine, run.spine)
    if run.outline is None:
        assert back.outline is None
    else:
        np.testing.assert_array_equal(back.outline, run.outline)
    assert set(back.tag_names) == set(run.tag_names)
    assert list(back.tag_names) == [f for f in FLAG_FIELDS if f in run.tag_names]
    for name in run.tag_names:
        np.testing.assert_array_equal(back.tags[:, back.tag_names.index(name)],
                                      run.tags[:, run.tag_names.index(name)])
    assert back.source_format == "trxmat" and back.spine_head == "unknown" and back.space_unit == "mm"


# ------------------------------------------------------------------ round trips
@pytest.mark.parametrize("version", ["7.3", "5"])
def test_round_trip(tmp_path, version):
    run = sample_run()
    path = tmp_path / "trx.mat"
    write_trxmat(run, path, version=version)
    back = read_trxmat(path)
    assert_same_run(back, run)
    assert back.metadata["protocol"] == "p_8_45s1x30s0s#n#n#n"
    assert back.metadata["date_time"] == RUN_ID
    assert back.source == (path,)
    assert detect(path).name == "trxmat"
    assert_same_run(load(path), run)


@pytest.mark.parametrize("version", ["7.3", "5"])
def test_single_larva_is_a_scalar_struct(tmp_path, version):
    run = sample_run(n_larvae=1)
    path = tmp_path / "trx.mat"
    write_trxmat(run, path, version=version)
    assert_same_run(read_trxmat(path), run)
    if version == "7.3":
        with h5py.File(path, "r") as f:  # MATLAB stores a 1x1 struct's values in place
            assert f["trx/x_spine"].dtype == np.float64 and f["trx/x_spine"].shape == (11, 5)


def _add_cell(f, group, name: str, elements: int = 7):
    """A MATLAB cell array (1 x elements of empty doubles): a reference dataset
    with MATLAB_class "cell", its elements in #refs#."""
    refs_group = f.require_group("#refs#")
    refs = []
    for k in range(elements):
        target = refs_group.create_dataset(f"{name}_{len(refs_group)}_{k}", data=np.array([0, 0], np.uint64))
        target.attrs["MATLAB_class"] = np.bytes_(b"double")
        target.attrs["MATLAB_empty"] = np.uint8(1)
        refs.append(target.ref)
    cell = group.create_dataset(name, data=np.array(refs, dtype=h5py.ref_dtype)[:, None])
    cell.attrs["MATLAB_class"] = np.bytes_(b"cell")
    return cell


def test_cell_fields_are_ignored(tmp_path):
    one = tmp_path / "one.mat"
    write_trxmat(sample_run(n_larvae=1), one)
    with h5py.File(one, "r+") as f:  # a 1x1 struct with a cell field stays a 1x1 struct
        _add_cell(f, f["trx"], "duration_large")
    assert read_trxmat(one).n_tracks == 1
    many = tmp_path / "many.mat"
    run = sample_run()
    write_trxmat(run, many)
    with h5py.File(many, "r+") as f:  # a struct-array field holding one cell per larva
        cells = [_add_cell(f, f["#refs#"], f"cell{i}").ref for i in range(3)]
        f["trx"].create_dataset("t_start_stop_large", data=np.array([cells], dtype=h5py.ref_dtype))
    assert_same_run(read_trxmat(many), run)
    with pytest.raises(FormatError, match="`t_start_stop_large` of `trx` is not numeric"):
        read_trxmat(many, tag_fields=["t_start_stop_large"])


def test_read_options(tmp_path):
    run = sample_run()
    path = tmp_path / "trx.mat"
    write_trxmat(run, path, compression="gzip")  # chunked + deflate: the HDF5 read path
    assert_same_run(read_trxmat(path), run)
    bare = read_trxmat(path, outline=False, tags="none")
    assert bare.outline is None and bare.tags is None
    picked = read_trxmat(path, tag_fields=["stop_large", "run"])
    assert picked.tag_names == ("stop_large", "run")
    np.testing.assert_array_equal(picked.tags[:, 1], run.tags[:, 0])
    assert read_trxmat(path, framerate=30, verify=False).n_steps == run.n_steps  # CLI options ignored
    with pytest.raises(TypeError, match="unexpected option"):
        read_trxmat(path, nonsense=1)


# ------------------------------------------------------- MATLAB's HDF5 layout
def test_v73_file_has_matlab_layout(tmp_path):
    run = sample_run()
    path = tmp_path / "trx.mat"
    write_trxmat(run, path)
    head = path.read_bytes()[:520]
    assert head[:19] == b"MATLAB 7.3 MAT-file"
    assert b"HDF5 schema 1.00 ." in head[:116]
    assert head[124:128] == b"\x00\x02IM"
    assert head[512:520] == b"\x89HDF\r\n\x1a\n"
    assert len(matlab_header()) == 128
    with h5py.File(path, "r") as f:
        assert f.userblock_size == 512
        trx = f["trx"]
        assert trx.attrs["MATLAB_class"] == b"struct"
        fields = [b"".join(chars).decode() for chars in trx.attrs["MATLAB_fields"]]
        assert fields[:7] == ["t", "x_spine", "y_spine", "x_contour", "y_contour", "numero_larva_num", "id"]
        assert set(fields) == set(trx.keys())
        assert set(TAGS) <= set(fields) and "protocol" in fields
        for name in fields:  # struct-array fields: n x 1 MATLAB = (1, n) HDF5, no MATLAB_class
            assert trx[name].dtype == h5py.ref_dtype and trx[name].shape == (1, 3)
            assert "MATLAB_class" not in trx[name].attrs
        empty = f["#refs#/a"]
        assert empty.attrs["MATLAB_class"] == b"canonical empty" and empty.attrs["MATLAB_empty"] == 1
        lengths = run.lengths
        for i in range(3):
            lo, hi = run.offsets[i], run.offsets[i + 1]
            x = f[trx["x_spine"][0, i]]
            assert x.name.startswith("/#refs#/")
            assert x.attrs["MATLAB_class"] == b"double" and x.shape == (11, lengths[i])
            np.testing.assert_array_equal(x[()], run.spine[lo:hi, :, 0].T)  # column-major
            t = f[trx["t"][0, i]]
            assert t.shape == (1, lengths[i])
            np.testing.assert_array_equal(t[0], run.t[lo:hi])
            number = f[trx["numero_larva_num"][0, i]]
            assert number.shape == (1, 1) and number[0, 0] == run.larva_ids[i]
            flag = f[trx["run"][0, i]][0]
            assert set(np.unique(flag)) <= {-1.0, 1.0}
            np.testing.assert_array_equal(flag == 1, run.tags[lo:hi, 0])
            xc = f[trx["x_contour"][0, i]]
            assert xc.shape[1] == lengths[i] and np.isnan(xc[()]).any()  # NaN-padded
            ident = f[trx["id"][0, i]]
            assert ident.dtype == np.uint16 and ident.shape == (len(RUN_ID), 1)
            assert ident.attrs["MATLAB_class"] == b"char" and ident.attrs["MATLAB_int_decode"] == 2
            assert "".join(map(chr, ident[:, 0])) == RUN_ID


def test_v5_file_is_a_matlab_struct_array(tmp_path):
    path = tmp_path / "trx.mat"
    write_trxmat(sample_run(), path, version="5")
    assert path.read_bytes()[:19] == b"MATLAB 5.0 MAT-file"
    trx = scipy.io.loadmat(path)["trx"]
    assert trx.shape == (3, 1)
    assert trx[0, 0]["x_spine"].shape == (5, 11) and trx[0, 0]["t"].shape == (5, 1)
    assert str(trx[1, 0]["id"][0]) == RUN_ID


# --------------------------------------------------- files written "by MATLAB"
def _char(group, name, text):
    dataset = group.create_dataset(name, data=np.frombuffer(text.encode("utf-16-le"), np.uint16)[:, None])
    dataset.attrs["MATLAB_class"] = np.bytes_(b"char")
    dataset.attrs["MATLAB_int_decode"] = np.int32(2)
    return dataset


def write_matlab_like(path: Path, larvae: list[dict], *, refs_shape: str = "column",
                      strings: dict | None = None, header: bool = True, **dataset_options) -> None:
    """A v7.3 file built by hand, as liberal variants of MATLAB's layout."""
    names = list(larvae[0])
    with h5py.File(path, "w", userblock_size=512) as f:
        trx = f.create_group("trx")
        trx.attrs["MATLAB_class"] = np.bytes_(b"struct")
        refs_group = f.create_group("#refs#")
        count = 0
        refs = {}
        for name in names + list(strings or {}):
            column = []
            for larva in larvae:
                count += 1
                value = (strings or {}).get(name, larva.get(name))
                if isinstance(value, str):
                    dataset = _char(refs_group, f"r{count}", value)
                elif value is None or np.size(value) == 0:
                    dataset = refs_group.create_dataset(f"r{count}", data=np.array([0, 0], np.uint64))
                    dataset.attrs["MATLAB_class"] = np.bytes_(b"double")
                    dataset.attrs["MATLAB_empty"] = np.uint8(1)
                else:
                    value = np.asarray(value)
                    dataset = refs_group.create_dataset(f"r{count}", data=value, **dataset_options)
                    dataset.attrs["MATLAB_class"] = np.bytes_(b"logical" if value.dtype == np.uint8 else b"double")
                column.append(dataset.ref)
            shape = (len(larvae), 1) if refs_shape == "column" else (1, len(larvae))
            refs[name] = np.array(column, dtype=h5py.ref_dtype).reshape(shape)
        for name, array in refs.items():
            trx.create_dataset(name, data=array, dtype=h5py.ref_dtype)
    if header:
        with open(path, "r+b") as handle:
            handle.write(matlab_header())


def test_liberal_reading_of_other_layouts(tmp_path):
    """(n, 1) reference arrays, per-larva matrices stored frames-first, ``t`` as a
    row, flags with 0 as inactive and as logical, an empty contour, a contour
    with a hole (truncated at the first NaN), compressed data, global state."""
    rng = np.random.default_rng(3)
    spine_a = rng.normal(size=(4, 11, 2))
    spine_b = rng.normal(size=(6, 11, 2))
    contour_a = rng.normal(size=(4, 9, 2))
    contour_a[1, 5:] = np.nan
    contour_a[2, 3, 0] = np.nan  # a hole: vertices after it are dropped
    larvae = [
        dict(t=np.array([[0.10004, 0.2, 0.3, 0.4]]),          # h5py (1, n): MATLAB n x 1
             x_spine=spine_a[..., 0], y_spine=spine_a[..., 1],  # h5py (n, 11): frames first
             x_contour=contour_a[..., 0], y_contour=contour_a[..., 1],
             numero_larva_num=np.array([[5.0]]),
             run=np.array([[1.0, 0.0, 0.0, 1.0]]), cast=np.array([[0, 1, 1, 0]], dtype=np.uint8)),
        dict(t=np.arange(1, 7)[:, None] * 0.5,               # h5py (n, 1): a row vector
             x_spine=spine_b[..., 0].T, y_spine=spine_b[..., 1].T,
             x_contour=None, y_contour=None,
             numero_larva_num=np.array([[9.0]]),
             run=-np.ones((1, 6)), cast=np.ones((1, 6), dtype=np.uint8)),
    ]
    path = tmp_path / "20190101_120000" / "trx.mat"
    path.parent.mkdir()
    write_matlab_like(path, larvae, refs_shape="column", compression="gzip")
    run = read_trxmat(path)
    assert run.id == "20190101_120000"  # no `id` field: the parent directory's name
    assert run.larva_ids.tolist() == [5, 9]
    assert run.t[:4].tolist() == [0.1, 0.2, 0.3, 0.4]  # 4 decimals
    np.testing.assert_array_equal(run.spine, np.concatenate([spine_a, spine_b]))
    assert run.tag_names == ("cast", "run")
    assert run.tags[:, 1].tolist() == [True, False, False, True] + [False] * 6
    assert run.tags[:, 0].tolist() == [False, True, True, False] + [True] * 6
    counts = (~np.isnan(run.outline).any(axis=2)).sum(axis=1)
    assert counts.tolist() == [9, 5, 3, 9] + [0] * 6
    np.testing.assert_array_equal(run.outline[0], contour_a[0].astype(np.float32))

    # global_state_large_state when no flag field is present
    for larva in larvae:
        del larva["run"], larva["cast"]
        larva["global_state_large_state"] = np.array([[1.0, 2.0, 8.0, 3.0, 2.0, 2.0][:len(larva["t"].ravel())]])
    other = tmp_path / "states.mat"
    write_matlab_like(other, larvae, refs_shape="row", strings={"id": "20200202_020202"})
    run = read_trxmat(other)
    assert run.id == "20200202_020202"
    assert run.tag_names == ("run", "cast", "stop", "hunch", "back", "roll", "small_motion", "bend")
    assert [run.tag_names[j] for j in run.tags[:4].argmax(axis=1)] == ["run", "cast", "bend", "stop"]
    assert read_trxmat(other, tags="flags").tags is None


def test_metadata_from_screen_path(tmp_path):
    path = (tmp_path / "t15" / "GMR_SS01@UAS_Chrimson" / "r_LED50_30s2x15s30s#n#n#n"
            / RUN_ID / "trx.mat")
    path.parent.mkdir(parents=True)
    run = sample_run()
    run.metadata = {}
    write_trxmat(run, path)
    back = read_trxmat(path)
    assert back.metadata == {"tracker": "t15", "genotype": "GMR_SS01", "effector": "UAS_Chrimson",
                             "protocol": "r_LED50_30s2x15s30s#n#n#n", "date_time": RUN_ID}
    assert metadata_from_path("C:\\data\\x\\20150701_105504\\trx.mat") == {"date_time": RUN_ID}
    assert metadata_from_path("/data/trx.mat") == {}


# ---------------------------------------------------------------- broken files
def _written(tmp_path, name="trx.mat", version="7.3") -> Path:
    path = tmp_path / name
    write_trxmat(sample_run(), path, version=version)
    return path


def _expect_error(path: Path, match: str) -> FormatError:
    with pytest.raises(FormatError, match=match) as info:
        read_trxmat(path)
    assert path.name in str(info.value)
    assert "\n" not in str(info.value)
    with pytest.raises(FormatError) as via_load:
        load(path, format="trxmat")
    assert path.name in str(via_load.value)
    return info.value


@pytest.mark.parametrize("version", ["7.3", "5"])
def test_truncated_file(tmp_path, version):
    path = _written(tmp_path, "cut.mat", version)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    _expect_error(path, "truncated|not a readable|cannot be read")
    assert is_trxmat(path)  # the header is there: the reader says what is wrong
    with pytest.raises(FormatError, match="cut.mat"):
        load(path)


def test_wrong_signature_empty_and_plain_hdf5(tmp_path):
    text = tmp_path / "notes.mat"
    text.write_text("hello\n")
    _expect_error(text, "not a MATLAB MAT-file")
    empty = tmp_path / "empty.mat"
    empty.write_bytes(b"")
    _expect_error(empty, "is empty")
    plain = tmp_path / "plain.mat"
    with h5py.File(plain, "w") as f:
        f["trx"] = np.zeros(3)
    _expect_error(plain, "plain HDF5 file")
    assert not is_trxmat(text) and not is_trxmat(empty) and not is_trxmat(plain)
    assert not is_trxmat(tmp_path) and not is_trxmat(tmp_path / "absent.mat")


def test_mat_file_without_trx(tmp_path):
    v5 = tmp_path / "other5.mat"
    scipy.io.savemat(v5, {"tracks": np.zeros((2, 2))})
    assert "tracks" in str(_expect_error(v5, "has no `trx` variable"))
    v73 = tmp_path / "other73.mat"
    write_matlab_like(v73, [dict(t=np.ones((1, 2)))])
    with h5py.File(v73, "r+") as f:
        f.move("trx", "tracks")
    _expect_error(v73, "has no `trx` variable")
    assert is_trxmat(v73) and not is_trxmat(v73, shallow=False)
    assert is_trxmat(_written(tmp_path), shallow=False)


def test_nan_only_spine(tmp_path):
    path = _written(tmp_path, "nanspine.mat")
    with h5py.File(path, "r+") as f:
        for field in ("x_spine", "y_spine"):
            dataset = f[f["trx"][field][0, 2]]
            dataset[...] = np.nan
    _expect_error(path, "larva 40 has no spine data")


def test_non_monotonic_time(tmp_path):
    path = _written(tmp_path, "time.mat")
    with h5py.File(path, "r+") as f:
        dataset = f[f["trx"]["t"][0, 1]]
        dataset[...] = dataset[()][:, ::-1]
    _expect_error(path, "not strictly increasing")


def test_inconsistent_fields(tmp_path):
    path = tmp_path / "ragged.mat"
    larvae = [dict(t=np.ones((1, 3)).cumsum(axis=1), x_spine=np.zeros((11, 4)), y_spine=np.zeros((11, 4)))]
    write_matlab_like(path, larvae)
    _expect_error(path, "x_spine.*but `t` has 3 values")
    missing = tmp_path / "nospine.mat"
    write_matlab_like(missing, [dict(t=np.ones((1, 3)).cumsum(axis=1), x_spine=np.zeros((11, 3)))])
    _expect_error(missing, "no `y_spine` field")
    twice = _written(tmp_path, "twice.mat")
    with h5py.File(twice, "r+") as f:
        f[f["trx"]["numero_larva_num"][0, 2]][...] = 12
    _expect_error(twice, "larva number 12 appears twice")


def test_writer_checks_tag_names(tmp_path):
    run = sample_run().with_tags(np.zeros((sample_run().n_steps, 1), bool), ["new behavior"])
    with pytest.raises(Exception, match="not a valid MATLAB field name"):
        write_trxmat(run, tmp_path / "bad.mat")
    assert not (tmp_path / "bad.mat").exists()
    with pytest.raises(ValueError, match="unsupported MAT-file version"):
        write_trxmat(sample_run(), tmp_path / "x.mat", version="4")
