"""Self-supervised pretraining: learns, is deterministic, resumes after an interruption."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from maggotuba.features import WindowSpec  # noqa: E402
from maggotuba.models.autoencoder import MaggotUBAConfig  # noqa: E402
from maggotuba.pretrain import (  # noqa: E402
    CHECKPOINT_FILE, ENCODER_FILE, PretrainConfig, load_pretrained, pretrain, sample_windows,
    split_by_larva,
)
from taggingbackends.simulate import SimulationConfig, simulate  # noqa: E402

SPEC = WindowSpec(len_traj=10, len_pred=5)
MODEL = MaggotUBAConfig(len_traj=10, len_pred=5, dim_latent=6, enc_filters=[8, 8, 4, 4, 4, 4],
                        dec_filters=[8, 8, 4, 4, 4, 4])


@pytest.fixture(scope="module")
def windows():
    run = simulate(SimulationConfig(n_larvae=8, duration=40.0, seed=5)).run
    sampled = sample_windows([run], SPEC, n_windows=600, seed=1)
    return split_by_larva(sampled, 0.25, seed=1)


def weights(directory):
    from safetensors.torch import load_file

    return load_file(directory / ENCODER_FILE)


def test_windows_are_full_and_split_by_larva(windows):
    train, validation = windows
    assert train.data.shape[1:] == (2, 5, 20) and len(train) + len(validation) == 600
    assert np.isfinite(train.data).all()
    assert not set(train.groups) & set(validation.groups)


def test_pretraining_learns_and_is_deterministic(windows, tmp_path):
    train, validation = windows
    config = PretrainConfig(iterations=40, batch_size=32, validate_every=10, seed=3)
    log = pretrain(train, validation, MODEL, SPEC, tmp_path / "a", config)
    assert np.mean(log["train_loss"][-10:]) < np.mean(log["train_loss"][:10])
    assert log["best_iteration"] is not None and not (tmp_path / "a" / CHECKPOINT_FILE).exists()
    pretrain(train, validation, MODEL, SPEC, tmp_path / "b", config)
    first, second = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert all(torch.equal(first[k], second[k]) for k in first)
    model, model_config, spec = load_pretrained(tmp_path / "a")
    assert spec == SPEC and model_config.dim_latent == 6
    with torch.no_grad():
        assert model.encoder(torch.from_numpy(validation.data[:4, ..., 5:15])).shape == (4, 6)


def test_resume_after_interruption_gives_the_same_model(windows, tmp_path):
    train, validation = windows
    config = PretrainConfig(iterations=30, batch_size=32, validate_every=10, seed=4)
    pretrain(train, validation, MODEL, SPEC, tmp_path / "straight", config)

    class Interrupted(Exception):
        pass

    def stop_at_25(iteration, loss, validation_loss):
        if iteration == 25:
            raise Interrupted

    with pytest.raises(Interrupted):
        pretrain(train, validation, MODEL, SPEC, tmp_path / "resumed", config, progress=stop_at_25)
    assert (tmp_path / "resumed" / CHECKPOINT_FILE).exists()  # saved at iteration 20
    log = pretrain(train, validation, MODEL, SPEC, tmp_path / "resumed", config)
    assert [v[0] for v in log["validation"]] == [10, 20, 30]
    straight, resumed = weights(tmp_path / "straight"), weights(tmp_path / "resumed")
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_mismatched_lengths_rejected(windows, tmp_path):
    train, validation = windows
    with pytest.raises(ValueError, match="disagree on lengths"):
        pretrain(train, validation, MaggotUBAConfig(len_traj=10, len_pred=10), SPEC, tmp_path)
