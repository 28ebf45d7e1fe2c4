"""The fast CPU inference path (maggotuba.inference) against the plain eval-mode Encoder."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from maggotuba.features import WindowSpec, make_windows
from maggotuba.inference import (
    PRECISIONS,
    FastEncoder,
    best_batch_size,
    has_native_bf16,
    make_inference_encoder,
    supports,
)
from maggotuba.models.autoencoder import calibrate_batchnorm, Encoder, MaggotUBAConfig
from maggotuba.models.compat import load_published_encoder
from taggingbackends.simulate import SimulationConfig, simulate

FIXTURE = Path(__file__).parent / "data" / "maggotuba_published"
#: Without native bf16 (AVX512-BF16/AMX) torch emulates bf16 GEMMs about 140x slower than
#: fp32: the bf16 tests then run on fewer windows (same checks, looser sampling).
NATIVE_BF16 = has_native_bf16()
BF16_WINDOWS = 2000 if NATIVE_BF16 else 200


def _plain(encoder, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return encoder.eval()(torch.from_numpy(x)).numpy()


@pytest.fixture(scope="module")
def random_encoder():
    torch.manual_seed(0)
    encoder = Encoder(MaggotUBAConfig())
    calibrate_batchnorm(encoder, (2, 5, 20))
    return encoder


@pytest.fixture(scope="module")
def published():
    return load_published_encoder(FIXTURE)[0]


@pytest.fixture(scope="module")
def simulated_windows():
    run = simulate(SimulationConfig(n_larvae=8, duration=40.0, seed=3)).run
    data = make_windows(run, WindowSpec()).data
    return data[np.isfinite(data).all(axis=(1, 2, 3))]


def _random_windows(n, seed=1, len_traj=20):
    g = np.random.default_rng(seed)
    return (0.3 + 1.5 * g.standard_normal((n, 2, 5, len_traj))).astype(np.float32)


# ---------------------------------------------------------------- fp32: exact

def _float64_truth(encoder, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return copy.deepcopy(encoder).double().eval()(torch.from_numpy(x).double()).numpy()


def test_fp32_matches_plain_encoder_random_weights(random_encoder, simulated_windows):
    x = simulated_windows[:500]
    fast = make_inference_encoder(random_encoder)
    assert isinstance(fast, FastEncoder)
    got = fast(x)
    assert got.shape == (500, 25) and got.dtype == np.float32
    np.testing.assert_allclose(got, _plain(random_encoder, x), rtol=1e-5, atol=1e-5)


def test_fp32_as_exact_as_plain_encoder_on_large_outputs(random_encoder):
    """Inputs from the BN calibration distribution give embeddings up to ~6, where float32
    rounding alone puts the plain encoder ~6e-6 away from the float64 result: the fast path
    is as close to that result as the plain encoder is."""
    x = _random_windows(300)
    got, plain, truth = FastEncoder(random_encoder)(x), _plain(random_encoder, x), _float64_truth(random_encoder, x)
    np.testing.assert_allclose(got, truth, rtol=1e-5, atol=1e-5)
    assert np.abs(got - truth).max() <= 2 * np.abs(plain - truth).max() + 1e-6
    np.testing.assert_allclose(got, plain, rtol=0, atol=2e-5)


def test_fp32_reproduces_published_embeddings(published):
    windows = np.load(FIXTURE / "windows.npy")
    fast = make_inference_encoder(published, precision="fp32")
    np.testing.assert_allclose(fast(windows), np.load(FIXTURE / "embeddings.npy"), rtol=0, atol=1e-5)
    np.testing.assert_allclose(fast(windows), _plain(published, windows), rtol=0, atol=1e-5)


@pytest.mark.parametrize("n", [1, 3, 1000])
def test_odd_batch_sizes(random_encoder, simulated_windows, n):
    x = simulated_windows[-n:]
    fast = FastEncoder(random_encoder)
    np.testing.assert_allclose(fast(x), _plain(random_encoder, x), rtol=1e-5, atol=1e-5)
    x = _random_windows(n, seed=n)
    every = max(1, n // 50)  # the float64 reference is slow: check a subset of the rows
    np.testing.assert_allclose(fast(x)[::every], _float64_truth(random_encoder, x[::every]),
                               rtol=1e-5, atol=1e-5)


def test_sub_batching_with_remainder_and_buffer_reuse(random_encoder):
    x = _random_windows(45, seed=7)
    fast = FastEncoder(random_encoder, batch_size=16)  # chunks of 16, 16, 13
    ref = _plain(random_encoder, x)
    np.testing.assert_allclose(fast(x), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fast(x[:5]), ref[:5], rtol=1e-5, atol=1e-5)  # smaller call after
    assert fast(x[:0]).shape == (0, 25)


def test_deterministic_bit_identical(random_encoder):
    for precision in PRECISIONS:
        x = _random_windows(600 if precision == "fp32" or NATIVE_BF16 else 48, seed=2)
        fast = FastEncoder(random_encoder, precision=precision)
        first = fast(x)
        assert np.array_equal(first, fast(x)), precision
        assert np.array_equal(first, FastEncoder(random_encoder, precision=precision)(x)), precision


@pytest.mark.parametrize("len_traj,activation,bias,kernels", [
    (15, "elu", True, None),
    (8, "tanh", True, None),
    (20, "sigmoid", False, [(1, 20), (5, 1)] * 3),  # time convolution first
    (12, "relu", True, [(3, 1), (1, 4), (5, 1), (1, 12), (1, 1), (1, 3)]),
])
def test_fp32_other_architectures(len_traj, activation, bias, kernels):
    torch.manual_seed(len_traj)
    config = MaggotUBAConfig(len_traj=len_traj, dim_latent=12, activation=activation, bias=bias,
                             enc_filters=[16, 12, 8, 8, 8, 4], enc_kernel=kernels)
    encoder = Encoder(config)
    if bias:
        with torch.no_grad():
            for m in encoder.modules():
                if isinstance(m, torch.nn.Conv2d):
                    m.bias.normal_(0, 0.2)
    calibrate_batchnorm(encoder, (2, 5, len_traj), seed=len_traj)
    x = _random_windows(70, seed=len_traj, len_traj=len_traj)
    fast = FastEncoder(encoder, batch_size=32)
    np.testing.assert_allclose(fast(x), _plain(encoder, x), rtol=1e-5, atol=1e-5)


def test_snapshot_and_train_mode_source(random_encoder):
    """Running statistics are used even if the source encoder is left in train mode."""
    x = _random_windows(20, seed=4)
    ref = _plain(random_encoder, x)
    random_encoder.train()
    try:
        fast = FastEncoder(random_encoder)
    finally:
        random_encoder.eval()
    np.testing.assert_allclose(fast(x), ref, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- bf16

def _argmax_agreement(ref, got, seed, n_classes=8):
    g = np.random.default_rng(seed)
    w = g.standard_normal((ref.shape[1], n_classes))
    b = 0.1 * g.standard_normal(n_classes)
    return np.mean((ref @ w + b).argmax(1) == (got @ w + b).argmax(1))


@pytest.mark.parametrize("precision", ["bf16", "bf16-full"])
def test_bf16_close_and_same_labels(published, simulated_windows, precision):
    x = simulated_windows if NATIVE_BF16 else simulated_windows[:BF16_WINDOWS]
    assert len(x) >= min(1000, BF16_WINDOWS)
    ref = _plain(published, x)
    got = make_inference_encoder(published, precision=precision)(x)
    assert got.dtype == np.float32 and got.shape == ref.shape
    assert np.abs(got - ref).max() < (0.01 if precision == "bf16" else 0.05)
    agreement = [_argmax_agreement(ref, got, seed) for seed in range(10)]
    assert np.mean(agreement) >= 0.99
    if precision == "bf16":
        assert min(agreement) >= 0.99


def test_bf16_random_encoder_loose(random_encoder):
    x = _random_windows(BF16_WINDOWS, seed=5)
    ref = _plain(random_encoder, x)
    got = FastEncoder(random_encoder, precision="bf16")(x)
    scale = np.abs(ref).max()
    assert np.abs(got - ref).max() < 0.05 * scale
    assert np.mean([_argmax_agreement(ref, got, seed) for seed in range(5)]) >= 0.98


# ---------------------------------------------------------------- API

def test_threads_are_restored_and_used(random_encoder):
    before = torch.get_num_threads()
    fast = FastEncoder(random_encoder, threads=1)
    assert fast.threads == 1
    fast(_random_windows(4))
    assert torch.get_num_threads() == before
    assert FastEncoder(random_encoder).batch_size == best_batch_size


def test_input_checks_and_fallback(random_encoder):
    fast = FastEncoder(random_encoder)
    with pytest.raises(ValueError):
        fast(np.zeros((3, 2, 5, 19), dtype=np.float32))
    with pytest.raises(ValueError):
        FastEncoder(random_encoder, precision="fp16")
    with pytest.raises(TypeError):
        FastEncoder(random_encoder.fused())
    # float64 input is accepted (converted)
    x = _random_windows(5)
    np.testing.assert_array_equal(fast(x.astype(np.float64)), fast(x))
    # a 2-D kernel is not a GEMM chain: make_inference_encoder falls back to the fused encoder
    torch.manual_seed(1)
    square = Encoder(MaggotUBAConfig(enc_filters=[8, 8, 4], enc_kernel=[(3, 3), (1, 20), (5, 1)]))
    calibrate_batchnorm(square, (2, 5, 20))
    assert not supports(square)
    with pytest.raises(ValueError):
        FastEncoder(square)
    run = make_inference_encoder(square)
    np.testing.assert_allclose(run(x), _plain(square, x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError):
        make_inference_encoder(square, precision="bf16")
