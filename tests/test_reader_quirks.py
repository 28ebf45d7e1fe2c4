"""Real-world quirks of the text formats, each on a tiny committed file
(tests/data/<format>/quirks/, written by tests/data/make_quirk_files.py; the
Schleyer `na` rows are excerpts of the real recordings, see tests/data/schleyer/README.md).

Every variant must read exactly as the plain sample it was made from, except where
the quirk is a missing value, which must give that step missing (NaN spine, time kept).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from taggingbackends.data.tracks import masked_counts, run_summary
from taggingbackends.errors import AssumedValueWarning, FormatError
from taggingbackends.formats import detect, load

DATA = Path(__file__).parent / "data"
SCHLEYER = DATA / "schleyer" / "quirks"
FIMTRACK = DATA / "fimtrack" / "quirks"
CHORE = DATA / "chore" / "quirks"


def schleyer_reference():
    """The first 4 lines of dish01/3.csv, which every Schleyer variant was made from."""
    run = load(DATA / "schleyer" / "dish01" / "3.csv")
    return run.t[:4], run.spine[:4], run.outline[:4]


def fimtrack_reference():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AssumedValueWarning)
        return load(DATA / "fimtrack" / "table.csv")


def chore_reference():
    return load(next((DATA / "chore").glob("*.spine")))


def same_run(a, b) -> None:
    np.testing.assert_array_equal(a.larva_ids, b.larva_ids)
    np.testing.assert_array_equal(a.t, b.t)
    np.testing.assert_array_equal(a.spine, b.spine)
    if b.outline is None:
        assert a.outline is None
    else:
        np.testing.assert_array_equal(a.outline, b.outline)


# -------------------------------------------------------------------- Schleyer
def test_schleyer_real_na_rows_are_missing_steps():
    """9.csv and 48.csv mark an untracked frame as a row of space-padded `na` fields."""
    directory = DATA / "schleyer" / "dish01_na"
    assert detect(directory).name == "schleyer"
    run = load(directory)
    assert run.larva_ids.tolist() == [9, 48] and run.lengths.tolist() == [10, 7]
    nine, forty_eight = run[9], run[48]
    assert nine.t[5] == pytest.approx((188 - 1) / 16) and forty_eight.t[3] == pytest.approx((2380 - 1) / 16)
    for track, row in ((nine, 5), (forty_eight, 3)):
        assert np.diff(track.t) == pytest.approx(1 / 16)  # time kept, regular
        missing = np.isnan(track.spine).all(axis=(1, 2))
        assert np.flatnonzero(missing).tolist() == [row]
        assert np.isnan(track.outline[row]).all()
    assert masked_counts(run) == {"missing": 2, "collision": 0}
    assert run_summary(run) == "2 larvae, 17 steps, 2 missing steps masked"


@pytest.mark.parametrize("variant", ["bom_crlf", "cr_only", "no_final_newline", "trailing_separator",
                                     "semicolon", "tab"])
def test_schleyer_encodings_line_ends_and_separators(variant):
    path = SCHLEYER / variant / "3.csv"
    assert detect(path).name == "schleyer"
    assert detect(path.parent).name == "schleyer"
    run = load(path)
    t, spine, outline = schleyer_reference()
    np.testing.assert_array_equal(run.t, t)
    np.testing.assert_array_equal(run.spine, spine)
    np.testing.assert_array_equal(run.outline, outline)


def test_schleyer_single_missing_cells():
    run = load(SCHLEYER / "single_cells" / "3.csv")
    t, spine, outline = schleyer_reference()
    np.testing.assert_array_equal(run.t, t)
    assert np.isnan(run.spine[1]).all() and np.isnan(run.outline[1]).all()  # 'NA   ' midline cell
    np.testing.assert_array_equal(run.spine[[0, 2, 3]], spine[[0, 2, 3]])  # '   ' contour, '-nan' attribute
    assert np.isnan(run.outline[2]).all()  # a hole in the contour: no outline for that step
    np.testing.assert_array_equal(run.outline[3], outline[3])
    assert masked_counts(run) == {"missing": 1, "collision": 0}


def test_schleyer_missing_frame_index_is_inferred():
    run = load(SCHLEYER / "missing_frame" / "3.csv")
    t, spine, _ = schleyer_reference()
    np.testing.assert_array_equal(run.t, t)
    np.testing.assert_array_equal(run.spine, spine)


def test_schleyer_missing_frame_index_in_a_gap_is_an_error(tmp_path):
    lines = (SCHLEYER / "missing_frame" / "3.csv").read_text().splitlines()
    lines[3] = "9" + lines[3][lines[3].index(","):]  # frames 1, 2, ?, 9: which frame is it?
    path = tmp_path / "3.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(FormatError, match="3.csv: line 3: the frame index is missing"):
        load(path)


# -------------------------------------------------------------------- FIMTrack
@pytest.mark.parametrize("variant", ["bom_crlf", "cr_only", "no_final_newline", "trailing_separator",
                                     "semicolon", "tab"])
def test_fimtrack_encodings_line_ends_and_separators(variant):
    path = FIMTRACK / f"{variant}.csv"
    assert detect(path).name == "fimtrack"
    with pytest.warns(AssumedValueWarning, match="assuming 30 fps"):
        run = load(path)
    same_run(run, fimtrack_reference())


def test_fimtrack_missing_value_tokens():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AssumedValueWarning)
        run = load(FIMTRACK / "missing_tokens.csv")
    reference = fimtrack_reference()
    np.testing.assert_array_equal(run.t, reference.t)
    # larva 3's frame 2 lost one spine cell ('na'): that step is missing, its time kept
    row = int(reference.offsets[1]) + int(np.flatnonzero(np.isclose(reference[3].t, 2 / 30, atol=1e-3))[0])
    assert np.isnan(run.spine[row]).all() and not np.isnan(reference.spine[row]).any()
    keep = np.arange(run.n_steps) != row
    np.testing.assert_array_equal(run.spine[keep], reference.spine[keep])
    assert masked_counts(run) == {"missing": 1}


def test_fimtrack_framerate_option_and_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error", AssumedValueWarning)  # given: no warning
        run = load(FIMTRACK / "tab.csv", framerate=10)
    assert run.frame_rate == 10.0 and run[3].t[:2].tolist() == [0.1, 0.2]


# ------------------------------------------------------------- Choreography
@pytest.mark.parametrize("variant", ["bom_crlf", "cr_only", "trailing_space"])
def test_chore_encodings_and_line_ends(variant):
    spine = next((CHORE / variant).glob("*.spine"))
    assert detect(spine).name == "chore" and detect(spine.parent).name == "chore"
    same_run(load(spine), chore_reference())


def test_chore_missing_value_tokens():
    run = load(next((CHORE / "missing_tokens").glob("*.spine")))
    reference = chore_reference()
    # line 9 (larva 512 at 3.921 s) has no time: dropped; the others keep their times
    kept = np.ones(reference.n_steps, bool)
    kept[8] = False
    np.testing.assert_array_equal(run.t, reference.t[kept])
    missing = np.isnan(run.spine).all(axis=(1, 2))
    assert np.flatnonzero(missing).tolist() == [1, 6]  # an 'NA' coordinate; a row of nan
    assert not np.isnan(run.spine[~missing]).any()
    assert np.isnan(run.outline[2]).all()  # '-nan' vertex: a hole, no outline for that step
    assert masked_counts(run) == {"missing": 3}
    assert run_summary(run) == "2 larvae, 9 steps, 3 missing steps masked"


def test_import_prints_and_records_what_was_masked(tmp_path):
    import json
    import shutil
    import subprocess
    import sys

    dish = tmp_path / "dish01_na"
    shutil.copytree(DATA / "schleyer" / "dish01_na", dish)
    result = subprocess.run([sys.executable, "-m", "taggingbackends.cli", "import", str(dish)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "2 larvae, 17 steps, 2 missing steps masked" in " ".join(result.stdout.split())
    provenance = json.loads((dish / "dish01_na.label").read_text())["metadata"]["provenance"]
    assert provenance["summary"] == "2 larvae, 17 steps, 2 missing steps masked"
    assert provenance["masked"] == {"missing": 2, "collision": 0}
