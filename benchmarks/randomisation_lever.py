"""Does training on the randomised ``wide`` domain help on the ``heldout`` domain? A proxy.

Retraining the MaggotUBA default takes about 70 min on 2 cores. This benchmark answers
the question cheaply, with a stand-in tagger: a gradient-boosting classifier on the
kinematic window features of ``taggingbackends.simulate.calibration`` (2-s windows, 0.5-s
hop, labelled with the behaviour at the window centre). It is trained once on the
``default`` simulator and once on ``wide``, with the same number of larvae and balanced
behaviour weights and the same number of windows, and judged on ``heldout`` (natural base rates) and, as a control, on
``default``. It tells whether randomisation transfers and how hard ``heldout`` is for a
simple model. It does not stand for the MaggotUBA tagger's absolute scores.

Run:
    PYTHONPATH=src python benchmarks/randomisation_lever.py
Options: --larvae N --duration S --seed K.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

from taggingbackends.simulate import BEHAVIOURS, SimulationConfig, balanced_weights, simulate
from taggingbackends.simulate.calibration import frame_stats, track_segments, window_features
from taggingbackends.simulate.domain import simulate_domain

WINDOW, HOP = 2.0, 0.5


def labelled_windows(results) -> tuple[np.ndarray, np.ndarray]:
    """Window features and the true behaviour at each window's centre."""
    xs, ys = [], []
    for result in results:
        run = result.run
        truth = {}
        for i, track in enumerate(run):
            truth[f"{run.id}/{track.larva_id}"] = (track.t, result.behaviour[run.offsets[i]:run.offsets[i + 1]])
        for seg in track_segments(run, rate=10.0, min_duration=WINDOW):
            f = window_features(seg, frame_stats(seg), WINDOW, HOP)
            t, b = truth[seg.group]
            centres = seg.t[0] + WINDOW / 2 + HOP * np.arange(len(f))
            idx = np.clip(np.searchsorted(t, centres), 0, len(t) - 1)
            xs.append(f)
            ys.append(b[idx])
    return np.concatenate(xs), np.concatenate(ys)


def default_results(n_larvae: int, duration: float, seed: int, balanced: bool):
    config = SimulationConfig(n_larvae=n_larvae, duration=duration, seed=seed)
    if balanced:
        config = dataclasses.replace(config, behaviour_weights=balanced_weights(config))
    return [simulate(config)]


def macro_f1(model, x, y) -> tuple[float, dict[str, float]]:
    from sklearn.metrics import f1_score

    classes = [c for c in range(len(BEHAVIOURS)) if (y == c).any()]
    f1 = f1_score(y, model.predict(x), labels=classes, average=None, zero_division=0)
    return float(np.mean(f1)), {BEHAVIOURS[c]: float(v) for c, v in zip(classes, f1)}


def main(argv=None) -> int:
    from sklearn.ensemble import HistGradientBoostingClassifier

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--larvae", type=int, default=96)
    parser.add_argument("--duration", type=float, default=120.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    tick = time.time()
    train = {
        "default": labelled_windows(default_results(args.larvae, args.duration, args.seed, True)),
        "wide": labelled_windows(simulate_domain("wide", n_larvae=args.larvae, duration=args.duration,
                                                 seed=args.seed, balanced=True)),
    }
    test = {
        "heldout": labelled_windows(simulate_domain("heldout", n_larvae=48, duration=args.duration,
                                                    seed=args.seed + 1000)),
        "default": labelled_windows(default_results(48, args.duration, args.seed + 1000, False)),
    }
    # the same number of training windows for both (the default's tracks are shorter)
    n = min(len(y) for _, y in train.values())
    rng = np.random.default_rng(args.seed)
    train = {k: (x[idx], y[idx]) for k, (x, y) in train.items()
             for idx in [np.sort(rng.choice(len(y), n, replace=False))]}
    print("training windows: " + ", ".join(f"{k} {len(v[1])}" for k, v in train.items())
          + "; test windows: " + ", ".join(f"{k} {len(v[1])}" for k, v in test.items()))
    print(f"{'trained on':12s} {'tested on':10s} {'macro-F1':>8s}  per class")
    for name, (x, y) in train.items():
        model = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.1, random_state=0).fit(x, y)
        for tname, (tx, ty) in test.items():
            macro, per = macro_f1(model, tx, ty)
            detail = " ".join(f"{k} {v:.2f}" for k, v in sorted(per.items(), key=lambda kv: kv[1]))
            print(f"{name:12s} {tname:10s} {macro:8.3f}  {detail}")
    print(f"time {time.time() - tick:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
