"""The whole user path on real recordings: the Schleyer-lab tracks in ``../shared/data``
(beside the checkout, as CI lays it out). Predict (files with `na` rows among them), then
review, report and export what was predicted; every command must succeed and agree on the
number of steps. Skipped, with the reason shown, where the shared data are not there."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from taggingbackends.data.labels import Labels

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "schleyer"
FILES = ("9.csv", "48.csv", "17.csv")   # 9 and 48 hold untracked frames written as `na` rows

pytestmark = pytest.mark.skipif(not all((SHARED / f).is_file() for f in FILES),
                                reason=f"the shared real tracks are not at {SHARED}")


def cli(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "taggingbackends.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd)


@pytest.fixture(scope="module")
def dish(tmp_path_factory) -> Path:
    """Three real larvae of one dish (a Schleyer run is a directory of per-larva CSV files)."""
    dish = tmp_path_factory.mktemp("real") / "dish01"
    dish.mkdir()
    for name in FILES:
        shutil.copy(SHARED / name, dish / name)
    return dish


def test_predict_review_report_export_on_real_tracks(dish, tmp_path):
    predicted = tmp_path / "dish01.label"
    result = cli("predict", dish, "-o", predicted)
    assert result.returncode == 0, result.stderr
    said = " ".join(result.stdout.split())   # (rich wraps long lines)
    assert "3 larvae" in said and "2 missing" in said and "collision steps masked" in said
    labels = Labels.load(predicted)
    n_labelled = sum(len(track) for track in labels.tracks.values())
    assert n_labelled > 3000
    assert "masked" in labels.metadata["provenance"]

    review = cli("review", predicted, "--top", "5")
    assert review.returncode == 0, review.stderr
    assert (tmp_path / "dish01.review.label").is_file()

    report = cli("report", predicted, "-o", tmp_path / "report.html")
    assert report.returncode == 0, report.stderr
    assert (tmp_path / "report.html").read_text().count("data:image/png;base64,") >= 4

    steps = cli("export", predicted, "--to", "parquet", "--table", "steps", "-o", tmp_path / "steps.parquet")
    assert steps.returncode == 0, steps.stderr
    table = pq.read_table(tmp_path / "steps.parquet")
    assert table.num_rows == n_labelled
    assert any(name.startswith("p_") for name in table.column_names)   # probabilities from the sidecar
