"""Evaluation of predicted labels against true ones: hand-built files, known answers."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from taggingbackends.data.labels import Labels, TrackLabels
from taggingbackends.errors import TaggingError
from taggingbackends.evaluation import (
    LabelledRun, evaluate, evaluate_files, label_files, pair_runs, parse_label_map, to_csv, to_json,
    weakest_first,
)

DT = 0.1


def run(run_id, tracks, names=("run", "cast", "hunch")):
    """A Labels run from ``{larva: [entries]}`` on a 10 Hz clock (or ``(t, entries)``)."""
    labels = Labels(list(names), metadata={"id": run_id})
    for larva, value in tracks.items():
        t, entries = value if isinstance(value, tuple) else (np.arange(len(value)) * DT, value)
        labels.tracks[larva] = TrackLabels(t, entries)
    return labels


def score(pred_tracks, true_tracks, **kwargs):
    pairs = [(LabelledRun(run("r1", pred_tracks), "pred.label"), LabelledRun(run("r1", true_tracks), "true.label"))]
    return evaluate(pairs, **kwargs)


def test_exact_step_metrics():
    truth = {1: ["run"] * 6 + ["cast"] * 4}
    pred = {1: ["run"] * 5 + ["cast"] * 3 + ["run"] * 2}
    result = score(pred, truth)
    assert result["labels"] == ["run", "cast"]
    # run: tp 5, predicted 7, support 6; cast: tp 2, predicted 3, support 4
    run_s, cast_s = result["per_class"]["run"], result["per_class"]["cast"]
    assert run_s["precision"] == pytest.approx(5 / 7) and run_s["recall"] == pytest.approx(5 / 6)
    assert run_s["f1"] == pytest.approx(10 / 13) and run_s["support"] == 6
    assert cast_s["precision"] == pytest.approx(2 / 3) and cast_s["recall"] == pytest.approx(0.5)
    assert cast_s["f1"] == pytest.approx(4 / 7)
    assert result["accuracy"] == pytest.approx(0.7)
    assert result["macro"]["f1"] == pytest.approx((10 / 13 + 4 / 7) / 2)
    assert result["macro"]["precision"] == pytest.approx((5 / 7 + 2 / 3) / 2)
    assert result["weighted"]["recall"] == pytest.approx(0.7)  # weighted recall = accuracy
    assert result["weighted"]["f1"] == pytest.approx((6 * 10 / 13 + 4 * 4 / 7) / 10)
    assert result["confusion"]["counts"] == [[5, 1], [2, 2]]
    assert np.allclose(result["confusion"]["normalised"], [[5 / 6, 1 / 6], [0.5, 0.5]])
    assert weakest_first(result) == ["cast", "run"]


def test_class_never_predicted_and_class_absent_from_truth():
    result = score({1: ["run"] * 4 + ["hunch"] * 2}, {1: ["run"] * 4 + ["cast"] * 2})
    cast, hunch = result["per_class"]["cast"], result["per_class"]["hunch"]
    assert cast["precision"] is None and cast["recall"] == 0.0 and cast["f1"] == 0.0
    assert hunch["recall"] is None and hunch["precision"] == 0.0 and hunch["support"] == 0
    # macro over classes present in the truth: run (1, 1, 1) and cast (0 → 0, 0, 0)
    assert result["macro"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5})
    json.loads(to_json(result))  # None → null, no NaN


def test_coverage_counts_unpredicted_and_unlabelled_apart():
    truth = {1: ["run", "run", [], "cast", "cast"], 2: ["run", "run"]}
    pred = {1: (np.array([0.0, 0.1, 0.2, 0.3]), ["run", [], "run", "cast"])}  # step 0.4 missing, larva 2 absent
    result = score(pred, truth)
    steps = result["steps"]
    assert steps["truth"] == 7
    assert steps["unlabelled_truth"] == 1
    assert steps["unpredicted"] == 4          # [] at 0.1, missing 0.4, larva 2's two steps
    assert steps["compared"] == 2 and steps["matched"] == 4
    assert steps["compared"] + steps["unpredicted"] + steps["unlabelled_truth"] == steps["truth"]
    assert result["per_class"]["run"]["unpredicted"] == 3
    assert result["per_class"]["cast"]["unpredicted"] == 1


def test_times_match_within_half_a_frame_only():
    truth = {1: ["run", "cast", "cast"]}
    shifted = (np.array([0.04, 0.14, 0.26]), ["run", "cast", "cast"])  # the last one is 0.06 off
    result = score({1: shifted}, truth)
    assert result["steps"]["compared"] == 2 and result["steps"]["unpredicted"] == 1
    assert result["accuracy"] == 1.0


def test_predicted_steps_without_truth_are_reported():
    result = score({1: ["run"] * 3, 7: ["cast"] * 2}, {1: ["run"] * 3})
    assert result["steps"]["predicted_unmatched"] == 2


def test_bout_matching_needs_half_the_true_bout():
    # true cast bout: steps 4..7 (0.4 s); predicted cast 6..9 overlaps 0.2 s = half → found
    truth = {1: ["run"] * 4 + ["cast"] * 4 + ["run"] * 4}
    pred = {1: ["run"] * 6 + ["cast"] * 4 + ["run"] * 2}
    bouts = score(pred, truth)["bouts"]["per_class"]
    assert bouts["cast"]["found"] == 1 and bouts["cast"]["recall"] == 1.0
    assert bouts["cast"]["onset_error_s"] == pytest.approx(0.2)
    assert bouts["cast"]["offset_error_s"] == pytest.approx(0.2)
    # predicted cast 0.4 s overlaps the true one by 0.2 s: half its own duration → correct
    assert bouts["cast"]["precision"] == 1.0
    # one step less of overlap: not found, and the predicted bout is wrong
    pred = {1: ["run"] * 7 + ["cast"] * 4 + ["run"]}
    bouts = score(pred, truth)["bouts"]["per_class"]
    assert bouts["cast"]["found"] == 0 and bouts["cast"]["recall"] == 0.0
    assert bouts["cast"]["precision"] == 0.0 and bouts["cast"]["onset_error_s"] is None
    # run: true bouts 0..3 and 8..11; predicted run 0..6 covers the first, 11 covers a quarter of the second
    assert bouts["run"]["true"] == 2 and bouts["run"]["found"] == 1


def test_bout_of_other_label_does_not_count_and_unlabelled_time_is_not_judged():
    truth = {1: ["run"] * 4 + [[]] * 4}
    pred = {1: ["cast"] * 4 + ["hunch"] * 4}
    result = score(pred, truth)
    bouts = result["bouts"]
    assert result["labels"] == ["run", "cast", "hunch"]  # hunch predicted over unlabelled steps
    assert result["per_class"]["hunch"]["support"] == 0 and result["per_class"]["hunch"]["precision"] is None
    assert bouts["per_class"]["run"]["found"] == 0
    assert bouts["per_class"]["cast"]["predicted"] == 1 and bouts["per_class"]["cast"]["correct"] == 0
    assert bouts["per_class"]["hunch"]["predicted"] == 0  # over unlabelled truth only
    assert bouts["macro"] == {"precision": 0.0, "recall": 0.0}


def test_label_map_renames_truth():
    assert parse_label_map("a=b, c=d") == {"a": "b", "c": "d"}
    assert parse_label_map("simulator")["run"] == "run_large"
    with pytest.raises(TaggingError, match="OLD=NEW"):
        parse_label_map("run")
    result = score({1: ["run_large"] * 3}, {1: ["run"] * 3}, label_map={"run": "run_large"})
    assert result["labels"] == ["run_large"] and result["accuracy"] == 1.0


def write(labels, path):
    labels.dump(path, encode=False)
    return path


def test_files_pair_by_run_and_mismatched_runs_are_errors(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    p1 = write(run("r1", {1: ["run", "cast"]}), tmp_path / "a" / "predicted.label")
    p2 = write(run("r2", {1: ["run", "run"]}), tmp_path / "b" / "predicted.label")
    t2 = write(run("r2", {1: ["run", "cast"]}), tmp_path / "b" / "groundtruth.label")
    t1 = write(run("r1", {1: ["run", "cast"]}), tmp_path / "a" / "groundtruth.label")
    result = evaluate_files([p1, p2], [t2, t1])
    assert [f["run"] for f in result["files"]] == ["r1", "r2"]
    assert result["accuracy"] == pytest.approx(0.75)
    with pytest.raises(TaggingError, match=r"no true labels for .*b/predicted.label \(run r2\)"):
        evaluate_files([p1, p2], [t1])
    with pytest.raises(TaggingError, match="no predicted labels"):
        evaluate_files([p1], [t1, t2])
    with pytest.raises(TaggingError, match="two predicted files"):
        pair_runs([LabelledRun(run("r1", {}), p) for p in (p1, p2)], [LabelledRun(run("r1", {}), t1)])
    with pytest.raises(TaggingError, match="share no label name.*--map"):
        evaluate_files([write(run("r1", {1: ["x", "x"]}, names=["x"]), tmp_path / "x.label")], [t1])
    assert label_files([tmp_path], "groundtruth*.label") == [t1, t2]
    with pytest.raises(TaggingError, match="no such file"):
        label_files([tmp_path / "nope"])


def test_json_and_csv_outputs(tmp_path):
    result = score({1: ["run"] * 5 + ["cast"] * 3 + ["run"] * 2}, {1: ["run"] * 6 + ["cast"] * 4})
    to_json(result, tmp_path / "e.json")
    assert json.loads((tmp_path / "e.json").read_text())["confusion"]["counts"] == [[5, 1], [2, 2]]
    to_csv(result, tmp_path / "e.csv")
    rows = list(csv.DictReader((tmp_path / "e.csv").open()))
    assert [r["label"] for r in rows] == ["run", "cast"]
    assert float(rows[1]["recall"]) == pytest.approx(0.5) and rows[1]["support"] == "4"


# ------------------------------------------------------------ command line
def cli(*args):
    return subprocess.run([sys.executable, "-m", "taggingbackends.cli", *map(str, args)],
                          capture_output=True, text=True)


def test_cli_files_json_csv_and_guards(tmp_path):
    pred = write(run("r1", {1: ["run"] * 5 + ["cast"] * 3 + ["run"] * 2}), tmp_path / "predicted.label")
    true = write(run("r1", {1: ["run"] * 6 + ["cast"] * 4}), tmp_path / "groundtruth.label")
    out = cli("evaluate", tmp_path, "--truth", tmp_path, "--truth-glob", "groundtruth.label",
              "--json", tmp_path / "e.json", "--csv", tmp_path / "e.csv")
    assert out.returncode == 0, out.stderr
    assert "cast" in out.stdout and "weakest first" in out.stdout
    saved = json.loads((tmp_path / "e.json").read_text())
    expected = evaluate_files([pred], [true])
    assert {k: v for k, v in saved.items() if k not in ("provenance", "files")} == \
        {k: v for k, v in expected.items() if k not in ("provenance", "files")}
    assert saved["provenance"]["command"] == "evaluate"
    assert (tmp_path / "e.csv").read_text().startswith("label,precision,recall,f1")
    again = cli("evaluate", pred, "--truth", true, "--json", tmp_path / "e.json")
    assert again.returncode == 1 and "already exists" in again.stderr
    (tmp_path / "other").mkdir()
    other = write(run("r9", {1: ["run"]}), tmp_path / "other" / "groundtruth.label")
    mismatch = cli("evaluate", pred, "--truth", other)
    assert mismatch.returncode == 1
    assert mismatch.stderr.count("\n") == 1 and "no true labels for" in mismatch.stderr
    assert cli("evaluate", pred).returncode == 2  # --truth is needed


def test_cli_model_instance_predicts_then_compares(tmp_path):
    pytest.importorskip("torch")
    data = tmp_path / "sim"
    assert cli("simulate", data, "-n", "3", "--duration", "20", "--format", "trxmat", "--seed", "5").returncode == 0
    out = cli("evaluate", "--model-instance", "default", data / "groundtruth.label", "--map", "simulator",
              "--json", tmp_path / "e.json")
    assert out.returncode == 0, out.stderr
    result = json.loads((tmp_path / "e.json").read_text())
    truth = Labels.load(data / "groundtruth.label", verify=False)
    assert result["steps"]["truth"] == truth.n_steps == result["steps"]["compared"]
    assert result["label_map"]["run"] == "run_large" and result["accuracy"] > 0.8
    assert result["provenance"]["model_instance"] == "default"
    unmapped = cli("evaluate", "--model-instance", "default", data / "groundtruth.label")
    assert unmapped.returncode == 1 and "--map simulator" in unmapped.stderr
