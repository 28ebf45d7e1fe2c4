"""Tagger training, saving, loading and prediction on small simulated data."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from maggotuba.features import FULL, WindowSpec, make_windows  # noqa: E402
from maggotuba.models.autoencoder import Encoder, MaggotUBAConfig  # noqa: E402
from maggotuba.instances import load_tagger  # noqa: E402
from maggotuba.models.tagger import (  # noqa: E402
    TaggerConfig, TrainingData, macro_f1, save_tagger, train_tagger,
)
from maggotuba.predict import (  # noqa: E402
    abc_to_aac, predict_run, probabilities_path, to_labels, write_probabilities,
)
from taggingbackends.data.labels import Labels  # noqa: E402
from taggingbackends.formats import load  # noqa: E402
from taggingbackends.simulate import BEHAVIOURS, SimulationConfig, simulate  # noqa: E402

SPEC = WindowSpec(len_traj=10, frame_interval=0.1)
MODEL = MaggotUBAConfig(len_traj=10, len_pred=0, dim_latent=8, enc_filters=[8, 8, 4, 4, 4, 4],
                        target=["present"])
LABELS = ["run", "cast", "stop"]


def training_data(seed: int) -> TrainingData:
    result = simulate(SimulationConfig(n_larvae=6, duration=40.0, seed=seed))
    mapping = np.array([LABELS.index(b) if b in LABELS else -1 for b in BEHAVIOURS])
    classes = mapping[result.behaviour]
    windows = make_windows(result.run, SPEC)
    keep = (windows.quality == FULL) & (classes >= 0)
    return TrainingData(windows.data[keep], classes[keep].astype(np.int64),
                        result.run.track_index[keep] + 100 * seed)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.manual_seed(0)
    encoder = Encoder(MODEL)
    config = TaggerConfig(labels=LABELS, iterations=(40, 100), batch_size=64, validate_every=20, seed=1)
    train, validation = training_data(1), training_data(2)
    counts = np.bincount(train.labels, minlength=3)
    weights = (1 / np.maximum(counts, 1)) / (1 / np.maximum(counts, 1)).sum() * 3
    model, log = train_tagger(train, validation, encoder.state_dict(), MODEL, SPEC, config, weights)
    directory = save_tagger(model, config, MODEL, SPEC, tmp_path_factory.mktemp("models") / "tiny", log)
    return directory, log, (train, validation, weights, encoder.state_dict(), config)


def test_training_learns_and_keeps_the_best(trained):
    directory, log, _ = trained
    assert log["best_macro_f1"] > 0.55  # three classes: chance is about 0.33
    assert [v[:2] for v in log["validation"]][:3] == [[1, 20], [1, 40], [2, 20]]
    assert (directory / "tagger.safetensors").exists() and (directory / "clf_config.json").exists()


def test_training_is_deterministic(trained, tmp_path):
    _, log, (train, validation, weights, encoder_state, config) = trained
    _, again = train_tagger(train, validation, encoder_state, MODEL, SPEC, config, weights)
    assert again["train_loss"] == log["train_loss"]


def test_frozen_phase_leaves_the_encoder_untouched(trained):
    _, _, (train, validation, weights, encoder_state, config) = trained
    frozen_only = TaggerConfig(labels=LABELS, iterations=(20, 0), batch_size=32, validate_every=10)
    model, _ = train_tagger(train, validation, encoder_state, MODEL, SPEC, frozen_only, weights)
    for key, value in model.encoder.state_dict().items():
        assert torch.equal(value, encoder_state[key]), key


def test_load_and_predict_every_step(trained, tmp_path):
    directory, _, _ = trained
    saved = load_tagger(directory)
    assert saved.config.labels == LABELS and len(saved.weights_sha1) == 40
    run = simulate(SimulationConfig(n_larvae=3, duration=15.0, seed=9)).run
    prediction = predict_run(saved, run, batch_size=50)
    assert prediction.classes.shape == (run.n_steps,) and (prediction.classes >= 0).all()
    np.testing.assert_allclose(prediction.probabilities.sum(axis=1), 1.0, atol=1e-5)
    again = predict_run(saved, run, batch_size=50)
    assert np.array_equal(again.classes, prediction.classes)
    assert np.array_equal(again.probabilities, prediction.probabilities)
    skipped = predict_run(saved, run, edges="skip", post_processing=[])
    assert (skipped.classes[prediction.quality == 1] == -1).all()

    labels = to_labels(prediction, saved, model_name="tiny")
    out = tmp_path / "predicted.label"
    labels.dump(out)
    back = Labels.load(out)
    assert back.names == LABELS and back.n_steps == run.n_steps
    assert back.metadata["provenance"]["model"]["weights_sha1"] == saved.weights_sha1
    sidecar = write_probabilities(prediction, probabilities_path(out), saved.weights_sha1)
    assert sidecar.name == "predicted.probabilities.h5"
    with h5py.File(sidecar) as f:
        assert f["probabilities"].shape == (run.n_steps, 3)
        assert list(f.attrs["labels"]) == LABELS


def test_abc_to_aac_rule():
    classes = np.array([0, 1, 0, 0, 2, 2, 1, 0, 0, 1, 2], dtype=np.int16)
    offsets = np.array([0, 6, 11])
    # track 1: 0 [1] 0 0 2 2 -> the single 1 becomes 0; track 2: 1 0 0 1 2 (boundary steps stay)
    assert abc_to_aac(classes, offsets).tolist() == [0, 0, 0, 0, 2, 2, 1, 0, 0, 0, 2]
    assert abc_to_aac(np.array([0, -1, 0], dtype=np.int16), np.array([0, 3])).tolist() == [0, -1, 0]


def test_macro_f1():
    truth = np.array([0, 0, 1, 1])
    assert macro_f1(truth, truth, 2) == 1.0
    assert macro_f1(truth, np.array([0, 0, 0, 0]), 3) == pytest.approx((2 / 3 + 0) / 2)


def test_broken_model_directory(tmp_path):
    from taggingbackends.errors import FormatError

    with pytest.raises(FormatError, match="not a tagger model directory"):
        load_tagger(tmp_path)
    assert load  # the framework's reader is importable alongside the backend


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_prediction_matches_cpu():
    from maggotuba.backend import SHIPPED

    run = simulate(SimulationConfig(n_larvae=20, duration=60.0, seed=11)).run
    cpu = predict_run(load_tagger(SHIPPED / "models" / "default"), run)
    saved = load_tagger(SHIPPED / "models" / "default", device="cuda")
    gpu = predict_run(saved, run, device="cuda", batch_size=4096)
    again = predict_run(saved, run, device="cuda", batch_size=4096)
    assert np.array_equal(gpu.classes, again.classes)          # deterministic on the device
    # cuDNN runs fp32 convolutions in TF32 by default (10-bit mantissa): probabilities
    # differ from the CPU's in the third decimal, labels almost never
    np.testing.assert_allclose(gpu.probabilities, cpu.probabilities, atol=1e-2)
    assert np.mean(gpu.classes == cpu.classes) > 0.999
    bf16 = predict_run(saved, run, device="cuda", precision="bf16")
    assert np.mean(bf16.classes == gpu.classes) > 0.995


@pytest.mark.parametrize("precision", ["bf16", "bf16-full"])
def test_cpu_reduced_precision_prediction(precision):
    """bf16 variants keep the labels (≥ 99 % equal on a small run) where the CPU has native
    bf16, and are refused with a clear error where it would be emulated ~100x slower."""
    from maggotuba.backend import SHIPPED
    from maggotuba.inference import has_native_bf16
    from taggingbackends.errors import TaggingError

    run = simulate(SimulationConfig(n_larvae=6, duration=30.0, seed=12)).run
    saved = load_tagger(SHIPPED / "models" / "default")
    if not has_native_bf16():
        with pytest.raises(TaggingError, match="no native bf16"):
            predict_run(saved, run, precision=precision)
        return
    fp32 = predict_run(saved, run)
    reduced = predict_run(saved, run, precision=precision)
    assert np.array_equal(reduced.classes, predict_run(saved, run, precision=precision).classes)
    assert np.mean(reduced.classes == fp32.classes) >= 0.99
