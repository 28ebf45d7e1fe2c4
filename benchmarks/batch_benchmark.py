"""Batch tagging (taggingbackends.batch) on a dask LocalCluster: scaling, overhead, memory.

Prints, in one run:

* files/s and larva-steps/s of `predict` over N copies of a t15-size synthetic run (337
  larvae, 120 s, ~134,000 larva-steps each) with 1 and 2 worker processes (or the
  ``--workers`` list), each as a ratio to one worker (linear = the worker count); the
  wall time includes starting the cluster, as a user sees it;
* the engine's overhead per file: a batch of tiny files (1 larva, 3 s) on one worker,
  (wall time − the time the tasks themselves took) / files, i.e. cluster start, scheduling,
  transfers and the driver's bookkeeping;
* the driver process's peak memory (ru_maxrss) for batches of 10 and 200 tiny files
  (each in a fresh process): flat if inputs are streamed and results not kept.

Every batch runs through the real command (``tagging-backend predict ... --summary``) in a
subprocess. Usage:

    python benchmarks/batch_benchmark.py [--files 8] [--larvae 337] [--duration 120]
        [--workers 1,2] [--tiny 500] [--memory-sizes 10,200]

On a GPU machine add ``--device cuda --workers 1,4,8,16`` (CPU reader workers feeding the GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from taggingbackends.formats import save
from taggingbackends.simulate import SimulationConfig, simulate

CLI = [sys.executable, "-m", "taggingbackends.cli", "--quiet"]
PEAK_SNIPPET = """
import resource, sys
from taggingbackends.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
print("PEAK_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
"""


def make_copies(template: Path, root: Path, count: int) -> list:
    """``count`` folders each holding a copy of ``template`` (hard links where possible)."""
    paths = []
    for k in range(count):
        folder = root / f"run{k:05d}"
        folder.mkdir(parents=True)
        target = folder / "trx.mat"
        try:
            os.link(template, target)
        except OSError:
            shutil.copy(template, target)
        paths.append(target)
    return paths


def write_list(paths: list, list_file: Path) -> Path:
    list_file.write_text("\n".join(str(p) for p in paths) + "\n", encoding="utf-8")
    return list_file


def clean_outputs(paths: list) -> None:
    for path in paths:
        for output in path.parent.glob("predicted*"):
            output.unlink()


def run_batch(list_file: Path, workers: int, summary: Path, device: str) -> dict:
    """One `predict` over the files in ``list_file``; its summary and wall time."""
    command = [*CLI, "predict", str(list_file), "--workers", str(workers), "--summary", str(summary),
               "--device", device]
    tick = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - tick
    if result.returncode != 0:
        raise SystemExit(f"predict failed: {result.stderr[-2000:]}")
    document = json.loads(summary.read_text())
    document["wall"] = wall
    return document


def scaling(root: Path, args) -> None:
    print(f"t15-size file: {args.larvae} larvae, {args.duration:g} s; {args.files} copies")
    run = simulate(SimulationConfig(n_larvae=args.larvae, duration=args.duration, seed=0)).run
    template = root / "t15.mat"
    save(run, template, format="trxmat")
    paths = make_copies(template, root / "t15", args.files)
    list_file = write_list(paths, root / "t15.txt")
    print(f"{run.n_steps:,} larva-steps per file")
    baseline = None
    print(f"{'workers':>8} {'wall s':>8} {'files/s':>8} {'steps/s':>10} {'ratio':>6} {'linear':>6}")
    for workers in args.workers:
        clean_outputs(paths)
        document = run_batch(list_file, workers, root / f"t15-{workers}.json", args.device)
        totals = document["totals"]
        assert totals["done"] == args.files, totals
        steps_per_second = totals["steps"] / document["wall"]
        baseline = baseline or steps_per_second
        print(f"{workers:>8} {document['wall']:>8.1f} {args.files / document['wall']:>8.2f} "
              f"{steps_per_second:>10,.0f} {steps_per_second / baseline:>6.2f} {workers / args.workers[0]:>6.0f}")


def tiny_files(root: Path, count: int) -> list:
    run = simulate(SimulationConfig(n_larvae=1, duration=3.0, seed=1)).run
    template = root / "tiny.mat"
    save(run, template, format="trxmat")
    return make_copies(template, root / "tiny", count)


def overhead(root: Path, paths: list, args) -> None:
    list_file = write_list(paths, root / "tiny.txt")
    document = run_batch(list_file, 1, root / "tiny.json", "cpu")
    task_seconds = sum(record["seconds"] for record in document["files"])
    per_file = (document["wall"] - task_seconds) / len(paths)
    print(f"\noverhead: {len(paths)} tiny files on 1 worker in {document['wall']:.1f} s, tasks themselves "
          f"{task_seconds:.1f} s -> {per_file * 1000:.1f} ms per file (cluster start included)")
    document = run_batch(list_file, 1, root / "tiny-warm.json", "cpu")
    skipped = document["totals"]["skipped"]
    print(f"resume of the same {len(paths)} files (all up to date): {document['wall']:.1f} s, "
          f"{skipped} skipped")


def driver_memory(root: Path, paths: list, sizes: list) -> None:
    print("\ndriver peak memory (ru_maxrss of the `predict` process, 2 workers):")
    for size in sizes:
        subset = paths[:size]
        clean_outputs(subset)
        list_file = write_list(subset, root / f"mem-{size}.txt")
        result = subprocess.run([sys.executable, "-c", PEAK_SNIPPET, "--quiet", "predict", str(list_file),
                                 "--workers", "2"], capture_output=True, text=True)
        peak = [line for line in result.stderr.splitlines() if line.startswith("PEAK_KB")]
        if not peak:
            raise SystemExit(f"no peak reported: {result.stderr[-2000:]}")
        print(f"  N = {size:>5}: {int(peak[0].split()[1]) / 1024:,.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--larvae", type=int, default=337)
    parser.add_argument("--duration", type=float, default=120.0)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--tiny", type=int, default=500)
    parser.add_argument("--memory-sizes", default="10,200")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    args.workers = [int(w) for w in args.workers.split(",")]
    sizes = [int(s) for s in args.memory_sizes.split(",")]
    print(f"{os.cpu_count()} cores visible; device {args.device}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.files:
            scaling(root, args)
        paths = tiny_files(root, max(args.tiny, max(sizes)))
        if args.tiny:
            overhead(root, paths[:args.tiny], args)
        driver_memory(root, paths, sizes)


if __name__ == "__main__":
    main()
