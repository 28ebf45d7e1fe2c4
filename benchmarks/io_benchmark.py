"""Read/write speed and peak memory of the tracking readers and `.label` I/O.

A t15-size run (337 larvae, ~134,000 larva-steps, 11-point spines, contours,
25 behaviour flags) is generated, written as trx.mat (v7.3) and as a
Choreography `.spine` + `.outline` pair, then read back; a `.label` file of the
same size is written and read. Figures are printed, never asserted.

Baselines measured in the same run give ratios: for trx.mat, naive h5py
(dereference and read every field of every larva); for Choreography, reading
the raw bytes of both files (the I/O floor) and ``numpy.loadtxt`` of the
`.spine` alone; for `.label`, plain ``json.dumps``/``json.loads`` of the same
document.

Peak memory is measured in a fresh subprocess per reader: the rise of
anonymous resident memory (sampled every 2 ms) and the tracemalloc heap peak,
both divided by the size of the arrays the reader returns. Pages of the input
file that a reader memory-maps are page cache, not allocations, and are not
counted.

Usage: python benchmarks/io_benchmark.py [--repeat 3] [--larvae 337] [--steps 134186]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from taggingbackends.data.labels import Labels
from taggingbackends.data.tracks import Run
from taggingbackends.formats import load, save

TRX_FLAGS = tuple(f"{action}{suffix}" for action in ("back", "cast", "hunch", "roll", "run", "stop")
                  for suffix in ("", "_large", "_strong", "_weak")) + ("small_motion",)


def t15_like_run(n_larvae: int, n_steps: int, seed: int = 0) -> Run:
    """Random but plausible geometry at t15 size: what matters here is the size."""
    rng = np.random.default_rng(seed)
    # every track gets 20 steps, the rest is shared out at random (exact total)
    weights = rng.gamma(1.0, size=n_larvae)
    lengths = 20 + rng.multinomial(n_steps - 20 * n_larvae, weights / weights.sum())
    times, spines, outlines, tags = [], [], [], []
    for n in lengths:
        t0 = rng.uniform(3.675, 60.0)
        dt = rng.normal(0.089, 0.01, size=n).clip(0.06, 0.2)
        times.append(np.round(t0 + np.cumsum(dt), 3))
        centre = np.cumsum(rng.normal(0, 0.05, size=(n, 2)), axis=0) + rng.uniform(-50, 50, 2)
        along = np.linspace(-2, 2, 11)
        spine = centre[:, None, :] + np.stack([along, 0.1 * np.sin(along)], axis=1)[None]
        spines.append(spine + rng.normal(0, 0.01, size=spine.shape))
        vertices = int(rng.integers(30, 50))
        angle = np.linspace(0, 2 * np.pi, vertices, endpoint=False)
        ring = np.stack([2.2 * np.cos(angle), 0.5 * np.sin(angle)], axis=1)
        outlines.append((centre[:, None, :] + ring[None]).astype(np.float32))
        flags = np.zeros((n, len(TRX_FLAGS)), dtype=bool)
        flags[np.arange(n), rng.integers(0, len(TRX_FLAGS), size=n)] = True
        tags.append(flags)
    return Run.from_tracks("20150701_105504", np.arange(1, n_larvae + 1), times, spines,
                           outlines=outlines, tags=tags, tag_names=TRX_FLAGS,
                           metadata={"tracker": "t15"})


def best_of(repeat: int, func) -> float:
    timings = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        timings.append(time.perf_counter() - start)
    return min(timings)


_PEAK_SCRIPT = """
import sys, threading, time, tracemalloc
from taggingbackends.formats import load
import numpy, h5py, scipy.io

def rss_anon():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon"):
                return int(line.split()[1]) * 1024
    return 0

peak, done = [0], threading.Event()
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], rss_anon())
        time.sleep(0.002)

base = rss_anon()
sampler = threading.Thread(target=sample)
sampler.start()
tracemalloc.start()
run = load(sys.argv[1])
heap = tracemalloc.get_traced_memory()[1]
done.set()
sampler.join()
print(max(peak[0], rss_anon()) - base, heap, run.nbytes)
"""


def peak_memory(path: Path) -> tuple[float, float]:
    """Peak memory of one read in a fresh process, as multiples of the returned arrays:
    (rise of anonymous resident memory sampled every 2 ms, tracemalloc heap peak).
    File pages the reader maps are not counted: they are page cache, not allocations."""
    out = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, str(path)], check=True,
                         capture_output=True, text=True).stdout.split()
    rss, heap, nbytes = (int(x) for x in out)
    return rss / nbytes, heap / nbytes


def h5py_floor(path: Path) -> None:
    """Naive h5py: dereference and read every field of every larva (no assembly)."""
    import h5py

    with h5py.File(path, "r") as f:
        trx = f["trx"]
        for name in trx:
            for ref in trx[name][()].ravel():
                f[ref][()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--larvae", type=int, default=337)
    parser.add_argument("--steps", type=int, default=134186)
    args = parser.parse_args()

    run = t15_like_run(args.larvae, args.steps)
    print(f"run: {run.n_tracks} larvae, {run.n_steps} larva-steps, arrays {run.nbytes / 1e6:.1f} MB")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        trx = tmp / "trx.mat"
        spine = tmp / "20150701_105504@FCF_attP2@UAS_TNT@t15@r_LED50_30s2x15s30s#n#n#n@100.spine"
        save(run, trx)
        save(run, spine)
        outline = spine.with_suffix(".outline")
        size_mb = {"trx.mat": trx.stat().st_size / 1e6,
                   ".spine+.outline": (spine.stat().st_size + outline.stat().st_size) / 1e6}

        t_trx = best_of(args.repeat, lambda: load(trx))
        t_h5 = best_of(args.repeat, lambda: h5py_floor(trx))
        rows.append(("read trx.mat (v7.3)", t_trx, 1.0,
                     f"h5py reading every field of every larva: {t_h5:.2f} s "
                     f"({t_h5 / t_trx:.1f}x our time)", peak_memory(trx)))

        t_chore = best_of(args.repeat, lambda: load(spine))
        t_bytes = best_of(args.repeat, lambda: (spine.read_bytes(), outline.read_bytes()))
        t_loadtxt = best_of(1, lambda: np.loadtxt(spine, usecols=range(1, 25)))
        # float parsing bounds this reader: compare text throughput with numpy's C tokenizer
        ours_mb_s = size_mb[".spine+.outline"] / t_chore
        loadtxt_mb_s = spine.stat().st_size / 1e6 / t_loadtxt
        rows.append(("read .spine+.outline", t_chore, 2.0,
                     f"raw bytes of both files {t_bytes:.2f} s; np.loadtxt of the .spine alone "
                     f"{t_loadtxt:.2f} s ({loadtxt_mb_s:.0f} MB/s of text; ours {ours_mb_s:.0f} MB/s, "
                     f"{ours_mb_s / loadtxt_mb_s:.2f}x)", peak_memory(spine)))

        labels = Labels.from_run(run, tracking=[trx])
        label_path = tmp / "predicted.label"
        t_dump = best_of(args.repeat, lambda: labels.dump(label_path))
        document = labels.to_dict(base_dir=tmp)
        t_json_dump = best_of(args.repeat, lambda: json.dumps(document))
        rows.append(("write .label", t_dump, 1.0,
                     f"json.dumps alone {t_json_dump:.2f} s (ratio {t_dump / t_json_dump:.1f}; "
                     "includes SHA-1 of trx.mat)", None))
        t_load = best_of(args.repeat, lambda: Labels.load(label_path))
        text = label_path.read_text()
        t_json_load = best_of(args.repeat, lambda: json.loads(text))
        rows.append(("read .label", t_load, 1.0,
                     f"json.loads alone {t_json_load:.2f} s (ratio {t_load / t_json_load:.1f}; "
                     "includes SHA-1 check)", None))
        label_mb = label_path.stat().st_size / 1e6

    print(f"files: trx.mat {size_mb['trx.mat']:.1f} MB, .spine+.outline "
          f"{size_mb['.spine+.outline']:.1f} MB, .label {label_mb:.1f} MB")
    print("peak memory = rise of anonymous RSS / tracemalloc heap peak, as multiples of the "
          "returned arrays (target < 3x)")
    print(f"{'operation':24s} {'seconds':>8s} {'target':>7s} {'peak (rss/heap)':>16s}  baseline")
    for name, seconds, target, note, peak in rows:
        peak_text = f"{peak[0]:.2f}x/{peak[1]:.2f}x" if peak is not None else "-"
        status = "ok" if seconds < target else "SLOW"
        print(f"{name:24s} {seconds:8.3f} {'<' + str(target):>7s} {peak_text:>16s}  {status}; {note}")


if __name__ == "__main__":
    main()
