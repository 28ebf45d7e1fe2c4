"""Fast fine-tuning vs today's 1000,1000-iteration fine-tune, side by side.

    PYTHONPATH=src nice python benchmarks/finetune_benchmark.py [--larvae 10,20] [--work DIR]

On a held-out synthetic recording the shipped default never saw (see
``loop_common.py``: 20 Hz, noisier rig, natural base rates, 60 larvae of up to 120 s,
written as trx.mat and read back), the true labels of the first 10 (20) larvae are
written to a `.label` file and the default is fine-tuned on it from the command line,
as a user would:

* today:  ``tagging-backend finetune train10.label -O today10 --full`` (= ``--iterations 1000,1000``)
* fast:   ``tagging-backend finetune train10.label -O fast10`` (the new default)

Each run's wall-clock and CPU seconds (the whole command: start-up, data, training,
saving) are measured; every tagger is scored on larvae 31-60 of the recording (never
trained on): macro-F1, its gain over the shipped default, the fast/today ratio of the
gains, and per-class F1 (weak classes first). The machine's load average is printed
with the figures: on a shared machine wall time grows with the load, CPU time much less.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from loop_common import Evaluator, make_domain, temp_dir, write_labels  # noqa: E402

CLI = [sys.executable, "-m", "taggingbackends.cli"]


def run_cli(*args) -> tuple[float, float]:
    """Run a tagging-backend command; (wall, CPU) seconds of the child."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    tick = time.perf_counter()
    result = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True)
    wall = time.perf_counter() - tick
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, args))} failed:\n{result.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--larvae", default="10,20", help="training larvae counts (comma-separated)")
    parser.add_argument("--seed", type=int, default=7000, help="simulation seed of the held-out recording")
    parser.add_argument("--work", type=Path, default=None, help="working directory (default: a temporary one)")
    parser.add_argument("--skip-today", action="store_true", help="only the fast fine-tune")
    args = parser.parse_args(argv)
    from maggotuba.backend import resolve_model
    from maggotuba.instances import load_tagger

    work = args.work or temp_dir("finetune-benchmark-")
    work.mkdir(parents=True, exist_ok=True)
    domain = make_domain(work / "recording", seed=args.seed)
    base = load_tagger(resolve_model("default"))
    evaluate = Evaluator(domain, domain.rows(domain.larvae[30:]), base.spec)
    baseline = evaluate(base.model)
    print(f"held-out recording: {domain.run.n_tracks} larvae, {domain.run.n_steps} steps; "
          f"scored on larvae 31-60 ({len(evaluate.rows)} steps); shipped default macro-F1 "
          f"{baseline['macro_f1']:.3f}", flush=True)
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    modes = ["fast"] if args.skip_today else ["today", "fast"]
    results: dict = {}
    for n in (int(x) for x in args.larvae.split(",")):
        labelled = np.zeros(domain.run.n_steps, dtype=bool)
        labelled[domain.rows(domain.larvae[:n])] = True
        label_file = write_labels(domain, work / f"train{n}.label", domain.truth, labelled)
        for mode in modes:
            name = f"{mode}{n}"
            flags = ["--full"] if mode == "today" else []
            load = os.getloadavg()[0]
            models = work / "models" / f"{name}-{time.strftime('%H%M%S')}"  # finetune never overwrites
            wall, cpu = run_cli("finetune", label_file, "-m", "default", "-O", name, "--models-dir", models,
                                *flags)
            model_dir = models / name
            score = evaluate(model_dir)
            results[(n, mode)] = dict(wall=wall, cpu=cpu, load=load, **score)
            print(f"  {n} larvae, {mode}: {wall:.0f} s wall, {cpu:.0f} s CPU (load {load:.1f}), "
                  f"macro-F1 {score['macro_f1']:.3f}", flush=True)
    _report(results, baseline, modes)
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


def _report(results: dict, baseline: dict, modes: list[str]) -> None:
    print("\nlarvae  mode   wall s  CPU s  load  macro-F1  gain    fast/today gain")
    for (n, mode), r in sorted(results.items(), key=lambda kv: (kv[0][0], modes.index(kv[0][1]))):
        gain = r["macro_f1"] - baseline["macro_f1"]
        ratio = ""
        if mode == "fast" and (n, "today") in results:
            today_gain = results[(n, "today")]["macro_f1"] - baseline["macro_f1"]
            ratio = f"{gain / today_gain:6.1%}" if today_gain > 0 else "n/a"
            speed = results[(n, "today")]["wall"] / r["wall"]
            ratio += f"  ({speed:.1f}x faster)"
        print(f"{n:6d}  {mode:5s} {r['wall']:7.0f} {r['cpu']:6.0f} {r['load']:5.1f}  {r['macro_f1']:.3f}  "
              f"{gain:+.3f}  {ratio}")
    weak_first = sorted(baseline["per_class"], key=lambda c: baseline["per_class"][c])
    print("\nper-class F1 (weak classes first)")
    print(f"{'':14s}" + "".join(f"{c:>14s}" for c in weak_first))
    print(f"{'default':14s}" + "".join(f"{baseline['per_class'][c]:14.3f}" for c in weak_first))
    for (n, mode), r in sorted(results.items(), key=lambda kv: (kv[0][0], modes.index(kv[0][1]))):
        print(f"{f'{mode} {n}':14s}" + "".join(f"{r['per_class'].get(c, float('nan')):14.3f}"
                                             for c in weak_first))


if __name__ == "__main__":
    main()
