"""The random-forest tagger (SPEC §6.2, 20220418): training on frozen-encoder latents,
pickle-free persistence (safetensors arrays), parity with scikit-learn, prediction."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from sklearn.ensemble import RandomForestClassifier

from maggotuba.features import FULL, WindowSpec, make_windows
from maggotuba.models.autoencoder import Encoder, MaggotUBAConfig
from maggotuba.models.randomforest import (
    ENCODER_FILE,
    FOREST_FILE,
    KIND,
    ForestArrays,
    RandomForestTagger,
    embed_windows,
    load_random_forest,
    save_random_forest,
    train_random_forest,
)
from maggotuba.instances import load_tagger
from maggotuba.models.tagger import TaggerConfig, TrainingData
from maggotuba.predict import predict_run
from taggingbackends.errors import FormatError
from taggingbackends.simulate import BEHAVIOURS, SimulationConfig, simulate

SPEC = WindowSpec(len_traj=10, frame_interval=0.1)
MODEL = MaggotUBAConfig(len_traj=10, len_pred=0, dim_latent=8, enc_filters=[8, 8, 4, 4, 4, 4],
                        target=["present"])
LABELS = ["run", "cast", "stop"]
N_TREES = 30


def training_data(seed: int) -> TrainingData:
    result = simulate(SimulationConfig(n_larvae=6, duration=40.0, seed=seed))
    mapping = np.array([LABELS.index(b) if b in LABELS else -1 for b in BEHAVIOURS])
    classes = mapping[result.behaviour]
    windows = make_windows(result.run, SPEC)
    keep = (windows.quality == FULL) & (classes >= 0)
    return TrainingData(windows.data[keep], classes[keep].astype(np.int64),
                        result.run.track_index[keep] + 100 * seed)


def balanced_weights(labels: np.ndarray, n: int) -> np.ndarray:
    counts = np.bincount(labels, minlength=n)
    inverse = 1 / np.maximum(counts, 1)
    return inverse / inverse.sum() * n


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    encoder = Encoder(MODEL)
    config = TaggerConfig(labels=LABELS, seed=3, post_processing=[])
    train, validation = training_data(1), training_data(2)
    weights = balanced_weights(train.labels, 3)
    return train, validation, encoder.state_dict(), config, weights


@pytest.fixture(scope="module")
def trained(setup, tmp_path_factory):
    train, validation, state, config, weights = setup
    tagger, log = train_random_forest(train, validation, state, MODEL, SPEC, config, weights,
                                      n_estimators=N_TREES)
    directory = save_random_forest(tagger, config, MODEL, SPEC,
                                   tmp_path_factory.mktemp("models") / "forest", log)
    return tagger, log, directory


def copy_instance(directory, target):
    target.mkdir()
    for path in directory.iterdir():
        (target / path.name).write_bytes(path.read_bytes())
    return target


# ------------------------------------------------------------------ training
def test_training_learns_above_chance(trained, setup):
    tagger, log, _ = trained
    assert log["best_macro_f1"] == log["validation_macro_f1"] > 0.5   # chance is about 1/3
    assert log["n_estimators"] == N_TREES and log["seed"] == 3 and log["kind"] == KIND
    assert np.asarray(log["validation_confusion"]).sum() == len(setup[1])
    json.dumps(log)                                    # the log is plain JSON
    assert tagger.forest.n_trees == N_TREES and tagger.forest.n_features == MODEL.dim_latent


def test_encoder_stays_frozen(trained, setup):
    tagger, _, _ = trained
    for key, value in tagger.encoder.state_dict().items():
        assert torch.equal(value, setup[2][key]), key


def test_training_is_deterministic(trained, setup):
    train, validation, state, config, weights = setup
    tagger, log, _ = trained
    again, log2 = train_random_forest(train, validation, state, MODEL, SPEC, config, weights,
                                      n_estimators=N_TREES, n_jobs=2)
    assert again.forest.equals(tagger.forest)
    assert log2["validation_confusion"] == log["validation_confusion"]
    other, _ = train_random_forest(train, validation, state, MODEL, SPEC, config, weights,
                                   n_estimators=N_TREES, seed=4)
    assert not other.forest.equals(tagger.forest)


def test_classifier_gives_forest_probabilities_as_logits(trained, setup):
    tagger, _, _ = trained
    latents = embed_windows(tagger.encoder, setup[1].windows[:300])
    expected = tagger.estimator.predict_proba(latents)          # columns = classes_ = [0, 1, 2]
    assert list(tagger.estimator.classes_) == [0, 1, 2]
    classifier = tagger.classifier.to("cpu").eval()
    with torch.inference_mode():
        logits = classifier(torch.from_numpy(latents))
        assert logits.shape == (300, 3) and logits.dtype == torch.float32
        probabilities = torch.softmax(logits, dim=1).numpy()
    np.testing.assert_allclose(probabilities, expected, atol=1e-6)
    assert list(tagger.parameters()) == list(tagger.encoder.parameters())   # the forest adds none


def test_absent_class_gets_a_zero_column(setup):
    train, validation, state, _, weights = setup
    labels = ["run", "cast", "stop", "hunch"]                   # "hunch" never occurs
    config = TaggerConfig(labels=labels, seed=0)
    tagger, log = train_random_forest(train, validation, state, MODEL, SPEC, config,
                                      np.append(weights, 5.0), n_estimators=5)
    assert tagger.forest.classes.tolist() == [0, 1, 2] and tagger.forest.n_classes == 4
    latents = embed_windows(tagger.encoder, validation.windows[:50])
    p = tagger.forest.predict_proba(latents)
    assert p.shape == (50, 4) and (p[:, 3] == 0).all()
    np.testing.assert_allclose(p[:, :3], tagger.estimator.predict_proba(latents), atol=1e-12)
    assert len(log["validation_confusion"]) == 4


# ------------------------------------------------------ parity with sklearn
@pytest.mark.parametrize("with_missing", [False, True])
def test_numpy_prediction_matches_sklearn(with_missing):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(600, 6)).astype(np.float32)
    y = np.where(x[:, 0] + 0.5 * x[:, 1] > 0, 2, 4) + (x[:, 2] > 1)   # classes 2, 3, 4, 5 of 0..6
    if with_missing:
        x[rng.random(x.shape) < 0.1] = np.nan
    forest = RandomForestClassifier(n_estimators=12, max_depth=None, random_state=0,
                                    class_weight={2: 1.0, 3: 4.0, 4: 0.5, 5: 2.0}).fit(x, y)
    arrays = ForestArrays.from_sklearn(forest, n_classes=7)
    if with_missing:   # NaNs are routed both ways somewhere in the forest
        assert set(arrays.missing_go_to_left[arrays.children_left >= 0].tolist()) == {0, 1}
    test = rng.normal(size=(5000, 6)).astype(np.float32)
    test[:10] = x[:10]                                          # exact training values (ties with thresholds)
    if with_missing:
        test[rng.random(test.shape) < 0.1] = np.nan
    expected = np.zeros((len(test), 7))
    expected[:, forest.classes_] = forest.predict_proba(test)
    got = arrays.predict_proba(test)
    assert np.abs(got - expected).max() < 1e-6
    assert np.array_equal(got.argmax(axis=1), expected.argmax(axis=1))
    back = ForestArrays.from_bytes(arrays.to_bytes())
    assert back.equals(arrays) and np.array_equal(back.predict_proba(test), got)
    assert arrays.max_depth() == max(e.tree_.max_depth for e in forest.estimators_)
    assert arrays.predict_proba(np.zeros((0, 6), np.float32)).shape == (0, 7)


# ------------------------------------------------------------- persistence
def test_save_load_round_trip(trained, setup):
    tagger, _, directory = trained
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        ["autoencoder_config.json", "clf_config.json", ENCODER_FILE, FOREST_FILE, "training_log.json"])
    document = json.loads((directory / "clf_config.json").read_text())
    assert document["kind"] == KIND and document["labels"] == LABELS
    assert document["forest"]["n_estimators"] == N_TREES and document["window"]["len_traj"] == 10
    saved = load_random_forest(directory)
    assert isinstance(saved.model, RandomForestTagger) and saved.config.labels == LABELS
    assert saved.spec == SPEC and saved.model_config.dim_latent == MODEL.dim_latent
    assert saved.model.forest.equals(tagger.forest) and saved.model.estimator is None
    assert len(saved.weights_sha1) == 40 and saved.weights_sha1 == load_random_forest(directory).weights_sha1
    windows = torch.from_numpy(setup[1].windows[:200])
    with torch.inference_mode():
        assert torch.equal(saved.model(windows), tagger(windows))


def test_predict_run_with_a_loaded_forest(trained):
    _, _, directory = trained
    saved = load_random_forest(directory)
    run = simulate(SimulationConfig(n_larvae=3, duration=15.0, seed=9)).run
    prediction = predict_run(saved, run, batch_size=50)
    assert prediction.classes.shape == (run.n_steps,) and (prediction.classes >= 0).all()
    assert prediction.probabilities.shape == (run.n_steps, 3)
    np.testing.assert_allclose(prediction.probabilities.sum(axis=1), 1.0, atol=1e-5)
    again = predict_run(load_random_forest(directory), run, batch_size=333)
    assert np.array_equal(again.classes, prediction.classes)
    np.testing.assert_allclose(again.probabilities, prediction.probabilities, atol=1e-6)
    # softmax of the logits gives the forest's own probabilities back
    tagger = saved.model
    windows = make_windows(run, SPEC)
    direct = tagger.forest.predict_proba(embed_windows(tagger.encoder, windows.data[windows.quality == FULL]))
    np.testing.assert_allclose(prediction.probabilities[windows.quality == FULL], direct, atol=2e-5)


def test_dense_loader_never_misreads_a_forest(trained):
    try:
        saved = load_tagger(trained[2])
    except FormatError as err:          # before load_tagger dispatches on "kind"
        assert "no tagger.safetensors" in str(err)
        return
    assert isinstance(saved.model, RandomForestTagger)   # once it does


# ------------------------------------------------- tampered or unsafe files
def test_pickle_in_place_of_the_forest_is_refused_without_running_it(trained, tmp_path):
    directory = copy_instance(trained[2], tmp_path / "evil")
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (directory / FOREST_FILE).write_bytes(pickle.dumps(Payload()))
    with pytest.raises(FormatError, match="invalid or unsafe forest file"):
        load_random_forest(directory)
    assert not marker.exists()


def forest_tensors(directory):
    from safetensors.numpy import load_file

    return load_file(str(directory / FOREST_FILE))


def rewrite(directory, tensors, metadata=None):
    from safetensors.numpy import save_file

    meta = {"format": "maggotuba-forest/1", "n_features": "8", "n_classes": "3"}
    save_file(tensors, str(directory / FOREST_FILE), metadata=metadata or meta)


def tamper_cycle(t):
    internal = np.flatnonzero(t["children_left"][:t["node_offsets"][1]] >= 0)
    t["children_left"][internal[-1]] = 0                      # points back to the root


def tamper_feature(t):
    t["feature"][0] = 99


def tamper_value(t):
    t["leaf_value"][0, 0] = np.nan


def tamper_extra(t):
    t["code"] = np.zeros(3, np.uint8)


def tamper_dtype(t):
    t["threshold"] = t["threshold"].astype(np.float32)


def tamper_shape(t):
    t["leaf_value"] = t["leaf_value"][1:]


@pytest.mark.parametrize("tamper", [tamper_cycle, tamper_feature, tamper_value, tamper_extra,
                                    tamper_dtype, tamper_shape])
def test_tampered_forest_arrays_are_refused(trained, tmp_path, tamper):
    directory = copy_instance(trained[2], tmp_path / "tampered")
    tensors = forest_tensors(directory)
    tamper(tensors)
    rewrite(directory, tensors)
    with pytest.raises(FormatError, match="invalid or unsafe forest file"):
        load_random_forest(directory)


def test_corrupt_files_and_wrong_metadata_are_refused(trained, tmp_path):
    directory = copy_instance(trained[2], tmp_path / "corrupt")
    good = (directory / FOREST_FILE).read_bytes()
    (directory / FOREST_FILE).write_bytes(good[: len(good) // 2])
    with pytest.raises(FormatError, match="invalid or unsafe forest file"):
        load_random_forest(directory)
    (directory / FOREST_FILE).write_bytes(b"\xff" * 7)
    with pytest.raises(FormatError, match="too short"):
        load_random_forest(directory)
    (directory / FOREST_FILE).write_bytes(good)
    rewrite(directory, forest_tensors(directory), {"format": "something-else"})
    with pytest.raises(FormatError, match="format"):
        load_random_forest(directory)
    rewrite(directory, forest_tensors(copy_instance(trained[2], tmp_path / "src")),
            {"format": "maggotuba-forest/1", "n_features": "8", "n_classes": "4"})
    with pytest.raises(FormatError, match="leaf_value"):
        load_random_forest(directory)
    (directory / FOREST_FILE).write_bytes(good)
    (directory / ENCODER_FILE).write_bytes(b"not a safetensors file at all")
    with pytest.raises(FormatError, match="cannot load encoder weights"):
        load_random_forest(directory)


def test_wrong_kind_and_missing_files(trained, tmp_path):
    with pytest.raises(FormatError, match="not a random-forest tagger directory"):
        load_random_forest(tmp_path)
    directory = copy_instance(trained[2], tmp_path / "dense-kind")
    document = json.loads((directory / "clf_config.json").read_text())
    document["kind"] = "maggotuba-dense"
    (directory / "clf_config.json").write_text(json.dumps(document))
    with pytest.raises(FormatError, match="kind"):
        load_random_forest(directory)


def test_single_class_forest_of_lone_leaves():
    x = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
    forest = RandomForestClassifier(n_estimators=4, random_state=0).fit(x, np.full(40, 1))
    arrays = ForestArrays.from_sklearn(forest, n_classes=3)
    assert arrays.n_nodes == 4 and arrays.max_depth() == 0
    assert arrays.predict_proba(x[:5]).tolist() == [[0.0, 1.0, 0.0]] * 5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_prediction_with_a_forest(trained):
    run = simulate(SimulationConfig(n_larvae=4, duration=20.0, seed=12)).run
    cpu = predict_run(load_random_forest(trained[2]), run)
    saved = load_random_forest(trained[2], device="cuda")
    gpu = predict_run(saved, run, device="cuda", batch_size=100)
    again = predict_run(saved, run, device="cuda", batch_size=100)
    assert np.array_equal(gpu.classes, again.classes)
    assert np.array_equal(gpu.probabilities, again.probabilities)
    # the encoder runs in TF32 on the GPU: a latent near a threshold may switch branch
    assert np.mean(gpu.classes == cpu.classes) > 0.98
