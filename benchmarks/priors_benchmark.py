"""Which ``--priors`` serves users best? The shipped default on fresh natural-mix larvae.

Simulates larvae at natural base rates (the simulator's default mix) with a seed and a
frame rate that ``maggotuba.default_model`` never used (seed 777, 20 Hz by default),
writes them as trx.mat and reads them back, tags them once with the shipped default
(raw probabilities), then for each prior (none, uniform, natural) re-weights, labels
(argmax, ABC→AAC) and scores against the ground truth with
:mod:`taggingbackends.evaluation`. Prints macro-F1, accuracy, bout macro precision and
recall, and per-class precision / recall / F1, weakest classes first.

Each row is what ``tagging-backend predict --priors P`` followed by ``tagging-backend
evaluate`` gives on the same data (same code path: ``resolve_priors``, ``label_steps``).

``--balanced`` measures the other side: data where hunches and rolls are common.

Usage: python benchmarks/priors_benchmark.py [--larvae 40] [--duration 120] [--frame-rate 20]
       [--seeds 777] [--balanced] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from maggotuba.backend import resolve_model
from maggotuba.instances import load_tagger
from maggotuba.predict import label_steps, post_processing_steps, predict_run, resolve_priors, to_labels
from taggingbackends.cli import write_simulation
from taggingbackends.data.labels import Labels
from taggingbackends.evaluation import SIMULATOR_TO_UPSTREAM, LabelledRun, evaluate, weakest_first
from taggingbackends.formats import load
from taggingbackends.simulate import SimulationConfig, balanced_weights, simulate

PRIORS = ("none", "uniform", "natural")


def tagged_runs(saved, seeds, larvae: int, duration: float, frame_rate: float, directory: Path,
                balanced: bool = False):
    """(raw prediction, ground-truth LabelledRun) per seed, via trx.mat files."""
    out = []
    for seed in seeds:
        config = SimulationConfig(n_larvae=larvae, duration=duration, frame_rate=frame_rate, seed=seed)
        if balanced:
            config = replace(config, behaviour_weights=balanced_weights(config))
        result = simulate(config)
        folder = directory / str(seed)
        write_simulation(result, folder, "trxmat")
        run = load(folder / "trx.mat")
        truth = Labels.load(folder / "groundtruth.label")
        out.append((predict_run(saved, run), LabelledRun(truth, folder / "groundtruth.label")))
    return out


def score(saved, runs, choice: str) -> dict:
    priors = resolve_priors(choice, saved)
    steps = post_processing_steps(saved, "label", None)
    pairs = []
    for prediction, truth in runs:
        probabilities = priors.apply(prediction.probabilities)
        classes = label_steps(probabilities, prediction.quality, prediction.run.offsets, edges="label", steps=steps)
        shifted = replace(prediction, classes=classes, probabilities=probabilities)
        pairs.append((LabelledRun(to_labels(shifted, saved, priors=priors), Path(f"{choice}.label")), truth))
    return evaluate(pairs, label_map=SIMULATOR_TO_UPSTREAM)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--larvae", type=int, default=40)
    parser.add_argument("--duration", type=float, default=120.0)
    parser.add_argument("--frame-rate", type=float, default=20.0)
    parser.add_argument("--seeds", default="777", help="comma-separated simulation seeds")
    parser.add_argument("--json", type=Path, default=None, help="write every evaluation here")
    parser.add_argument("--balanced", action="store_true",
                        help="rare behaviours oversampled instead (the cost of natural priors where "
                             "hunches and rolls are common, e.g. under a stimulus)")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    saved = load_tagger(resolve_model(None))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        runs = tagged_runs(saved, seeds, args.larvae, args.duration, args.frame_rate, Path(tmp), args.balanced)
    results = {choice: score(saved, runs, choice) for choice in PRIORS}
    base = results["none"]
    mix = "balanced-mix (rare behaviours oversampled)" if args.balanced else "natural-mix"
    print(f"shipped default on {mix} synthetic larvae: seeds {args.seeds}, {args.larvae} larvae x "
          f"{args.duration:g} s at {args.frame_rate:g} Hz, {base['steps']['compared']} steps "
          f"({time.perf_counter() - started:.0f} s)")
    print(f"{'priors':8} {'macro-F1':>8} {'ratio':>6} {'accuracy':>8} {'bout P':>7} {'bout R':>7}")
    for choice, r in results.items():
        print(f"{choice:8} {r['macro']['f1']:8.3f} {r['macro']['f1'] / base['macro']['f1']:6.2f} "
              f"{r['accuracy']:8.3f} {r['bouts']['macro']['precision']:7.3f} {r['bouts']['macro']['recall']:7.3f}")
    print("\nper class, weakest first (under no priors): precision/recall/F1 ('—' undefined: no support "
          "or never predicted)")
    print(f"{'class':14} {'support':>7} " + " ".join(f"{c:>20}" for c in PRIORS))
    for name in weakest_first(base):
        cells = []
        for choice in PRIORS:
            s = results[choice]["per_class"].get(name, {})
            cells.append("/".join("  — " if s.get(k) is None else f"{s[k]:.2f}"
                                  for k in ("precision", "recall", "f1")))
        print(f"{name:14} {base['per_class'][name]['support']:7d} " + " ".join(f"{c:>20}" for c in cells))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
