"""Fast fine-tuning (maggotuba.finetune) and training on sparse corrections (--train-on)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from taggingbackends.data.labels import Labels, TrackLabels  # noqa: E402

CLI = [sys.executable, "-m", "taggingbackends.cli"]
SIM_TO_DEFAULT = {"run": "run_large", "cast": "cast_large", "back": "back_large", "hunch": "hunch_large",
                  "roll": "roll_large", "stop": "stop_large", "small_motion": "small_motion"}
DEFAULT_LABELS = ["back_large", "cast_large", "hunch_large", "roll_large", "run_large", "stop_large",
                  "small_motion"]


def cli(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, cwd=cwd)


def _relabel(truth: Labels, tracking: Path, path: Path, edited_every: int | None = None) -> int:
    """Write ``path``: the ground truth in the default model's label names; with
    ``edited_every``, a 'partly corrected prediction': every step says run_large except
    every ``edited_every``-th step, which carries its true label and ``edited``.
    Returns the number of edited steps."""
    out = Labels(DEFAULT_LABELS, secondarylabels=["edited"], metadata={"id": truth.run_id},
                 tracking=[tracking])
    edited = 0
    for larva in truth:
        track = truth[larva]
        entries = []
        for i, name in enumerate(track.labels):
            if edited_every is None:
                entries.append(SIM_TO_DEFAULT[name])
            elif i % edited_every == 0:
                entries.append([SIM_TO_DEFAULT[name], "edited"])
                edited += 1
            else:
                entries.append("run_large")
        out.tracks[larva] = TrackLabels(track.t.copy(), entries)
    out.dump(path)
    return edited


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Two simulated trx.mat recordings: ``full/`` fully labelled in the default's
    names, ``sparse/`` a prediction with every 7th step corrected (edited)."""
    root = tmp_path_factory.mktemp("finetune")
    for seed, name in ((5, "full"), (6, "sparse")):
        result = cli("simulate", root / name, "-n", "6", "--duration", "25", "--seed", seed,
                     "--format", "trxmat", "--balanced")
        assert result.returncode == 0, result.stderr
        truth = Labels.load(root / name / "groundtruth.label")
        (root / name / "groundtruth.label").unlink()
        edited = _relabel(truth, root / name / "trx.mat", root / name / "labels.label",
                          edited_every=7 if name == "sparse" else None)
    return {"root": root, "edited": edited}


def _small_fast(**changes):
    from maggotuba.finetune import FastSettings

    return FastSettings(**{"head_iterations": 60, "joint_iterations": 10, "validate_every": 5,
                           "budget_seconds": None, **changes})


def test_fast_finetune_cli_end_to_end_then_predict(data, tmp_path):
    models = tmp_path / "models"
    result = cli("finetune", data["root"] / "full", "-m", "default", "-O", "fast", "--models-dir", models)
    assert result.returncode == 0, result.stderr
    config = json.loads((models / "fast" / "clf_config.json").read_text())
    assert config["finetune"]["mode"] == "fast" and config["labels"] == DEFAULT_LABELS
    log = json.loads((models / "fast" / "training_log.json").read_text())
    assert log["mode"] == "fast" and log["validation"] and 0 <= log["best_macro_f1"] <= 1
    assert config["training_data"]["samples"] > 500
    predicted = cli("predict", data["root"] / "full" / "trx.mat", "-m", models / "fast",
                    "--output", tmp_path / "p.label")
    assert predicted.returncode == 0, predicted.stderr
    labels = Labels.load(tmp_path / "p.label")
    assert labels.names[:len(DEFAULT_LABELS)] == DEFAULT_LABELS and labels.n_steps > 500
    # its temperature, fitted on its validation larvae, is what predict applied
    calibration = config["calibration"]
    assert 0.05 < calibration["temperature"] < 50 and calibration["n_fit_steps"] >= 200
    assert calibration["ece_after"] <= calibration["ece_before"] + 0.02   # NLL-fitted: ECE may move a little
    assert labels.metadata["provenance"]["calibration"]["temperature"] == calibration["temperature"]


def test_explicit_iterations_run_todays_training_exactly(data, tmp_path):
    models = tmp_path / "models"
    result = cli("finetune", data["root"] / "full", "-O", "exact", "--iterations", "3,2", "--models-dir", models)
    assert result.returncode == 0, result.stderr
    config = json.loads((models / "exact" / "clf_config.json").read_text())
    log = json.loads((models / "exact" / "training_log.json").read_text())
    assert config["iterations"] == [3, 2] and "finetune" not in config
    assert len(log["train_loss"]) == 5 and "mode" not in log
    conflict = cli("finetune", data["root"] / "full", "-O", "x", "--fast", "--iterations", "3,2",
                   "--models-dir", models)
    assert conflict.returncode == 2 and "--iterations" in conflict.stderr
    bad = cli("finetune", data["root"] / "full", "-O", "z", "--train-on", "some", "--models-dir", models)
    assert bad.returncode == 2 and "--train-on" in bad.stderr


def test_fast_finetune_is_deterministic(data, tmp_path):
    from maggotuba.backend import TrainOptions, resolve_model, train_instance

    outputs = []
    for name in ("one", "two"):
        options = TrainOptions(fast=_small_fast(), seed=4)
        result = train_instance([data["root"] / "full"], tmp_path / name, options,
                                start_from=resolve_model("default"))
        assert result["samples"] > 500
        outputs.append((tmp_path / name / "tagger.safetensors").read_bytes())
    assert outputs[0] == outputs[1]
    log = json.loads((tmp_path / "one" / "training_log.json").read_text())
    assert log["settings"]["head_iterations"] == 60
    assert len(log["train_loss"]) <= 70  # early stopping may end a stage sooner, never later
    other = train_instance([data["root"] / "full"], tmp_path / "three", TrainOptions(fast=_small_fast(), seed=5),
                           start_from=resolve_model("default"))
    assert other["samples"] == result["samples"]
    assert (tmp_path / "three" / "tagger.safetensors").read_bytes() != outputs[0]


def test_sparse_edits_train_on_edited_steps_only(data, tmp_path):
    from maggotuba.backend import resolve_model
    from maggotuba.dataset import build_dataset
    from maggotuba.instances import load_tagger

    base = load_tagger(resolve_model("default"))
    spec = base.spec
    sparse = data["root"] / "sparse" / "labels.label"
    everything = build_dataset([sparse], DEFAULT_LABELS, spec, train_on="all")
    edited = build_dataset([sparse], DEFAULT_LABELS, spec, train_on="edited")
    auto = build_dataset([sparse], DEFAULT_LABELS, spec, train_on="auto")
    # every step is labelled, only every 7th is a correction (some lack a full window)
    assert len(everything) > 5 * len(edited) and 0.7 * data["edited"] < len(edited) <= data["edited"]
    assert np.array_equal(auto.labels, edited.labels) and np.array_equal(auto.t, edited.t)
    assert edited.provenance["only_included_steps"] and not everything.provenance["only_included_steps"]
    # the uncorrected steps all said run_large; the corrections carry the other classes too
    assert len(np.unique(edited.labels)) >= 3
    # a fully labelled file (no edited step): auto uses every step, edited refuses
    full = data["root"] / "full" / "labels.label"
    assert len(build_dataset([full], DEFAULT_LABELS, spec, train_on="auto")) == \
        len(build_dataset([full], DEFAULT_LABELS, spec, train_on="all"))
    from taggingbackends.errors import TaggingError

    with pytest.raises(TaggingError, match="edited"):
        build_dataset([full], DEFAULT_LABELS, spec, train_on="edited")
    with pytest.raises(ValueError, match="train_on"):
        build_dataset([full], DEFAULT_LABELS, spec, train_on="most")


def test_finetune_cli_on_sparse_edits_counts_only_corrections(data, tmp_path):
    models = tmp_path / "models"
    result = cli("finetune", data["root"] / "sparse", "-O", "corrected", "--models-dir", models,
                 "--iterations", "2,0")
    assert result.returncode == 0, result.stderr
    samples = json.loads((models / "corrected" / "clf_config.json").read_text())["training_data"]["samples"]
    upstream = cli("finetune", data["root"] / "sparse", "-O", "all", "--models-dir", models,
                   "--iterations", "2,0", "--train-on", "all")
    assert upstream.returncode == 0, upstream.stderr
    all_samples = json.loads((models / "all" / "clf_config.json").read_text())["training_data"]["samples"]
    assert samples <= data["edited"] < all_samples / 5
