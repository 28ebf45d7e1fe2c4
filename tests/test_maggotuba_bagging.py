"""The bagging ensemble tagger (SPEC §6.2, 20221228): members on two window lengths,
one validation split, majority vote, persistence, prediction."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from maggotuba.features import CLAMPED, FULL, GAPPED  # noqa: E402
from maggotuba.models.autoencoder import Encoder, MaggotUBAConfig  # noqa: E402
from maggotuba.models.bagging import (  # noqa: E402
    KIND, BaggingConfig, BaggingTagger, VoteAccumulator, combine, ensemble_sha1, load_bagging,
    member_seed, save_bagging, train_bagging, validation_split,
)
from maggotuba.models.tagger import TaggerConfig  # noqa: E402
from maggotuba.predict import predict_ensemble, predict_run  # noqa: E402
from taggingbackends.cli import write_simulation  # noqa: E402
from taggingbackends.data.labels import Labels  # noqa: E402
from taggingbackends.errors import FormatError, TaggingError  # noqa: E402
from taggingbackends.simulate import SimulationConfig, simulate  # noqa: E402

LABELS = ["run", "cast", "stop"]
LENGTHS = (8, 14)
TINY = dict(latent=8, encoder_filters=(8, 8, 4, 4, 4, 4))


def bagging_config(**overrides) -> BaggingConfig:
    tagger = TaggerConfig(labels=LABELS, iterations=overrides.pop("iterations", (50, 100)), batch_size=64,
                          validate_every=25, seed=1)
    return BaggingConfig(tagger=tagger, **{"window_lengths": LENGTHS, "members_per_length": 2, **TINY,
                                           **overrides})


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("bagging-data")
    for seed in (1, 2, 3):
        write_simulation(simulate(SimulationConfig(n_larvae=4, duration=40.0, seed=seed)), root / f"s{seed}",
                         "trxmat")
    return root


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    ensemble, log = train_bagging(data, LABELS, bagging_config())
    directory = save_bagging(ensemble, tmp_path_factory.mktemp("models") / "bag", log)
    return ensemble, log, directory


@pytest.fixture(scope="module")
def run():
    return simulate(SimulationConfig(n_larvae=3, duration=15.0, seed=9)).run


# ------------------------------------------------------------------ training
def test_ensemble_learns_above_chance(trained):
    ensemble, log, _ = trained
    assert [m.window_length for m in ensemble.members] == [8, 8, 14, 14]
    assert log["best_macro_f1"] > 0.55            # three classes: chance is about 1/3
    assert len(log["member_macro_f1"]) == 4 and log["validation_anchors"] > 100
    assert np.asarray(log["validation_confusion"]).sum() == log["validation_anchors"]
    json.dumps(log)                               # plain JSON


def test_members_differ_by_seed_and_bootstrap(trained):
    ensemble, log, _ = trained
    seeds = [m.seed for m in ensemble.members]
    assert seeds == [member_seed(1, i, j) for i in range(2) for j in range(2)] and len(set(seeds)) == 4
    for member in ensemble.members:   # random encoders: fine-tuning only, at the full learning rate
        assert member.config.iterations == (0, 150) and member.config.finetune_learning_rate == 0.005
        assert member.encoder_origin.startswith("random") and member.config.post_processing == []
        assert member.bootstrap["samples"] > member.bootstrap["distinct_samples"]   # drawn with replacement
    first = ensemble.members[0].model.classifier[0].weight
    assert not torch.equal(first, ensemble.members[1].model.classifier[0].weight)


def test_one_validation_split_for_every_length(data):
    from maggotuba.dataset import build_dataset
    from maggotuba.features import WindowSpec

    datasets = [build_dataset(data, LABELS, WindowSpec(len_traj=n)) for n in LENGTHS]
    held_out = validation_split(datasets, 0.25, seed=1)
    assert 0 < len(held_out) < len(np.unique(datasets[0].groups))
    assert np.array_equal(held_out, validation_split(datasets, 0.25, seed=1))
    # the same larvae (file × track) are held out at both lengths
    for d in datasets:
        assert set(np.unique(d.groups[np.isin(d.groups, held_out)])) == set(held_out.tolist())


def test_training_is_deterministic(data):
    config = bagging_config(window_lengths=(8,), members_per_length=1, iterations=(5, 10))
    _, first = train_bagging(data, LABELS, config)
    ensemble, again = train_bagging(data, LABELS, config)
    assert again["member_macro_f1"] == first["member_macro_f1"]
    assert again["validation_confusion"] == first["validation_confusion"]


def test_given_and_self_pretrained_encoders(data):
    config = bagging_config(window_lengths=(8,), members_per_length=1, iterations=(5, 5))
    model_config = MaggotUBAConfig(len_traj=8, len_pred=0, dim_latent=8, enc_filters=[8, 8, 4, 4, 4, 4],
                                   target=["present"])
    torch.manual_seed(0)
    state = Encoder(model_config).state_dict()
    ensemble, _ = train_bagging(data, LABELS, config, pretrained={8: (state, model_config)})
    member = ensemble.members[0]
    assert member.config.iterations == (5, 5) and member.encoder_origin.startswith("pretrained")
    with pytest.raises(TaggingError, match="takes 8 points"):
        train_bagging(data, LABELS, dataclasses.replace(config, window_lengths=(10,)),
                      pretrained={10: (state, model_config)})
    pretrained_config = dataclasses.replace(config, pretrain_iterations=10, pretrain_windows=500)
    ensemble, log = train_bagging(data, LABELS, pretrained_config)
    assert ensemble.members[0].encoder_origin.startswith("self-pretrained")
    assert log["pretraining"]["8"]["iterations"] == 10


def test_config_is_checked():
    with pytest.raises(ValueError, match="duplicate"):
        bagging_config(window_lengths=(8, 8))
    with pytest.raises(ValueError, match="bootstrap"):
        bagging_config(bootstrap="magic")
    with pytest.raises(ValueError, match="member"):
        bagging_config(members_per_length=0)


# ------------------------------------------------------------------- voting
def test_majority_vote_and_tie_break():
    # 4 members, 4 steps, 3 classes
    a = np.array([[0.40, 0.35, 0.25], [0.50, 0.30, 0.20], [0.34, 0.33, 0.33], [0.2, 0.3, 0.5]])
    b = np.array([[0.40, 0.35, 0.25], [0.45, 0.40, 0.15], [0.34, 0.33, 0.33], [0.2, 0.5, 0.3]])
    c = np.array([[0.40, 0.35, 0.25], [0.10, 0.60, 0.30], [0.30, 0.40, 0.30], [0.6, 0.1, 0.3]])
    d = np.array([[0.00, 1.00, 0.00], [0.05, 0.90, 0.05], [0.30, 0.40, 0.30], [0.1, 0.2, 0.7]])
    classes, mean, _, _ = combine([a, b, c, d])
    np.testing.assert_allclose(mean, (a + b + c + d) / 4, rtol=1e-6)
    # step 0: 3 votes for 0 win although the mean favours 1;
    # step 1: 2-2 tie between 0 and 1, broken by the mean (1: 0.55 > 0: 0.275);
    # step 2: 2-2 tie, mean 0.32 vs 0.365 → 1; step 3: votes 2, 1, 0, 2 → 2
    assert classes.tolist() == [0, 1, 1, 2]
    assert mean.dtype == np.float32 and classes.dtype == np.int16
    # an exact tie on votes and mean goes to the lower class index
    even = np.array([[0.5, 0.5, 0.0]])
    assert combine([even[:, [0, 1, 2]], even[:, [1, 0, 2]]])[0].tolist() == [0]
    with pytest.raises(ValueError, match="shape"):
        VoteAccumulator(4, 3).add(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="no member"):
        combine([])


def test_quality_is_the_worst_and_skip_follows_any_clamped_member():
    probs = [np.full((4, 2), 0.5), np.full((4, 2), 0.5)]
    q1 = np.array([FULL, CLAMPED, FULL, GAPPED], dtype=np.int8)
    q2 = np.array([FULL, FULL, CLAMPED, CLAMPED], dtype=np.int8)
    _, _, quality, clamped = combine(probs, [q1, q2])
    assert quality.tolist() == [FULL, CLAMPED, CLAMPED, GAPPED]
    assert clamped.tolist() == [False, True, True, True]


# ------------------------------------------------------- saving and loading
def test_save_layout_and_round_trip(trained, run):
    ensemble, log, directory = trained
    document = json.loads((directory / "clf_config.json").read_text())
    assert document["kind"] == KIND and document["labels"] == LABELS and document["voting"] == "majority"
    assert document["members"] == ["members/00", "members/01", "members/02", "members/03"]
    assert document["member_window_lengths"] == [8, 8, 14, 14] and document["window_lengths"] == [8, 14]
    assert document["validation"]["best_macro_f1"] == log["best_macro_f1"]
    for name in document["members"]:
        member = json.loads((directory / name / "clf_config.json").read_text())
        assert member["kind"] == "maggotuba-dense" and member["post_processing"] == []

    saved = load_bagging(directory)
    assert isinstance(saved, BaggingTagger) and saved.model is None
    assert saved.config.labels == LABELS and saved.config.post_processing == ["abc_aac"]
    assert saved.member_window_lengths == [8, 8, 14, 14] and saved.spec.len_traj == 8
    assert saved.weights_sha1 == ensemble_sha1([m.weights_sha1 for m in saved.members])
    assert len(saved.weights_sha1) == 40 and saved.weights_sha1 == load_bagging(directory).weights_sha1

    loaded = predict_ensemble(saved, run, batch_size=100)
    in_memory = predict_ensemble(ensemble.as_tagger(), run, batch_size=100)
    assert np.array_equal(loaded.classes, in_memory.classes)
    assert np.array_equal(loaded.probabilities, in_memory.probabilities)


def test_prediction_is_deterministic_and_combines_members(trained, run):
    _, _, directory = trained
    saved = load_bagging(directory)
    prediction = predict_ensemble(saved, run, post_processing=[])
    assert prediction.labels == LABELS and prediction.classes.shape == (run.n_steps,)
    assert (prediction.classes >= 0).all() and prediction.timings["members"] == 4
    np.testing.assert_allclose(prediction.probabilities.sum(axis=1), 1.0, atol=1e-5)
    again = predict_ensemble(saved, run, post_processing=[], batch_size=37)
    assert np.array_equal(again.classes, prediction.classes)
    np.testing.assert_allclose(again.probabilities, prediction.probabilities, atol=1e-6)

    members = [predict_run(m, run, post_processing=[]) for m in saved.members]
    classes, mean, quality, clamped = combine([m.probabilities for m in members], [m.quality for m in members])
    assert np.array_equal(prediction.classes, classes)
    np.testing.assert_allclose(prediction.probabilities, mean, atol=1e-7)
    assert np.array_equal(prediction.quality, quality)
    # the 14-point members clamp more steps at track ends than the 8-point ones
    assert (members[2].quality == CLAMPED).sum() > (members[0].quality == CLAMPED).sum()
    skipped = predict_ensemble(saved, run, edges="skip", post_processing=[])
    assert np.array_equal(skipped.classes == -1, clamped)
    smoothed = predict_ensemble(saved, run)          # the ensemble's own abc_aac, applied once
    from maggotuba.predict import abc_to_aac

    assert np.array_equal(smoothed.classes, abc_to_aac(prediction.classes, run.offsets))
    with pytest.raises(ValueError, match="post-processing"):
        predict_ensemble(saved, run, post_processing=["magic"])


def test_broken_member_directory(trained, tmp_path):
    _, _, directory = trained
    copy = shutil.copytree(directory, tmp_path / "bag")
    (copy / "members" / "01" / "tagger.safetensors").unlink()
    with pytest.raises(FormatError, match="members/01") as err:
        load_bagging(copy)
    assert err.value.path == copy / "members" / "01"

    (copy / "members" / "01" / "tagger.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(FormatError, match="broken bagging member members/01: tagger.safetensors"):
        load_bagging(copy)

    shutil.rmtree(copy / "members" / "01")
    with pytest.raises(FormatError, match="members/01 is missing"):
        load_bagging(copy)

    document = json.loads((copy / "clf_config.json").read_text())
    document["members"], document["member_window_lengths"] = ["../elsewhere"], [8]
    (copy / "clf_config.json").write_text(json.dumps(document))
    with pytest.raises(FormatError, match="inside the model directory"):
        load_bagging(copy)
    (copy / "clf_config.json").write_text("{")
    with pytest.raises(FormatError, match="invalid JSON"):
        load_bagging(copy)


# ------------------------------------------- wiring (tagger, predict, backend, CLI)
def test_load_tagger_and_predict_run_dispatch(trained, run):
    from maggotuba.instances import load_tagger

    _, _, directory = trained
    saved = load_tagger(directory)
    assert isinstance(saved, BaggingTagger)
    assert np.array_equal(predict_run(saved, run).classes, predict_ensemble(saved, run).classes)


def tiny_pretrained_encoder(run, directory):
    """A tiny 8-point encoder directory (two pretraining iterations): fast members."""
    from maggotuba.features import WindowSpec
    from maggotuba.pretrain import PretrainConfig, pretrain, sample_windows, split_by_larva

    spec = WindowSpec(len_traj=8, len_pred=8)
    train, validation = split_by_larva(sample_windows([run], spec, 200), 0.3)
    pretrain(train, validation, MaggotUBAConfig(len_traj=8, len_pred=8, dim_latent=4, enc_filters=[4] * 6,
                                                dec_filters=[4] * 6), spec, directory, PretrainConfig(iterations=2))
    return directory


def test_backend_and_cli_train_a_bagging_tagger(data, run, tmp_path):
    from maggotuba import backend

    encoder = tiny_pretrained_encoder(run, tmp_path / "encoder")
    options = backend.TrainOptions(labels=LABELS, classifier="bagging", bag_window_lengths=(8, 14), bag_members=1,
                                   iterations=(3, 3))
    result = backend.train_instance([data], tmp_path / "bag", options, pretrained=encoder)
    assert result["labels"] == LABELS and 0 <= result["best_macro_f1"] <= 1
    document = json.loads((tmp_path / "bag" / "clf_config.json").read_text())
    assert document["kind"] == KIND and document["member_window_lengths"] == [8, 14]
    members = [json.loads((tmp_path / "bag" / name / "clf_config.json").read_text())
               for name in document["members"]]
    assert members[0]["encoder_origin"].startswith("pretrained") and members[0]["iterations"] == [3, 3]
    assert members[1]["encoder_origin"].startswith("random") and members[1]["iterations"] == [0, 6]
    with pytest.raises(TaggingError, match="none of the bagging window lengths"):
        backend.train_instance([data], tmp_path / "bag3", dataclasses.replace(options, bag_window_lengths=(10,)),
                               pretrained=encoder)
    with pytest.raises(TaggingError, match="fine-tuned"):
        backend.train_instance([data], tmp_path / "bag2", backend.TrainOptions(iterations=(1, 1)),
                               start_from=tmp_path / "bag")


    command = [sys.executable, "-m", "taggingbackends.cli"]
    trained = subprocess.run([*command, "train", str(data), "-m", "bagcli", "--classifier", "bagging",
                              "--bag-window-lengths", "8,14", "--bag-size", "1", "--iterations", "3,3",
                              "--labels", ",".join(LABELS), "--models-dir", str(tmp_path / "models"),
                              "--pretrained-model-instance", str(encoder)],
                             capture_output=True, text=True)
    assert trained.returncode == 0, trained.stderr
    predicted = subprocess.run([*command, "predict", str(data / "s1" / "trx.mat"), "-m",
                                str(tmp_path / "models" / "bagcli"), "--output", str(tmp_path / "p.label")],
                               capture_output=True, text=True)
    assert predicted.returncode == 0, predicted.stderr
    labels = Labels.load(tmp_path / "p.label")
    assert labels.names == LABELS
    saved = load_bagging(tmp_path / "models" / "bagcli")
    assert labels.metadata["provenance"]["model"]["weights_sha1"] == saved.weights_sha1
