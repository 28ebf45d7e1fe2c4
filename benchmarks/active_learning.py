"""The tagging loop, simulated: which corrections lift a tagger most on a new rig?

    PYTHONPATH=src nice python benchmarks/active_learning.py [--budgets 10,30,100] [--seeds 0,1,2]

A user opens the shipped default's prediction of a held-out recording (see
``loop_common.py``: 20 Hz, noisier rig, natural base rates, never seen in training),
corrects N segments (runs of steps with one predicted label): shown a segment, the person
labels the behaviour they see there from its start to its end, i.e. every step of the true
bouts the segment overlaps (a one-step flicker inside a stop gets the whole stop fixed).
A segment already corrected by an earlier fix is skipped (the review queue leaves edited
segments out). They save (the corrected steps carry ``edited``) and fine-tune (``tagging-backend finetune``: fast settings,
``--train-on auto``, so only the corrected steps are trained on). The segments come
from larvae 1-30; the tagger is scored on larvae 31-60.

Two users:

* **ranked**: corrects the N top segments of the review queue
  (:func:`taggingbackends.review.rank_segments`, as ``review`` and the web app build it:
  doubt (low probability of the segment's own label, small margin between the two best
  classes, disagreement with the neighbouring steps, rare predicted class) × log2(1 + steps),
  spread over labels and larvae); ``--spread 1`` ranks without the spread and
  ``--doubt-only`` by the doubt alone (the ranking before the length and spread, for comparison);
* **random**: N segments drawn uniformly among all segments.

Each (user, N, seed) is one fine-tune; the seed drives the random draw and the
fine-tune's batches. Printed: the learning curve (mean and range of macro-F1 over
seeds; corrected steps), the targets (ranked beats random at every N; ranked at 30
reaches random at 100) and per-class F1 at the largest N.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from loop_common import EDITED, Evaluator, make_domain, temp_dir, write_labels  # noqa: E402

from maggotuba.default_model import DEFAULT_LABELS  # noqa: E402
from taggingbackends.data.labels import Labels, TrackLabels  # noqa: E402


# --------------------------------------------------------------- segments
def predicted_labels(domain, rows: np.ndarray, classes: np.ndarray) -> Labels:
    """The prediction of the pool larvae as a Labels object (as ``predict`` writes it)."""
    run = domain.run
    labels = Labels(list(DEFAULT_LABELS), secondarylabels=[EDITED], metadata={"id": run.id})
    track_of = run.track_index[rows]
    for track in np.unique(track_of):
        mine = track_of == track
        labels.tracks[int(run.larva_ids[track])] = TrackLabels(
            run.t[rows[mine]].copy(), [DEFAULT_LABELS[c] for c in classes[mine]])
    return labels


def segments_ranked(labels: Labels, larva_id: np.ndarray, t: np.ndarray, probabilities: np.ndarray,
                    spread: float | None = None, doubt_only: bool = False) -> tuple[list, str]:
    """[(larva, first, last)] most useful to correct first, and which ranking was used."""
    from taggingbackends.review import SPREAD, Probabilities, rank_segments

    spread = SPREAD if spread is None else spread
    ranked = rank_segments(labels, Probabilities(list(DEFAULT_LABELS), larva_id, t, probabilities), spread=spread)
    if doubt_only:
        ranked = sorted(ranked, key=lambda s: (-s.parts["doubt"], s.larva, s.start))
        return [(s.larva, s.first, s.last) for s in ranked], "review doubt alone (no length, no spread)"
    return [(s.larva, s.first, s.last) for s in ranked], f"taggingbackends.review.rank_segments (spread {spread})"


def all_segments(labels: Labels) -> list[tuple[int, int, int]]:
    """Every segment (run of one label) of every larva: (larva, first, last)."""
    out = []
    for larva in sorted(labels.tracks):
        names = labels.tracks[larva].labels
        start = 0
        for i in range(1, len(names) + 1):
            if i == len(names) or names[i] != names[start]:
                out.append((larva, start, i - 1))
                start = i
    return out


# ------------------------------------------------------------- the user
def correct(domain, pool_rows: np.ndarray, predicted: np.ndarray, queue, n: int, path: Path) -> int:
    """Write the prediction of the pool with the first ``n`` segments of ``queue`` corrected
    (true labels + ``edited``), skipping segments already corrected by an earlier fix (as
    the review queue does with edited segments); returns the number of corrected steps."""
    run = domain.run
    classes = np.zeros(run.n_steps, dtype=np.int64)
    classes[pool_rows] = predicted
    edited = np.zeros(run.n_steps, dtype=bool)
    rows_of = {int(run.larva_ids[tr]): pool_rows[run.track_index[pool_rows] == tr]
               for tr in np.unique(run.track_index[pool_rows])}
    done = 0
    for larva, first, last in queue:
        if done == n:
            break
        if edited[rows_of[larva][first:last + 1]].all():
            continue
        rows = _true_bouts(domain.truth, rows_of[larva], first, last)
        classes[rows] = domain.truth[rows]
        edited[rows] = True
        done += 1
    labelled = np.zeros(run.n_steps, dtype=bool)
    labelled[pool_rows] = True
    write_labels(domain, path, classes, labelled, edited)
    return int(edited.sum())


def _true_bouts(truth: np.ndarray, larva_rows: np.ndarray, first: int, last: int) -> np.ndarray:
    """Rows a person fixes when shown the predicted segment ``first..last`` of a larva: the
    whole true bouts it overlaps (they label the behaviour they see, start to end)."""
    labels = truth[larva_rows]
    while first > 0 and labels[first - 1] == labels[first]:
        first -= 1
    while last + 1 < len(labels) and labels[last + 1] == labels[last]:
        last += 1
    return larva_rows[first:last + 1]


#: The tagger the user starts from (``-m``; default: the shipped default).
BASE_MODEL = ["default"]


def finetune(label_file: Path, output: Path, seed: int, **settings) -> Path | None:
    """Fast fine-tune of the base tagger on the corrected steps (None: too few to split)."""
    from maggotuba.backend import TrainOptions, resolve_model, train_instance
    from maggotuba.finetune import FastSettings
    from taggingbackends.errors import TaggingError

    shutil.rmtree(output, ignore_errors=True)
    # the default settings without the time cap: the curve must not depend on the machine's load
    fast = FastSettings(**{"budget_seconds": None, **settings})
    try:
        train_instance([label_file], output, TrainOptions(fast=fast, train_on="auto", seed=seed),
                       start_from=resolve_model(BASE_MODEL[0]))
    except TaggingError as err:
        print(f"    ({label_file.name}: {err}; the default is kept)", flush=True)
        return None
    return output


# ------------------------------------------------------------------ main
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-m", "--model", default="default", help="tagger the user starts from")
    parser.add_argument("--budgets", default="10,30,100", help="segments corrected (comma-separated)")
    parser.add_argument("--seeds", default="0,1,2", help="seeds (random draws and fine-tune batches)")
    parser.add_argument("--recording-seed", type=int, default=7000)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--anchor", type=float, default=None, help="FastSettings.anchor (default: its default)")
    parser.add_argument("--spread", type=float, default=None, help="rank_segments' spread (default: review.SPREAD)")
    parser.add_argument("--doubt-only", action="store_true", help="rank by the doubt alone (the former ranking)")
    args = parser.parse_args(argv)
    settings = {} if args.anchor is None else {"anchor": args.anchor}
    from maggotuba.backend import resolve_model
    from maggotuba.instances import load_tagger

    started = time.perf_counter()
    work = args.work or temp_dir("active-learning-")
    work.mkdir(parents=True, exist_ok=True)
    domain = make_domain(work / "recording", seed=args.recording_seed)
    BASE_MODEL[0] = args.model
    base = load_tagger(resolve_model(args.model))
    pool_rows = domain.rows(domain.larvae[:30])
    evaluate = Evaluator(domain, domain.rows(domain.larvae[30:]), base.spec)
    pool = Evaluator(domain, pool_rows, base.spec)
    probabilities = pool.probabilities(base.model)
    predicted = probabilities.argmax(axis=1)
    labels = predicted_labels(domain, pool_rows, predicted)
    larva_id = domain.run.larva_ids[domain.run.track_index[pool_rows]]
    ranked, how = segments_ranked(labels, larva_id, domain.run.t[pool_rows], probabilities, args.spread,
                                  args.doubt_only)
    everything = all_segments(labels)
    baseline = evaluate(base.model)
    print(f"held-out recording: pool larvae 1-30 ({len(pool_rows)} steps, {len(everything)} predicted "
          f"segments, pool accuracy of the default {np.mean(predicted == domain.truth[pool_rows]):.3f}); "
          f"scored on larvae 31-60; default macro-F1 {baseline['macro_f1']:.3f}; ranking: {how}", flush=True)
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    budgets = [int(b) for b in args.budgets.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    curve: dict = {}
    for n in budgets:
        for user in ("ranked", "random"):
            for seed in seeds:
                if user == "ranked":
                    queue = ranked
                else:
                    queue = [everything[i] for i in np.random.default_rng([seed, n]).permutation(len(everything))]
                label_file = work / f"{user}{n}-{seed}.label"
                steps = correct(domain, pool_rows, predicted, queue, n, label_file)
                tick = time.perf_counter()
                model = finetune(label_file, work / "models" / f"{user}{n}-{seed}", seed, **settings)
                seconds = time.perf_counter() - tick
                score = evaluate(model) if model is not None else baseline
                curve.setdefault((n, user), []).append(dict(steps=steps, seconds=seconds, **score))
                print(f"  N={n:3d} {user:6s} seed {seed}: {steps:5d} steps corrected, fine-tune {seconds:4.0f} s, "
                      f"macro-F1 {score['macro_f1']:.3f}", flush=True)
    _report(curve, baseline, budgets)
    print(f"total {time.perf_counter() - started:.0f} s; load average at end: {os.getloadavg()[0]:.1f}")


def _report(curve: dict, baseline: dict, budgets: list[int]) -> None:
    print(f"\nlearning curve (macro-F1 on larvae 31-60; default {baseline['macro_f1']:.3f}; "
          "mean [min-max] over seeds)")
    print("  N   ranked                 steps   random                 steps   ranked - random")
    means = {}
    for n in budgets:
        cells = []
        for user in ("ranked", "random"):
            runs = curve[(n, user)]
            f1 = np.array([r["macro_f1"] for r in runs])
            means[(n, user)] = f1.mean()
            cells.append(f"{f1.mean():.3f} [{f1.min():.3f}-{f1.max():.3f}]  {np.mean([r['steps'] for r in runs]):6.0f}")
        print(f"{n:4d}  {cells[0]}   {cells[1]}   {means[(n, 'ranked')] - means[(n, 'random')]:+.3f}")
    beats = all(means[(n, "ranked")] > means[(n, "random")] for n in budgets)
    print(f"ranked beats random at every N: {'yes' if beats else 'NO'}")
    if 30 in budgets and 100 in budgets:
        ok = means[(30, "ranked")] >= means[(100, "random")]
        print(f"ranked at 30 ({means[(30, 'ranked')]:.3f}) >= random at 100 ({means[(100, 'random')]:.3f}): "
              f"{'yes' if ok else 'NO'}")
    top = max(budgets)
    weak_first = sorted(baseline["per_class"], key=lambda c: baseline["per_class"][c])
    print(f"\nper-class F1 at N={top} (mean over seeds; weak classes first)")
    print(f"{'':10s}" + "".join(f"{c:>14s}" for c in weak_first))
    print(f"{'default':10s}" + "".join(f"{baseline['per_class'][c]:14.3f}" for c in weak_first))
    for user in ("ranked", "random"):
        runs = curve[(top, user)]
        print(f"{user:10s}" + "".join(f"{np.mean([r['per_class'].get(c, 0.0) for r in runs]):14.3f}"
                                      for c in weak_first))


if __name__ == "__main__":
    main()
