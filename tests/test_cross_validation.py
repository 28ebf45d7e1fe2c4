"""K-fold cross-validation grouped by larva or file: folds, summaries, `train --cross-validate`."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("torch")

from maggotuba.cross_validation import fold_assignment, summarise  # noqa: E402
from taggingbackends.errors import TaggingError  # noqa: E402

CLI = [sys.executable, "-m", "taggingbackends.cli"]


def test_folds_keep_groups_whole_and_balanced():
    groups = np.repeat(np.arange(10), [50, 40, 30, 30, 20, 20, 10, 10, 5, 5])
    folds = fold_assignment(groups, 3, seed=1)
    for g in np.unique(groups):
        assert np.unique(folds[groups == g]).size == 1
    sizes = np.bincount(folds, minlength=3)
    assert set(np.unique(folds)) == {0, 1, 2} and sizes.max() - sizes.min() <= 10
    assert np.array_equal(folds, fold_assignment(groups, 3, seed=1))
    with pytest.raises(TaggingError, match="only 2 file group"):
        fold_assignment(np.array([0, 0, 1]), 3, what="file")
    with pytest.raises(TaggingError, match="at least 2 folds"):
        fold_assignment(groups, 1)


def test_summary_is_mean_and_sample_sd_over_defined_folds():
    folds = [{"per_class": {"a": {"precision": 1.0, "recall": 0.5, "f1": 0.6},
                            "b": {"precision": None, "recall": 0.0, "f1": 0.0}}, "macro_f1": 0.3, "accuracy": 0.8},
             {"per_class": {"a": {"precision": 0.5, "recall": 0.5, "f1": 0.4},
                            "b": {"precision": 0.2, "recall": 0.4, "f1": 0.2}}, "macro_f1": 0.3, "accuracy": 0.6}]
    summary = summarise(folds, ["a", "b"])
    assert summary["per_class"]["a"]["precision"] == pytest.approx({"mean": 0.75, "sd": np.std([1, .5], ddof=1),
                                                                    "folds": 2})
    assert summary["per_class"]["b"]["precision"] == {"mean": 0.2, "sd": 0.0, "folds": 1}
    assert summary["macro_f1"]["sd"] == 0.0 and summary["accuracy"]["mean"] == pytest.approx(0.7)


def test_train_cross_validate_writes_metrics_and_card(tmp_path):
    for seed in (1, 2):
        assert subprocess.run([*CLI, "simulate", str(tmp_path / "data" / f"s{seed}"), "-n", "4", "--duration", "20",
                               "--seed", str(seed), "--format", "trxmat", "--balanced"],
                              capture_output=True).returncode == 0
    result = subprocess.run([*CLI, "train", str(tmp_path / "data"), "-m", "cv", "--labels", "run,cast,stop",
                             "--iterations", "3,3", "--cross-validate", "3", "--models-dir", str(tmp_path / "models")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "cross-validation, 3 folds by larva: macro-F1" in result.stdout
    model = tmp_path / "models" / "cv"
    metrics = json.loads((model / "metrics.json").read_text())
    assert metrics["folds"] == 3 and metrics["group_by"] == "larva" and metrics["labels"] == ["run", "cast", "stop"]
    assert [f["fold"] for f in metrics["fold_results"]] == [1, 2, 3]
    assert sum(f["test_groups"] for f in metrics["fold_results"]) == 8   # every larva tested exactly once
    f1 = metrics["per_class"]["run"]["f1"]
    values = [f["per_class"]["run"]["f1"] for f in metrics["fold_results"]]
    assert f1["mean"] == pytest.approx(np.mean(values)) and f1["sd"] == pytest.approx(np.std(values, ddof=1))
    card = (model / "model_card.md").read_text()
    assert "## Cross-validation" in card and "3 folds grouped by larva" in card
    by_file = subprocess.run([*CLI, "train", str(tmp_path / "data"), "-m", "cv2", "--labels", "run,cast",
                              "--iterations", "1,1", "--cross-validate", "3", "--group-by", "file",
                              "--models-dir", str(tmp_path / "models")], capture_output=True, text=True)
    assert by_file.returncode == 1 and "only 2 file group(s)" in by_file.stderr
    assert not (tmp_path / "models" / "cv2").exists()
    bad = subprocess.run([*CLI, "train", str(tmp_path / "data"), "-m", "cv3", "--cross-validate", "1",
                          "--models-dir", str(tmp_path / "models")], capture_output=True, text=True)
    assert bad.returncode == 2
