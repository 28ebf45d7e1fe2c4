"""MaggotUBA encoder throughput on this CPU, against the fp32 matmul peak.

Prints, in one run:

1. the measured fp32 matmul peak (``torch.matmul`` of large square float32 matrices,
   torch threads = all cores, best of several), and the bf16 one for reference;
2. the fp32 limit: peak / (FLOP per window) windows/s, the encoder costing 21.2 M
   multiply-adds = 42.3 MFLOP per window (default architecture);
3. windows/s and share of that limit per batch size for the plain eval-mode ``Encoder``
   under ``torch.inference_mode``, the BN-folded ``FusedEncoder``, and the fast path of
   :mod:`maggotuba.inference` (GEMM chain, sub-batches of ``best_batch_size``; plus the
   same chain run as one chunk of the whole batch, to show the cache effect);
4. reduced precision: autocast bf16 on the plain encoder, the fused encoder cast to bf16,
   and the fast path's ``bf16`` (dominant layer in bf16) and ``bf16-full`` (every conv in
   bf16): windows/s, ratio to the fp32 fast path and to the plain fp32 encoder, and the
   agreement of embeddings with fp32: max abs difference and, for random linear heads on
   top (8 classes), the % of argmax labels equal (mean and worst of 100 heads), on raw
   embeddings and on standardised ones (z-scored with the fp32 statistics, as a head
   trained on that data would see them), for the published encoder on simulated larva
   windows and for a random encoder with calibrated BatchNorm on random windows;
5. the exactness of the fp32 fast path (max abs difference to the plain encoder and to
   the original embeddings of the published fixture; determinism).

Timings are best-of-``--repeat`` (other processes on the machine only slow runs down).

Usage: python benchmarks/encoder_benchmark.py [--quick] [--threads N] [--repeat 3]
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from maggotuba.features import WindowSpec, iter_windows
from maggotuba.inference import FastEncoder, best_batch_size
from maggotuba.models.autoencoder import calibrate_batchnorm, Encoder, MaggotUBAConfig
from maggotuba.models.compat import load_published_encoder
from taggingbackends.simulate import SimulationConfig, simulate

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "data" / "maggotuba_published"
BATCH_SIZES = (32, 64, 128, 256, 512, 1024, 4096)


# ------------------------------------------------------------------ machine
def cpu_description() -> str:
    name, flags = platform.processor() or "?", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and name in ("?", "x86_64", ""):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    return f"{name}; flags: {' '.join(f for f in wanted if f in flags) or '?'}"


def n_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def matmul_peak(dtype: torch.dtype, sizes=(2048, 4096), repeat: int = 5) -> tuple[float, int]:
    """Best FLOP/s of torch.matmul on square matrices (and the size that gave it)."""
    best, best_n = 0.0, 0
    g = torch.Generator().manual_seed(0)
    for n in sizes:
        a = torch.randn(n, n, generator=g).to(dtype)
        b = torch.randn(n, n, generator=g).to(dtype)
        c = torch.empty(n, n, dtype=dtype)
        torch.matmul(a, b, out=c)
        for _ in range(repeat):
            t0 = time.perf_counter()
            torch.matmul(a, b, out=c)
            rate = 2 * n ** 3 / (time.perf_counter() - t0)
            if rate > best:
                best, best_n = rate, n
    return best, best_n


def encoder_macs(config: MaggotUBAConfig) -> int:
    """Multiply-adds per window of the encoder (convs over the padded grid + Linear)."""
    H, T = config.n_points, config.len_traj
    channels = [2] + list(config.enc_filters)
    macs = sum(c_out * c_in * kh * kw * H * T
               for c_in, c_out, (kh, kw) in zip(channels[:-1], channels[1:], config.enc_kernel))
    return macs + channels[-1] * H * T * config.dim_latent


# ------------------------------------------------------------------ timing
def throughput(fn, data: np.ndarray | torch.Tensor, batch: int, total: int, repeat: int) -> float:
    """Best windows/s of ``fn`` over ``total`` windows fed in calls of ``batch``."""
    calls = max(1, total // batch)
    chunks = [data[(i * batch) % (len(data) - batch + 1):][:batch] for i in range(calls)]
    fn(chunks[0])  # warm-up (allocations, oneDNN primitive creation)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for chunk in chunks:
            fn(chunk)
        best = min(best, time.perf_counter() - t0)
    return calls * batch / best


def torch_module_fn(module: torch.nn.Module, autocast: bool = False, dtype=None):
    def run(x: torch.Tensor):
        with torch.inference_mode():
            if dtype is not None:
                x = x.to(dtype)
            if autocast:
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return module(x)
            return module(x)
    return run


def fresh_process_plain(batch: int, total: int, repeat: int, threads: int) -> float:
    """The plain Encoder's windows/s measured in a new Python process.

    In a long-lived process glibc raises its mmap threshold after big blocks are freed (the
    peak test does that), and the plain encoder's per-call intermediates (tens of MB) are
    then recycled from the heap; a fresh process mmaps and page-faults them on every call.
    The fast path preallocates its buffers and is not affected.
    """
    code = (
        "import sys, torch; sys.path.insert(0, sys.argv[1]);"
        "import encoder_benchmark as eb;"
        "torch.set_num_threads(int(sys.argv[5]));"
        "enc, _ = eb.load_published_encoder(eb.FIXTURE);"
        "x = 0.3 * torch.randn(int(sys.argv[3]) + int(sys.argv[2]), 2, 5, 20);"
        "print(eb.throughput(eb.torch_module_fn(enc), x, int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(Path(__file__).resolve().parent), str(batch),
                          str(total), str(repeat), str(threads)], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ agreement
def calibrated_random_encoder(seed: int = 0) -> Encoder:
    """Random Kaiming weights, BN running statistics from train-mode passes, random affine."""
    torch.manual_seed(seed)
    return calibrate_batchnorm(Encoder(MaggotUBAConfig()), (2, 5, 20), seed=seed)


def head_agreement(ref: np.ndarray, got: np.ndarray, standardise: bool, heads: int = 100,
                   classes: int = 8) -> tuple[float, float]:
    """Mean and worst % of equal argmax labels over random linear heads."""
    if standardise:
        mu, sd = ref.mean(0), ref.std(0) + 1e-12
        ref, got = (ref - mu) / sd, (got - mu) / sd
    g = np.random.default_rng(1)
    scores = []
    for _ in range(heads):
        w = g.standard_normal((ref.shape[1], classes))
        b = 0.1 * g.standard_normal(classes)
        scores.append(np.mean((ref @ w + b).argmax(1) == (got @ w + b).argmax(1)))
    return 100 * float(np.mean(scores)), 100 * float(np.min(scores))


def simulated_windows(n_larvae: int, duration: float) -> np.ndarray:
    run = simulate(SimulationConfig(n_larvae=n_larvae, duration=duration, seed=0)).run
    data = np.concatenate([w.data for w in iter_windows(run, WindowSpec(), 4096)])
    return data[np.isfinite(data).all(axis=(1, 2, 3))]


# ------------------------------------------------------------------ main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--repeat", type=int, default=3, help="timing repeats (best is kept)")
    parser.add_argument("--windows", type=int, default=8192, help="windows per timing (fp32 fast path)")
    parser.add_argument("--quick", action="store_true", help="fewer windows and repeats")
    args = parser.parse_args()
    threads = args.threads or n_cores()
    torch.set_num_threads(threads)
    repeat = 2 if args.quick else args.repeat
    total_fast = 2048 if args.quick else args.windows
    total_slow = max(1024, total_fast // 2)  # the slow paths get fewer windows

    encoder, config = load_published_encoder(FIXTURE)
    macs = encoder_macs(config)
    flop = 2 * macs
    print(f"CPU: {cpu_description()}")
    print(f"torch {torch.__version__}, {threads} threads ({n_cores()} cores available), "
          f"oneDNN bf16: {torch.backends.mkldnn.is_available()}")
    print(f"encoder: filters {config.enc_filters}, kernels {[tuple(k) for k in config.enc_kernel]}, "
          f"len_traj {config.len_traj}, dim_latent {config.dim_latent}: "
          f"{macs / 1e6:.1f} M multiply-adds = {flop / 1e6:.1f} MFLOP per window")

    peak, peak_n = matmul_peak(torch.float32, repeat=repeat + 2)
    peak_bf16, peak_bf16_n = matmul_peak(torch.bfloat16, repeat=repeat + 2)
    limit = peak / flop
    print(f"\n(1) fp32 matmul peak: {peak / 1e9:.0f} GFLOP/s (square {peak_n}, best of {repeat + 2}); "
          f"bf16 matmul peak: {peak_bf16 / 1e9:.0f} GFLOP/s (square {peak_bf16_n})")
    print(f"(2) fp32 limit: {peak / 1e9:.0f} GFLOP/s / {flop / 1e6:.1f} MFLOP = {limit:.0f} windows/s "
          f"(bf16 matmul peak would allow {peak_bf16 / flop:.0f} windows/s)")

    # ---------------------------------------------------------- fp32 table
    g = torch.Generator().manual_seed(0)
    data_t = 0.3 * torch.randn(max(BATCH_SIZES) * 2, 2, 5, config.len_traj, generator=g)
    data_np = data_t.numpy()
    fused = encoder.fused()
    fast = FastEncoder(encoder, precision="fp32", threads=threads)
    print(f"\n(3) fp32 windows/s (share of the fp32 limit) per batch size; "
          f"'fast' = maggotuba.inference.FastEncoder (sub-batches of {best_batch_size}), "
          f"'fast 1 chunk' = same GEMM chain on the whole batch at once")
    header = f"{'batch':>6s} {'plain Encoder':>16s} {'FusedEncoder':>16s} {'fast':>16s} {'fast 1 chunk':>16s}"
    print(header)
    best = {"plain": (0.0, 0), "fused": (0.0, 0), "fast": (0.0, 0)}
    for bs in BATCH_SIZES:
        one_chunk = FastEncoder(encoder, precision="fp32", threads=threads, batch_size=bs)
        row = {
            "plain": throughput(torch_module_fn(encoder), data_t, bs, max(bs, total_slow), repeat),
            "fused": throughput(torch_module_fn(fused), data_t, bs, max(bs, total_slow), repeat),
            "fast": throughput(fast, data_np, bs, max(bs, total_fast), repeat),
            "chunk": throughput(one_chunk, data_np, bs, max(bs, total_fast), repeat),
        }
        for key in best:
            if row[key] > best[key][0]:
                best[key] = (row[key], bs)
        cells = " ".join(f"{row[k]:9.0f} ({100 * row[k] / limit:3.0f}%)" for k in ("plain", "fused", "fast", "chunk"))
        print(f"{bs:6d} {cells}")
    for key, label in (("plain", "plain Encoder"), ("fused", "FusedEncoder"), ("fast", "fast fp32")):
        rate, bs = best[key]
        print(f"best {label:14s}: {rate:7.0f} windows/s at batch {bs:5d} = {100 * rate / limit:5.1f}% of the fp32 limit")
    fresh = {bs: fresh_process_plain(bs, max(bs, total_slow), repeat, threads) for bs in (128, 256)}
    print("plain Encoder in a fresh process (cold malloc, see fresh_process_plain): "
          + ", ".join(f"{rate:.0f} windows/s ({100 * rate / limit:.0f}%) at batch {bs}" for bs, rate in fresh.items()))
    fp32_default, fp32_best = best["plain"][0], best["fast"][0]
    print(f"fast fp32 / plain fp32 (best batch each): {fp32_best / fp32_default:.2f}x; "
          f"target >= 65% of the limit: {'met' if fp32_best >= 0.65 * limit else 'NOT met'}")

    # ---------------------------------------------------------- reduced precision
    print("\n(4) reduced precision (bf16); windows/s at batch 256 and 4096, ratios to the best fp32 "
          "fast path and to the best plain fp32 Encoder")
    sim = simulated_windows(30, 90.0 if args.quick else 240.0)
    rnd = calibrated_random_encoder()
    rnd_x = (0.3 + 1.5 * torch.randn(10000, 2, 5, 20, generator=torch.Generator().manual_seed(5))).numpy()
    with torch.inference_mode():
        refs = {"pub": encoder(torch.from_numpy(sim)).numpy(), "rnd": rnd(torch.from_numpy(rnd_x)).numpy()}
    fused_bf16 = copy.deepcopy(fused).to(torch.bfloat16)

    def bf16_variants(enc: Encoder):
        fz = enc.fused()
        fzb = copy.deepcopy(fz).to(torch.bfloat16)
        return {
            "plain + autocast bf16": lambda x: torch_module_fn(enc, autocast=True)(torch.from_numpy(x)).float().numpy(),
            "FusedEncoder in bf16": lambda x: torch_module_fn(fzb, dtype=torch.bfloat16)(torch.from_numpy(x)).float().numpy(),
            "fast bf16": FastEncoder(enc, precision="bf16", threads=threads),
            "fast bf16-full": FastEncoder(enc, precision="bf16-full", threads=threads),
        }

    timed = {
        "plain + autocast bf16": lambda x: torch_module_fn(encoder, autocast=True)(x),
        "FusedEncoder in bf16": torch_module_fn(fused_bf16, dtype=torch.bfloat16),
        "fast bf16": FastEncoder(encoder, precision="bf16", threads=threads),
        "fast bf16-full": FastEncoder(encoder, precision="bf16-full", threads=threads),
    }
    pub_variants, rnd_variants = bf16_variants(encoder), bf16_variants(rnd)
    print(f"{'variant':22s} {'w/s @256':>9s} {'w/s @4096':>9s} {'/fp32 fast':>10s} {'/plain fp32':>11s}  "
          f"{'max|diff|':>9s} {'raw head % equal':>17s} {'std head % equal':>17s}   (mean / worst of 100 heads)")
    summary = {}
    for name, fn in timed.items():
        is_fast = name.startswith("fast")
        data = data_np if is_fast else data_t
        total = total_fast if is_fast else total_slow
        rates = [throughput(fn, data, bs, max(bs, total), repeat) for bs in (256, 4096)]
        rate = max(rates)
        for tag, variants, x in (("published encoder, simulated windows", pub_variants, sim),
                                 ("random encoder, random windows", rnd_variants, rnd_x)):
            ref = refs["pub" if variants is pub_variants else "rnd"]
            got = variants[name](x)
            diff = float(np.abs(got - ref).max())
            raw, std = head_agreement(ref, got, False), head_agreement(ref, got, True)
            if variants is pub_variants:
                print(f"{name:22s} {rates[0]:9.0f} {rates[1]:9.0f} {rate / fp32_best:9.2f}x {rate / fp32_default:10.2f}x  "
                      f"{diff:9.2e} {raw[0]:8.2f} / {raw[1]:6.2f} {std[0]:8.2f} / {std[1]:6.2f}   [{tag}]")
                summary[name] = (rate, raw, std)
            else:
                print(f"{'':22s} {'':9s} {'':9s} {'':10s} {'':11s}  "
                      f"{diff:9.2e} {raw[0]:8.2f} / {raw[1]:6.2f} {std[0]:8.2f} / {std[1]:6.2f}   [{tag}]")
    print(f"(published encoder: {len(sim)} simulated windows, embeddings up to {np.abs(refs['pub']).max():.2f}; "
          f"random encoder: {len(rnd_x)} windows, embeddings up to {np.abs(refs['rnd']).max():.2f})")
    for name in ("fast bf16", "fast bf16-full"):
        rate, raw, std = summary[name]
        ok = rate >= 2 * fp32_default and raw[0] >= 99.5
        print(f"target bf16 >= 2x plain fp32 and >= 99.5% labels equal (raw head, published encoder): "
              f"{name}: {rate / fp32_default:.1f}x, {raw[0]:.2f}% -> {'met' if ok else 'NOT met'}")

    # ---------------------------------------------------------- exactness
    print("\n(5) exactness of the fp32 fast path")
    windows = np.load(FIXTURE / "windows.npy")
    original = np.load(FIXTURE / "embeddings.npy")
    got = fast(windows)
    print(f"published fixture: max|fast - original MaggotUBA embeddings| = {np.abs(got - original).max():.2e}; "
          f"max|fast - plain| on {len(sim)} simulated windows = "
          f"{np.abs(fast(sim) - refs['pub']).max():.2e}")
    x = rnd_x[:2000]
    fast_rnd = FastEncoder(rnd, threads=threads)
    with torch.inference_mode():
        truth = copy.deepcopy(rnd).double()(torch.from_numpy(x).double()).numpy()
    plain_rnd = refs["rnd"][:2000]
    got = fast_rnd(x)
    print(f"random encoder, 2000 windows (embeddings up to {np.abs(truth).max():.1f}): max|fast - plain| = "
          f"{np.abs(got - plain_rnd).max():.2e}, max|fast - float64| = {np.abs(got - truth).max():.2e}, "
          f"max|plain - float64| = {np.abs(plain_rnd - truth).max():.2e}")
    print(f"deterministic (two calls bit-identical): fp32 {np.array_equal(got, fast_rnd(x))}, "
          f"bf16 {np.array_equal(pub_variants['fast bf16'](sim), pub_variants['fast bf16'](sim))}")


if __name__ == "__main__":
    main()
