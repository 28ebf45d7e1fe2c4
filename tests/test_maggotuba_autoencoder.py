"""Our MaggotUBA autoencoder against a fixture produced by the original MaggotUBA code.

See tests/data/maggotuba_published/README.md for how the fixture was made.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from maggotuba.models.autoencoder import (
    calibrate_batchnorm,
    AutoEncoder,
    Decoder,
    Encoder,
    FusedEncoder,
    MaggotUBAConfig,
    fold_batchnorm,
    same_padding,
)
from maggotuba.models.compat import (
    load_published_autoencoder,
    load_published_encoder,
)
from taggingbackends.errors import FormatError

FIXTURE = Path(__file__).parent / "data" / "maggotuba_published"


@pytest.fixture(scope="module")
def windows():
    return torch.from_numpy(np.load(FIXTURE / "windows.npy"))


@pytest.fixture(scope="module")
def published():
    return load_published_encoder(FIXTURE)


def _copy_fixture(tmp_path: Path) -> Path:
    dest = tmp_path / "experiment_1"
    dest.mkdir()
    for name in ("config.json", "best_validated_encoder.pt", "best_validated_decoder.pt"):
        shutil.copy(FIXTURE / name, dest / name)
    return dest


def test_published_encoder_reproduces_original_embeddings(published, windows):
    encoder, config = published
    assert not encoder.training
    assert (config.len_traj, config.len_pred, config.dim_latent) == (20, 20, 25)
    expected = np.load(FIXTURE / "embeddings.npy")
    with torch.no_grad():
        got = encoder(windows).numpy()
    assert got.shape == expected.shape == (16, 25)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_state_dict_keys_identical_to_original(windows):
    config = MaggotUBAConfig.from_json(FIXTURE / "config.json")
    state = torch.load(FIXTURE / "best_validated_encoder.pt", weights_only=True, map_location="cpu")
    encoder = Encoder(config)
    assert list(encoder.state_dict()) == list(state)
    encoder.load_state_dict(state, strict=True)
    # the original's own call style, Encoder(**config_dict), works too
    original_style = Encoder(**json.loads((FIXTURE / "config.json").read_text()))
    original_style.load_state_dict(state, strict=True)
    with torch.no_grad():
        assert torch.equal(encoder.eval()(windows), original_style.eval()(windows))


def test_published_autoencoder_reproduces_original_reconstructions(windows):
    model, config = load_published_autoencoder(FIXTURE)
    decoder_state = torch.load(FIXTURE / "best_validated_decoder.pt", weights_only=True)
    Decoder(config).load_state_dict(decoder_state, strict=True)
    expected = np.load(FIXTURE / "reconstructions.npy")
    with torch.no_grad():
        got = model(windows).numpy()
    assert got.shape == (16, 2, 5, 60)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_initialisation_matches_original_under_same_seed():
    record = json.loads((FIXTURE / "initial_weight_sums.json").read_text())
    config = MaggotUBAConfig.from_json(FIXTURE / "config.json")
    torch.manual_seed(record["seed"])
    model = AutoEncoder(config)
    for part in ("encoder", "decoder"):
        state = getattr(model, part).state_dict()
        for key, total in record["sums"][part].items():
            assert state[key].double().sum().item() == pytest.approx(total, rel=1e-9, abs=1e-9), key


def test_preprocessing_as_described_reproduces_original_windows():
    """rescale by the mean length, rotate (point 1 - point 5 mean vector to +x), centre on point 3."""
    rows = np.load(FIXTURE / "point_dynamics_rows.npy")  # (16, 20, 18) Point_dynamics rows
    mean_lengths = np.load(FIXTURE / "mean_lengths.npy")
    expected = np.load(FIXTURE / "windows.npy")
    for sample, scale, want in zip(rows, mean_lengths, expected):
        xy = sample[:, 8:18].reshape(len(sample), 5, 2) / scale  # (time, point, xy)
        mean_pts = xy.mean(axis=0)
        direction = mean_pts[0] - mean_pts[-1]
        cos, sin = direction / np.linalg.norm(direction)
        xy = xy @ np.array([[cos, sin], [-sin, cos]]).T
        xy = xy - xy[:, 2].mean(axis=0)
        np.testing.assert_allclose(xy.transpose(2, 1, 0), want, rtol=0, atol=1e-6)


# ---------------------------------------------------------------- fused inference encoder

def test_fused_encoder_matches_published(published, windows):
    encoder, _ = published
    fused = encoder.fused()
    assert isinstance(fused, FusedEncoder)
    with torch.no_grad():
        ref = encoder(windows)
        np.testing.assert_allclose(fused(windows).numpy(), ref.numpy(), rtol=0, atol=1e-5)
        x = 2 * torch.randn(64, 2, 5, 20, generator=torch.Generator().manual_seed(3))
        # inputs twice the normalised scale: fp32 summation order differs, so a little looser
        np.testing.assert_allclose(fused(x).numpy(), encoder(x).numpy(), rtol=1e-5, atol=3e-5)


@pytest.mark.parametrize("len_traj,activation,bias", [(20, "relu", False), (15, "elu", True), (8, "tanh", True)])
def test_fused_encoder_matches_plain_random(len_traj, activation, bias):
    torch.manual_seed(len_traj)
    encoder = Encoder(MaggotUBAConfig(len_traj=len_traj, dim_latent=12, activation=activation, bias=bias,
                                      enc_filters=[16, 12, 8, 8, 8, 4]))
    if bias:
        with torch.no_grad():
            for m in encoder.modules():
                if isinstance(m, torch.nn.Conv2d):
                    m.bias.normal_(0, 0.2)
    calibrate_batchnorm(encoder, (2, 5, len_traj), seed=len_traj)
    fused = fold_batchnorm(encoder)
    x = torch.randn(32, 2, 5, len_traj)
    with torch.no_grad():
        np.testing.assert_allclose(fused(x).numpy(), encoder(x).numpy(), rtol=0, atol=1e-5)
    # why a per-position bias map is needed: the zero padding makes the folded BN shift
    # depend on the position (a per-channel conv bias would be wrong at the borders)
    for i in range(1, 6):  # block 2 has a (1, len_traj) time kernel, block 3 a (5, 1) body kernel
        bmap = getattr(fused, f"bias_map_{i}").flatten(1)
        assert bmap.shape[1] == 5 * len_traj
        assert (bmap.amax(dim=1) - bmap.amin(dim=1)).max() > 1e-3


def test_fused_encoder_uses_running_stats_even_from_train_mode(published, windows):
    encoder, _ = published
    fused = fold_batchnorm(encoder.train())
    encoder.eval()
    with torch.no_grad():
        np.testing.assert_allclose(fused(windows).numpy(), encoder(windows).numpy(), rtol=0, atol=1e-5)


# ---------------------------------------------------------------- shapes and config

def test_autoencoder_output_shape_len_pred_differs():
    model = AutoEncoder(len_traj=20, len_pred=7, dim_latent=25).eval()
    x = torch.randn(3, 2, 5, 20)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (3, 2, 5, 7 + 20 + 7)
    parts = model.split_output(y)
    assert [p.shape[-1] for p in parts.values()] == [7, 20, 7]
    target = model.make_target(torch.zeros(3, 2, 5, 7), x, torch.zeros(3, 2, 5, 7))
    assert target.shape == y.shape
    assert model.encoder(x).shape == (3, 25)
    only_future = AutoEncoder(len_traj=10, len_pred=4, target=["present", "future"])
    assert only_future.eval()(torch.randn(2, 2, 5, 10)).shape == (2, 2, 5, 14)


def test_encoder_rejects_wrong_window_shape():
    with pytest.raises(ValueError, match="shape"):
        Encoder().eval()(torch.randn(2, 2, 5, 19))


def test_same_padding_matches_original_convention():
    assert same_padding(5) == (2, 2)
    assert same_padding(1) == (0, 0)
    assert same_padding(20) == (10, 9)


def test_config_defaults_and_json_round_trip(tmp_path):
    config = MaggotUBAConfig()
    assert config.len_pred == config.len_traj == 20
    assert config.enc_kernel == [(5, 1), (1, 20)] * 3
    assert config.dec_kernel == [(1, 20), (5, 1)] * 3
    assert config.output_length == 60
    assert MaggotUBAConfig.from_json(json.loads(config.to_json())) == config
    path = tmp_path / "config.json"
    config.to_json(path)
    assert MaggotUBAConfig.from_json(path) == config
    assert MaggotUBAConfig.from_json(path.read_text()) == config

    # the original file survives a read/write round trip unchanged (paths kept in `extra`)
    original = json.loads((FIXTURE / "config.json").read_text())
    parsed = MaggotUBAConfig.from_json(original)
    assert parsed.extra["project_dir"] == original["project_dir"]
    assert parsed.to_dict() == original
    assert list(parsed.to_dict()) == list(original)


def test_config_tolerates_aliases_and_scalars():
    config = MaggotUBAConfig.from_json({"latent_dim": 7, "len_traj": 10, "len_pred": None,
                                        "enc_filters": 32, "enc_depth": 4, "enc_kernel": [3, 1],
                                        "adapter_key": "kept"})
    assert config.dim_latent == 7 and config.len_pred == 10
    assert config.enc_filters == [32, 32, 32] and config.enc_kernel == [(3, 1)] * 3
    assert config.dec_kernel == [(1, 10), (5, 1)] * 3
    assert config.extra == {"adapter_key": "kept"}
    encoder = Encoder(config).eval()
    assert encoder(torch.randn(2, 2, 5, 10)).shape == (2, 7)
    with pytest.raises(FormatError, match="enc_kernel"):
        MaggotUBAConfig.from_json({"enc_kernel": [[5, 1], [1, 20]]})
    with pytest.raises(FormatError, match="activation"):
        MaggotUBAConfig.from_json({"activation": "gelu"})


# ---------------------------------------------------------------- load errors

def _assert_one_line_naming(err: FormatError, name: str):
    message = str(err)
    assert name in message and "\n" not in message
    assert err.path is not None and err.path.name == name


def test_load_missing_directory(tmp_path):
    with pytest.raises(FormatError) as info:
        load_published_encoder(tmp_path / "nope")
    _assert_one_line_naming(info.value, "nope")


def test_load_missing_weights(tmp_path):
    d = _copy_fixture(tmp_path)
    (d / "best_validated_encoder.pt").unlink()
    with pytest.raises(FormatError) as info:
        load_published_encoder(d)
    _assert_one_line_naming(info.value, "best_validated_encoder.pt")
    assert "not found" in str(info.value)


def test_load_missing_config(tmp_path):
    d = _copy_fixture(tmp_path)
    (d / "config.json").unlink()
    with pytest.raises(FormatError) as info:
        load_published_encoder(d)
    _assert_one_line_naming(info.value, "config.json")


def test_load_accepts_adapter_config_name(tmp_path, windows):
    d = _copy_fixture(tmp_path)
    (d / "config.json").rename(d / "autoencoder_config.json")
    encoder, _ = load_published_encoder(d)
    with torch.no_grad():
        np.testing.assert_allclose(encoder(windows).numpy(), np.load(FIXTURE / "embeddings.npy"), atol=1e-5)


def test_load_shape_mismatch(tmp_path):
    d = _copy_fixture(tmp_path)
    config = json.loads((d / "config.json").read_text())
    config["dim_latent"] = 10
    (d / "config.json").write_text(json.dumps(config))
    with pytest.raises(FormatError) as info:
        load_published_encoder(d)
    _assert_one_line_naming(info.value, "best_validated_encoder.pt")
    assert "shape mismatch" in str(info.value) and "config.json" in str(info.value)


def test_load_wrong_architecture_keys(tmp_path):
    d = _copy_fixture(tmp_path)
    config = json.loads((d / "config.json").read_text())
    config["enc_filters"] = config["enc_filters"][:4]
    config["enc_kernel"] = config["enc_kernel"][:4]
    (d / "config.json").write_text(json.dumps(config))
    with pytest.raises(FormatError) as info:
        load_published_encoder(d)
    _assert_one_line_naming(info.value, "best_validated_encoder.pt")
    assert "unexpected key" in str(info.value)


def test_load_corrupt_weights_and_config(tmp_path):
    d = _copy_fixture(tmp_path)
    (d / "best_validated_encoder.pt").write_bytes(b"not a torch file")
    with pytest.raises(FormatError) as info:
        load_published_encoder(d)
    _assert_one_line_naming(info.value, "best_validated_encoder.pt")

    torch.save([torch.zeros(2)], d / "best_validated_encoder.pt")
    with pytest.raises(FormatError, match="state dict") as info:
        load_published_encoder(d)
    _assert_one_line_naming(info.value, "best_validated_encoder.pt")

    (d / "config.json").write_text("{not json")
    with pytest.raises(FormatError) as info:
        load_published_encoder(d)
    _assert_one_line_naming(info.value, "config.json")


def test_load_missing_decoder(tmp_path):
    d = _copy_fixture(tmp_path)
    (d / "best_validated_decoder.pt").unlink()
    with pytest.raises(FormatError) as info:
        load_published_autoencoder(d)
    _assert_one_line_naming(info.value, "best_validated_decoder.pt")
