"""End-to-end: predict with the shipped default, train, finetune and pretrain from the CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from taggingbackends.data.labels import Labels  # noqa: E402

CLI = [sys.executable, "-m", "taggingbackends.cli"]
SIM_TO_DEFAULT = {"run": "run_large", "cast": "cast_large", "back": "back_large", "hunch": "hunch_large",
                  "roll": "roll_large", "stop": "stop_large", "small_motion": "small_motion"}


def cli(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, cwd=cwd)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    for seed, name in ((1, "a"), (2, "b")):
        result = cli("simulate", root / name, "-n", "6", "--duration", "25", "--seed", seed,
                     "--format", "trxmat", "--balanced")
        assert result.returncode == 0, result.stderr
    return root


@pytest.fixture
def work(demo, tmp_path):
    """A copy of the simulated data to predict into (the originals stay pristine for training:
    several label files beside one tracking file make discovery keep only the last one)."""
    shutil.copytree(demo, tmp_path / "copy")
    return tmp_path / "copy"


def test_predict_with_the_shipped_default(work):
    demo = work
    result = cli("predict", demo / "a" / "trx.mat", "--decode")
    assert result.returncode == 0, result.stderr
    predicted = Labels.load(demo / "a" / "predicted.label")
    truth = Labels.load(demo / "a" / "groundtruth.label")
    assert predicted.n_steps == truth.n_steps  # every step of every larva
    agree = [SIM_TO_DEFAULT[t] == p for larva in truth
             for t, p in zip(truth[larva].labels, predicted[larva].labels)]
    assert np.mean(agree) > 0.8
    assert (demo / "a" / "predicted.probabilities.h5").exists()
    provenance = predicted.metadata["provenance"]
    assert provenance["model"]["instance"] == "default" and len(provenance["model"]["weights_sha1"]) == 40
    assert predicted.dependencies[0]["filename"] == "trx.mat"
    # the same command again: the output is up to date (same input, model, options), kept as is
    written = (demo / "a" / "predicted.label").stat().st_mtime_ns
    again = cli("predict", demo / "a" / "trx.mat", "--decode")
    assert again.returncode == 0 and "skipped" in again.stdout and "up to date" in again.stdout
    assert (demo / "a" / "predicted.label").stat().st_mtime_ns == written
    # other options: the stale prediction is redone, and says why; deterministic when replaced
    other = cli("predict", demo / "a" / "trx.mat", "--decode", "--edges", "skip")
    assert other.returncode == 0 and "redone: the options changed (edges)" in " ".join(other.stdout.split())
    first = [predicted[larva].labels for larva in predicted]
    assert cli("predict", demo / "a" / "trx.mat", "--decode", "--overwrite").returncode == 0
    assert [Labels.load(demo / "a" / "predicted.label")[larva].labels for larva in predicted] == first


def test_predict_output_template_and_collisions(work, tmp_path):
    demo = work
    both = cli("predict", demo / "a" / "trx.mat", demo / "b" / "trx.mat", "--output", str(tmp_path / "x.label"))
    assert both.returncode == 1 and "would both be written" in both.stderr
    assert not (tmp_path / "x.label").exists()
    ok = cli("predict", demo / "a" / "trx.mat", demo / "b" / "trx.mat",
             "--output", "{dir}/{stem}-{model}.label", "--edges", "skip")
    assert ok.returncode == 0, ok.stderr
    assert (demo / "a" / "trx-default.label").exists() and (demo / "b" / "trx-default.label").exists()


def test_edited_labels_need_an_explicit_flag(demo, tmp_path):
    labels = Labels.load(demo / "b" / "groundtruth.label")
    labels.append_label("edited")
    target = tmp_path / "edited.label"
    labels.tracking = [demo / "b" / "trx.mat"]
    labels.dump(target)
    refused = cli("predict", demo / "b" / "trx.mat", "--output", str(target), "--overwrite")
    assert refused.returncode == 1 and "--overwrite-edited" in refused.stderr


def test_train_then_finetune_then_predict(demo, tmp_path):
    result = cli("train", demo, "--model-instance", "mine", "--iterations", "20,20", "--labels",
                 "run,cast,stop,small_motion", "--models-dir", tmp_path / "models", "--seed", "3")
    assert result.returncode == 0, result.stderr
    config = json.loads((tmp_path / "models" / "mine" / "clf_config.json").read_text())
    assert config["labels"] == ["run", "cast", "stop", "small_motion"] and config["iterations"] == [20, 20]
    tuned = cli("finetune", demo, "--model-instance", tmp_path / "models" / "mine", "--output-instance",
                "mine2", "--iterations", "0,10", "--models-dir", tmp_path / "models")
    assert tuned.returncode == 0, tuned.stderr
    predicted = cli("predict", demo / "b" / "trx.mat", "-m", tmp_path / "models" / "mine2",
                    "--output", str(tmp_path / "p.label"))
    assert predicted.returncode == 0, predicted.stderr
    assert Labels.load(tmp_path / "p.label").names == ["run", "cast", "stop", "small_motion"]
    exists = cli("train", demo, "--model-instance", "mine", "--models-dir", tmp_path / "models")
    assert exists.returncode == 1 and "already exists" in exists.stderr


def test_train_rejects_bad_options(demo, tmp_path):
    bad = cli("train", demo, "-m", "x", "--balancing-strategy", "magic", "--models-dir", tmp_path)
    assert bad.returncode == 2
    weights = cli("train", demo, "-m", "y", "--labels", "run,cast", "--class-weights", "1,2,3",
                  "--iterations", "1,1", "--models-dir", tmp_path)
    assert weights.returncode == 1 and "class weights" in weights.stderr


def test_pretrain_small(demo, tmp_path):
    result = cli("pretrain", demo / "a" / "trx.mat", "--model-instance", tmp_path / "enc", "--iterations", "5",
                 "--windows", "300", "--window-length", "10", "--latent-dim", "4")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "enc" / "best_validated_encoder.safetensors").exists()
    trained = cli("train", demo, "-m", "from-mine", "--pretrained-model-instance", tmp_path / "enc",
                  "--iterations", "5,5", "--labels", "run,cast", "--models-dir", tmp_path / "models")
    assert trained.returncode == 0, trained.stderr


def test_train_from_published_maggotuba_encoder(demo, tmp_path):
    published = Path(__file__).parent / "data" / "maggotuba_published"
    result = cli("train", demo, "-m", "from-published", "--pretrained-model-instance", published,
                 "--iterations", "5,0", "--labels", "run,cast", "--models-dir", tmp_path)
    assert result.returncode == 0, result.stderr


def test_random_forest_tagger_from_the_cli(demo, tmp_path):
    result = cli("train", demo, "-m", "forest", "--classifier", "randomforest", "--n-estimators", "10",
                 "--max-depth", "8", "--labels", "run,cast,stop", "--models-dir", tmp_path / "models")
    assert result.returncode == 0, result.stderr
    config = json.loads((tmp_path / "models" / "forest" / "clf_config.json").read_text())
    assert config["kind"] == "maggotuba-randomforest"
    predicted = cli("predict", demo / "a" / "trx.mat", "-m", tmp_path / "models" / "forest",
                    "--output", str(tmp_path / "forest.label"))
    assert predicted.returncode == 0, predicted.stderr
    assert Labels.load(tmp_path / "forest.label").names == ["run", "cast", "stop"]
    refused = cli("finetune", demo, "-m", tmp_path / "models" / "forest", "-O", "f2",
                  "--models-dir", tmp_path / "models")
    assert refused.returncode == 1 and "only dense taggers" in refused.stderr


def test_train_from_a_saved_larva_dataset(demo, tmp_path):
    first = cli("train", demo, "-m", "one", "--labels", "run,cast", "--iterations", "2,2",
                "--write-dataset", tmp_path / "sets", "--models-dir", tmp_path / "models")
    assert first.returncode == 0, first.stderr
    (dataset,) = (tmp_path / "sets").glob("larva_dataset_*_20_0_*.hdf5")
    again = cli("train", dataset, "-m", "two", "--iterations", "2,2", "--models-dir", tmp_path / "models")
    assert again.returncode == 0, again.stderr
    config = json.loads((tmp_path / "models" / "two" / "clf_config.json").read_text())
    assert config["labels"] == ["run", "cast"]
    wrong = cli("train", dataset, "-m", "three", "--labels", "run,stop", "--models-dir", tmp_path / "models")
    assert wrong.returncode == 1 and "differ" in wrong.stderr


def test_backend_project_mode_as_upstream(demo, tmp_path):
    raw = tmp_path / "data" / "raw" / "default" / "20230101_120000"
    raw.mkdir(parents=True)
    shutil.copy(demo / "a" / "trx.mat", raw / "trx.mat")
    result = cli("predict", "--model-instance", "default", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "data" / "processed" / "default" / "20230101_120000" / "predicted.label"
    labels = Labels.load(out)  # its dependency (the raw trx.mat) resolves and verifies
    assert labels.n_steps == Labels.load(demo / "a" / "groundtruth.label").n_steps


def test_predict_a_list_of_files(work):
    """`larvatagger predict files.txt`: a .txt list of inputs, relative to the list's folder."""
    (work / "files.txt").write_text("# two runs\na/trx.mat\n\nb\n", encoding="utf-8")
    result = cli("predict", work / "files.txt")
    assert result.returncode == 0, result.stderr
    assert (work / "a" / "predicted.label").is_file() and (work / "b" / "predicted.label").is_file()

    (work / "bad.txt").write_text("a/trx.mat\nmissing/trx.mat\n", encoding="utf-8")
    bad = cli("predict", work / "bad.txt", "--overwrite")
    assert bad.returncode == 1 and "bad.txt: line 2: missing/trx.mat: no such file" in bad.stderr
    (work / "empty.txt").write_text("# nothing\n", encoding="utf-8")
    empty = cli("predict", work / "empty.txt")
    assert empty.returncode == 1 and "empty list" in empty.stderr
    (work / "binary.txt").write_bytes(b"\xff\xfe\x00")
    binary = cli("predict", work / "binary.txt")
    assert binary.returncode == 1 and binary.stderr.count("\n") == 1


def fimtrack_table(demo: Path, directory: Path) -> Path:
    """Larvae of demo/a as a FIMTrack table filmed at 10 fps (FIMTrack files do not say)."""
    import dataclasses

    from taggingbackends.formats import load
    from taggingbackends.formats.fimtrack import write_fimtrack

    run = load(demo / "a" / "trx.mat")
    run = dataclasses.replace(run, t=np.concatenate([np.arange(n) * 0.1 for n in run.lengths]), source=())
    table = directory / "table.csv"
    write_fimtrack(run, table, framerate=10)
    return table


def test_predict_with_reader_options(demo, tmp_path):
    table = fimtrack_table(demo, tmp_path)
    given = cli("predict", "--framerate", "10", table)
    assert given.returncode == 0, given.stderr
    assert "warning" not in given.stderr
    assert "(6 larvae, 1,528 steps;" in " ".join(given.stdout.split())  # (rich wraps lines)
    labels = Labels.load(tmp_path / "predicted.label", verify=False)
    first = labels[next(iter(labels))].t
    np.testing.assert_allclose(np.diff(first), 0.1, atol=1e-3)
    provenance = labels.metadata["provenance"]
    assert provenance["reader"] == {"framerate": 10.0}
    assert provenance["summary"].startswith("6 larvae, ") and provenance["masked"] == {"missing": 0}
    # not given: one warning line naming the assumed rate; the times are those of 30 fps
    assumed = cli("predict", table, "-o", "{dir}/assumed.label", "--format", "fimtrack")
    assert assumed.returncode == 0, assumed.stderr
    assert assumed.stderr.count("warning:") == 1
    warning = " ".join(assumed.stderr.split())  # (rich wraps lines)
    assert "table.csv: FIMTrack tables do not state their frame rate; assuming 30 fps" in warning
    first = Labels.load(tmp_path / "assumed.label", verify=False)
    np.testing.assert_allclose(np.diff(first[next(iter(first))].t), 1 / 30, atol=1e-3)
    bad = cli("predict", table, "--framerate", "-3", "-o", "{dir}/bad.label")
    assert bad.returncode == 2 and not (tmp_path / "bad.label").exists()


def test_pretrain_takes_reader_options(demo, tmp_path):
    table = fimtrack_table(demo, tmp_path)
    result = cli("pretrain", table, "--framerate", "10", "--model-instance", tmp_path / "enc",
                 "--iterations", "2", "--windows", "100", "--window-length", "10", "--latent-dim", "4")
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr
