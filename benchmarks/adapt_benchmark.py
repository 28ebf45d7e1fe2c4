"""Does ``tagging-backend adapt`` (no labels) help on a rig the tagger never saw?

1. **Held-out simulated domain** (``taggingbackends.simulate.domain`` preset ``heldout``, natural
   base rates, written as Choreography / trx.mat files as ``heldout_domain.py`` does). The
   recordings are split in two: ``adapt`` runs on the tracking files of the first half
   (even-numbered recordings; no labels), then ``-m MODEL`` and the adapted instances tag
   (a) the **other** recordings and (b) the adaptation recordings themselves (transductive:
   what a user does). Per-class F1 (weakest first, by the source model) and macro-F1
   against the ground truth, for each variant:

   - ``MODEL``: the source tagger with ``predict``'s default priors (``natural``);
   - ``priors-only``: ``adapt --priors-only`` (EM base rates, same weights);
   - ``adapted``: ``adapt`` (EM base rates + self-trained head), its stored priors;
   - ``adapted+natural``: the same head with ``--priors natural`` (the head's effect alone).
2. **Real tracks** (``../shared/data/schleyer``, free exploration, no labels): share of steps
   per behaviour before and after ``adapt`` on those same tracks, against the biological
   ranges of free exploration.

Every step goes through the command line (``tagging-backend adapt`` / ``predict`` in
subprocesses), as a user runs it.

Run:
    PYTHONPATH=src python benchmarks/adapt_benchmark.py -m default
Options: --larvae N --duration S --seed K (held-out size), --adapt-seed, --confidence,
--data DIR (real tracks), --work DIR (keep files), --skip-real.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from taggingbackends.data.labels import Labels
from taggingbackends.simulate import BEHAVIOURS

from domain_gap import _default_data  # noqa: E402  (benchmarks/ is on sys.path when run as a script)
from heldout_domain import BIOLOGICAL_RANGES, behaviour_name, generate, paired_labels, real_mix  # noqa: E402


def cli(*args: str) -> str:
    """``tagging-backend ARGS`` in a subprocess; its stdout (RuntimeError on failure)."""
    cmd = [sys.executable, "-m", "taggingbackends.cli", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    if proc.returncode != 0:
        raise RuntimeError(f"failed: {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def adapt(model: str, inputs: list[Path], output: Path, extra: list[str]) -> tuple[Path, float]:
    """Adapt ``model`` to ``inputs`` into the instance directory ``output``; (path, seconds)."""
    tick = time.perf_counter()
    cli("adapt", *map(str, inputs), "-m", model, "-O", str(output), "--overwrite", *extra)
    return output, time.perf_counter() - tick


def score(model: str, recordings: list[tuple[Path, Path]], tag: str, priors: str | None = None):
    """Ground-truth and predicted behaviours of every step of ``recordings`` tagged by ``model``."""
    y_true, y_pred = [], []
    for directory, tracking in recordings:
        out = directory / f"{tag}.label"
        cli("predict", str(tracking), "-m", model, "-o", str(out), "--overwrite",
            *(["--priors", priors] if priors else []))
        a, b = paired_labels(Labels.load(directory / "groundtruth.label", verify=False),
                             Labels.load(out, verify=False))
        y_true += a
        y_pred += b
    return y_true, y_pred


def f1_columns(results: dict[str, tuple[list, list]]) -> tuple[str, dict]:
    """Per-class F1 of every variant side by side (rows: weakest first by the first variant)."""
    from sklearn.metrics import f1_score

    first_true = next(iter(results.values()))[0]
    classes = [b for b in BEHAVIOURS if b in set(first_true)]
    table = {name: f1_score(t, p, labels=classes, average=None, zero_division=0)
             for name, (t, p) in results.items()}
    names = list(results)
    width = max(len(n) for n in names) + 1
    lines = [f"{'class':14s} {'share':>6s} " + " ".join(f"{n:>{width}s}" for n in names)]
    for i in np.argsort(table[names[0]]):
        share = 100 * first_true.count(classes[i]) / len(first_true)
        lines.append(f"{classes[i]:14s} {share:5.1f}% " + " ".join(f"{table[n][i]:{width}.3f}" for n in names))
    macro = {n: float(np.mean(table[n])) for n in names}
    lines.append(f"{'macro-F1':14s} {'':6s} " + " ".join(f"{macro[n]:{width}.3f}" for n in names))
    lines.append(f"({len(first_true)} steps, {len(classes)} classes)")
    return "\n".join(lines), macro


def mix_table(mixes: dict[str, dict[str, float]]) -> str:
    names = list(mixes)
    lines = [f"{'class':14s} " + " ".join(f"{n:>16s}" for n in names) + "  free-exploration range"]
    for b in BEHAVIOURS:
        lo, hi = BIOLOGICAL_RANGES.get(b, (None, None))
        cells = []
        for n in names:
            share = mixes[n][b]
            verdict = "" if lo is None else (" ok" if lo <= share <= hi else " OUT")
            cells.append(f"{100 * share:11.2f}%{verdict:4s}")
        rng = "" if lo is None else f"{100 * lo:.1f}-{100 * hi:.1f} %"
        lines.append(f"{b:14s} " + " ".join(cells) + f"  {rng}")
    return "\n".join(lines)


def stored_priors(instance: Path) -> str:
    document = json.loads((instance / "clf_config.json").read_text())
    return ", ".join(f"{behaviour_name(n)} {100 * v:.1f}%" for n, v in document["adapted_priors"].items())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-m", "--model", default="default")
    parser.add_argument("--larvae", type=int, default=48)
    parser.add_argument("--duration", type=float, default=120.0)
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--adapt-seed", type=int, default=0)
    parser.add_argument("--confidence", type=float, default=None, help="adapt --confidence (default: its own)")
    parser.add_argument("--data", type=Path, default=_default_data())
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--skip-real", action="store_true")
    args = parser.parse_args(argv)
    extra = ["--seed", str(args.adapt_seed)] + (["--confidence", str(args.confidence)] if args.confidence else [])

    tick = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        work = (args.work or Path(tmp)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        print(f"held-out domain: {args.larvae} larvae x {args.duration:g} s, seed {args.seed} (files in {work})")
        recordings = generate(work / "heldout", args.larvae, args.duration, args.seed)
        adaptation, other = recordings[0::2], recordings[1::2]
        tracking = [t for _, t in adaptation]
        print(f"adapting {args.model!r} on {', '.join(d.name for d, _ in adaptation)} (no labels); "
              f"judging on {', '.join(d.name for d, _ in other)} and on the adaptation recordings")
        priors_only, seconds_p = adapt(args.model, tracking, work / "models" / "priors-only",
                                       ["--priors-only", *extra])
        adapted, seconds_a = adapt(args.model, tracking, work / "models" / "adapted", extra)
        print(f"adapt: {seconds_p:.0f} s (--priors-only), {seconds_a:.0f} s (with self-training), "
              f"wall clock including start-up")
        print(f"estimated base rates (priors-only): {stored_priors(priors_only)}")
        print(f"estimated base rates (adapted):     {stored_priors(adapted)}")
        variants = [(args.model, args.model, None), ("priors-only", str(priors_only), None),
                    ("adapted", str(adapted), None), ("adapted+natural", str(adapted), "natural")]
        for title, split in (("other recordings (inductive)", other),
                             ("adaptation recordings (transductive)", adaptation)):
            results = {name: score(model, split, f"pred-{name}", priors) for name, model, priors in variants}
            table, _ = f1_columns(results)
            print(f"\n{title}: per-class F1, weakest first (by {args.model!r})")
            print(table)
        if not args.skip_real:
            data = args.data.resolve()
            real_priors, _ = adapt(args.model, [data], work / "models" / "real-priors-only", ["--priors-only", *extra])
            real, _ = adapt(args.model, [data], work / "models" / "real-adapted", extra)
            print(f"\nreal tracks {data}: estimated base rates {stored_priors(real)}")
            mixes = {args.model: real_mix(args.model, data, work / "real" / "source"),
                     "priors-only": real_mix(str(real_priors), data, work / "real" / "priors-only"),
                     "adapted": real_mix(str(real), data, work / "real" / "adapted")}
            print("share of steps per behaviour (adapted on these same tracks):")
            print(mix_table(mixes))
    print(f"time {time.time() - tick:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
