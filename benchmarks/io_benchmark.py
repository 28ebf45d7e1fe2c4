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

The Choreography pair is also parsed by the alternatives to today's reader
(chunked ``numpy.loadtxt``): pandas' C engine and pyarrow (``pyarrow.csv`` for the
fixed-width ``.spine``, ``pyarrow.compute`` split + cast for the ragged ``.outline``),
each with its time, MB/s, ratio to today's reader and peak memory, in the same run.

Usage: python benchmarks/io_benchmark.py [--repeat 3] [--larvae 337] [--steps 134186]
       python benchmarks/io_benchmark.py --chore-parsers PAIR.spine [--repeat 3]  (parsers only)
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


# ------------------------------------------- Choreography text parsers side by side
def chore_pair_max_fields(path: Path) -> int:
    """Most fields on a line (pandas needs the column count of ragged .outline files)."""
    with open(path, "rb") as handle:
        return max(line.count(b" ") + 1 for line in handle)


def parse_pair_pandas(spine: Path) -> tuple:
    """pandas' C engine: both files to float arrays (ragged outline rows padded with NaN)."""
    import pandas as pd

    out = []
    for path in (spine, spine.with_suffix(".outline")):
        width = chore_pair_max_fields(path) if path.suffix == ".outline" else 25
        frame = pd.read_csv(path, sep=" ", header=None, engine="c", names=range(width), low_memory=False,
                            usecols=range(1, width), dtype=np.float64)
        out.append(frame.to_numpy())
    return tuple(out)


def parse_pair_pyarrow(spine: Path) -> tuple:
    """pyarrow: the fixed-width .spine by ``pyarrow.csv`` (multi-threaded), the ragged
    .outline (which ``pyarrow.csv`` refuses) as one string column split into tokens and
    cast to float64 by ``pyarrow.compute``."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    table = pacsv.read_csv(spine, read_options=pacsv.ReadOptions(autogenerate_column_names=True),
                           parse_options=pacsv.ParseOptions(delimiter=" "),
                           convert_options=pacsv.ConvertOptions(
                               column_types={f"f{i}": pa.float64() for i in range(1, 25)},
                               include_columns=[f"f{i}" for i in range(1, 25)]))
    spine_values = np.column_stack([table[c].to_numpy() for c in table.column_names])
    lines = pacsv.read_csv(spine.with_suffix(".outline"), read_options=pacsv.ReadOptions(column_names=["l"]),
                           parse_options=pacsv.ParseOptions(delimiter="\x01", quote_char=False),
                           convert_options=pacsv.ConvertOptions(column_types={"l": pa.string()}))["l"]
    tokens = pc.split_pattern(lines.combine_chunks(), " ")
    lengths = pc.list_value_length(tokens).to_numpy()
    first = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    keep = np.ones(int(lengths.sum()), dtype=bool)
    keep[first] = False  # the date_time column
    values = pc.cast(pc.list_flatten(tokens).filter(pa.array(keep)), pa.float64()).to_numpy()
    return spine_values, values


def parse_pair_ours(spine: Path):
    """Today's reader (chunked ``numpy.loadtxt``), the whole Run."""
    return load(spine)


PARSERS = {"ours (numpy.loadtxt, chunked)": parse_pair_ours, "pandas C engine": parse_pair_pandas,
           "pyarrow.csv + compute": parse_pair_pyarrow}


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

parser = load
if len(sys.argv) > 2:  # a parser of benchmarks/io_benchmark.py, by name
    sys.path.insert(0, sys.argv[3])
    import pandas, pyarrow.csv, pyarrow.compute  # (imports are not part of a read)
    from io_benchmark import PARSERS
    parser = PARSERS[sys.argv[2]]
base = rss_anon()
sampler = threading.Thread(target=sample)
sampler.start()
if parser is load:  # (tracemalloc makes pandas' C parser crawl, and misses pyarrow's heap)
    tracemalloc.start()
run = parser(__import__("pathlib").Path(sys.argv[1]))
heap = tracemalloc.get_traced_memory()[1]
done.set()
sampler.join()
print(max(peak[0], rss_anon()) - base, heap, getattr(run, "nbytes", 0))
"""


def peak_memory(path: Path, parser: str | None = None, nbytes: int | None = None) -> tuple[float, float]:
    """Peak memory of one read in a fresh process, as multiples of the returned arrays
    (``nbytes``: of the Run our reader returns, for the other ``parser``s):
    (rise of anonymous resident memory sampled every 2 ms, tracemalloc heap peak, 0 for
    the other parsers: tracemalloc makes pandas crawl and misses pyarrow). File pages a reader maps are page cache, not
    allocations, and are not counted."""
    extra = [parser, str(Path(__file__).parent)] if parser else []
    out = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, str(path), *extra], check=True,
                         capture_output=True, text=True).stdout.split()
    rss, heap, returned = (int(x) for x in out)
    nbytes = nbytes or returned
    return rss / nbytes, heap / nbytes


def h5py_floor(path: Path) -> None:
    """Naive h5py: dereference and read every field of every larva (no assembly)."""
    import h5py

    with h5py.File(path, "r") as f:
        trx = f["trx"]
        for name in trx:
            for ref in trx[name][()].ravel():
                f[ref][()]


def compare_chore_parsers(spine: Path, repeat: int) -> None:
    """Time and peak memory of each Choreography parser on the same pair, printed."""
    mb = (spine.stat().st_size + spine.with_suffix(".outline").stat().st_size) / 1e6
    run_bytes = load(spine).nbytes
    print(f"\nChoreography .spine+.outline ({mb:.1f} MB of text), parsed side by side in this run "
          "(ratio = time of today's reader / time; peak = rise of anonymous RSS as a multiple of the "
          "Run's arrays; the alternatives only parse the numbers, building the Run comes on top):")
    today = None
    for name, parser in PARSERS.items():
        seconds = best_of(repeat, lambda: parser(spine))
        today = today or seconds
        peak = peak_memory(spine, name, run_bytes)[0]
        print(f"  {name:30s} {seconds:7.3f} s {mb / seconds:7.1f} MB/s  x{today / seconds:4.2f}  "
              f"peak {peak:.2f}x", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--larvae", type=int, default=337)
    parser.add_argument("--steps", type=int, default=134186)
    parser.add_argument("--chore-parsers", type=Path, metavar="SPINE",
                        help="only compare the Choreography parsers, on this existing .spine (+ .outline)")
    args = parser.parse_args()
    if args.chore_parsers:
        compare_chore_parsers(args.chore_parsers, args.repeat)
        return

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

        compare_chore_parsers(spine, args.repeat)

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
