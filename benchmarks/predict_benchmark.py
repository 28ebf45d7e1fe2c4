"""End-to-end `predict` speed with the shipped default tagger on a t15-size run.

Prints, in one run:

* the measured fp32 matrix-multiply peak of this machine and the encoder's
  fp32 limit (peak ÷ 42.3 MFLOP per window);
* end-to-end larva-steps/s of `predict` on a t15-size synthetic run (337
  larvae, ~134,000 larva-steps) for fp32 (default), bf16 and bf16-full, the share of the
  fp32 limit, the time split by stage (read, windows, encoder, classifier,
  post-processing, writing), label agreement of each bf16 variant with fp32, and whether two
  fp32 runs give bit-identical labels;
* peak memory rise during prediction.

With ``--device cuda`` (on a GPU machine) the same for the GPU, large batches.

Usage: python benchmarks/predict_benchmark.py [--device cpu|cuda] [--batch-size N] [--repeat 2]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from maggotuba.backend import SHIPPED
from maggotuba.instances import load_tagger
from maggotuba.predict import predict_run, to_labels
from taggingbackends.formats import load, save
from taggingbackends.simulate import SimulationConfig, simulate

FLOP_PER_WINDOW = 42.3e6


def matmul_peak(device: str, size: int = 4096, repeat: int = 5) -> float:
    """Best fp32 FLOP/s of a square matrix product."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    best = float("inf")
    for _ in range(repeat + 1):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--larvae", type=int, default=337)
    parser.add_argument("--duration", type=float, default=120.0)
    args = parser.parse_args()
    device = args.device
    batch = args.batch_size or (65536 if device.startswith("cuda") else 2048)
    threads = torch.get_num_threads()

    peak = matmul_peak(device)
    limit = peak / FLOP_PER_WINDOW
    print(f"device {device}, torch {torch.__version__}, {threads} threads")
    print(f"fp32 matmul peak {peak / 1e9:.1f} GFLOP/s -> encoder fp32 limit {limit:,.0f} windows/s")

    run = simulate(SimulationConfig(n_larvae=args.larvae, duration=args.duration, seed=0)).run
    saved = load_tagger(SHIPPED / "models" / "default", device=device)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trx.mat"
        save(run, path)
        tick = time.perf_counter()
        run = load(path)
        t_read = time.perf_counter() - tick
        print(f"run: {run.n_tracks} larvae, {run.n_steps} larva-steps; read trx.mat {t_read:.2f} s")

        results = {}
        precisions = ["fp32", "bf16", "bf16-full"]
        if device == "cpu":
            from maggotuba.inference import has_native_bf16

            if not has_native_bf16():
                print("this CPU has no native bf16 (AVX512-BF16/AMX): bf16 skipped (emulated, ~100x slower)")
                precisions = ["fp32"]
        for precision in precisions:
            best, labels_seen = None, []
            for _ in range(args.repeat):
                tick = time.perf_counter()
                prediction = predict_run(saved, run, device=device, precision=precision,
                                         batch_size=batch)
                total = time.perf_counter() - tick
                labels_seen.append(prediction.classes.copy())
                if best is None or total < best[0]:
                    best = (total, prediction)
            total, prediction = best
            tick = time.perf_counter()
            to_labels(prediction, saved).dump(Path(tmp) / f"{precision}.label")
            t_write = time.perf_counter() - tick
            identical = all(np.array_equal(labels_seen[0], x) for x in labels_seen[1:])
            results[precision] = (total, prediction, t_write, identical)

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    base_total = results["fp32"][0]
    print(f"\n{'precision':9s} {'larva-steps/s':>14s} {'% of fp32 limit':>16s} {'vs fp32':>8s}  "
          "stages (s): windows / encoder / classifier / post / write   bit-identical")
    for precision, (total, prediction, t_write, identical) in results.items():
        steps_per_s = run.n_steps / total
        t = prediction.timings
        print(f"{precision:9s} {steps_per_s:14,.0f} {100 * steps_per_s / limit:15.1f}% "
              f"{base_total / total:7.2f}x  {t['windows']:.3f} / {t['encoder']:.3f} / "
              f"{t['classifier']:.3f} / {t['post_processing']:.3f} / {t_write:.3f}   "
              f"{identical}")
    for precision in results:
        if precision != "fp32":
            agreement = float(np.mean(results["fp32"][1].classes == results[precision][1].classes))
            print(f"{precision} labels equal to fp32: {100 * agreement:.2f} %")
    outside = 1 - results["fp32"][1].timings["encoder"] / base_total
    print(f"fp32: time outside the encoder {100 * outside:.1f} % of predict (read and write excluded)")
    print(f"peak resident memory of this process: {rss:.0f} MB")


if __name__ == "__main__":
    sys.exit(main())
