"""Domain gap between real larva tracks and the simulator, measured without labels.

A gradient-boosting classifier learns to tell 4-s windows of real tracks from windows of
simulated ones, on the kinematic features of ``taggingbackends.simulate.calibration``
(computed the same way for both: tail first, 10 Hz, arc-resampled spines, body lengths).
Its ROC AUC under cross-validation grouped by larva (no larva in both the training and the
test fold) measures the gap: 0.5 = indistinguishable, 1.0 = always told apart.
It also prints the distributions a biologist checks, real against simulated (quantiles),
and the features that separate them most (univariate AUC).

Run:
    PYTHONPATH=src python benchmarks/domain_gap.py                       # default simulator
    PYTHONPATH=src python benchmarks/domain_gap.py --domain default --domain wide
Options: --data DIR (real tracks, any readable format; default ../shared/data/schleyer),
--larvae N --duration S (simulated amount), --seed, --folds.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from taggingbackends.errors import TaggingError
from taggingbackends.formats import load
from taggingbackends.simulate import simulate
from taggingbackends.simulate.domain import simulate_domain
from taggingbackends.simulate.calibration import FEATURE_NAMES, Kinematics, kinematics

def _default_data() -> Path:
    """``../shared/data/schleyer`` next to the checkout (or next to its parent, for worktrees)."""
    root = Path(__file__).resolve().parents[1]
    for base in (root.parent, root.parent.parent):
        if (base / "shared" / "data" / "schleyer").is_dir():
            return base / "shared" / "data" / "schleyer"
    return root.parent / "shared" / "data" / "schleyer"


DEFAULT_DATA = _default_data()
QUANTILES = (10, 25, 50, 75, 90)


def read_real(directory: Path) -> list:
    """Every readable tracking file of ``directory``; unreadable ones are skipped with a note."""
    runs = []
    for path in sorted(directory.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() in (".md", ".txt", ".label", ".json"):
            continue
        try:
            runs.append(load(path))
        except (TaggingError, ValueError, OSError) as err:
            print(f"note: skipped {path.name}: {str(err).splitlines()[0]}")
    return runs


def simulated_runs(domain: str, n_larvae: int, duration: float, seed: int) -> list:
    """Simulated recordings of a domain preset (``taggingbackends.simulate.domain``)."""
    if domain == "default":
        # the default configuration at the real recordings' frame rate (16 fps, regular frames)
        return [simulate(n_larvae=n_larvae, duration=duration, frame_rate=16.0, frame_jitter=0.0,
                         seed=seed).run]
    return [r.run for r in simulate_domain(domain, n_larvae=n_larvae, duration=duration, seed=seed)]


def domain_auc(real: Kinematics, sim: Kinematics, folds: int = 5, seed: int = 0) -> tuple[float, float]:
    """Cross-validated ROC AUC (mean over folds, s.d.) of real-vs-simulated windows."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold

    x = np.concatenate([real.features, sim.features])
    y = np.r_[np.ones(len(real.features)), np.zeros(len(sim.features))]
    groups = np.r_[real.groups, sim.groups]
    x = np.where(np.isfinite(x), x, np.nan)
    weights = np.where(y == 1, 0.5 / max(y.sum(), 1), 0.5 / max((1 - y).sum(), 1)) * len(y)
    aucs = []
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train, test in splitter.split(x, y, groups):
        clf = HistGradientBoostingClassifier(max_iter=150, learning_rate=0.1, max_leaf_nodes=15,
                                             random_state=seed)
        clf.fit(x[train], y[train], sample_weight=weights[train])
        if len(np.unique(y[test])) == 2:
            aucs.append(roc_auc_score(y[test], clf.predict_proba(x[test])[:, 1]))
    return float(np.mean(aucs)), float(np.std(aucs))


def univariate_auc(real: Kinematics, sim: Kinematics) -> list[tuple[str, float]]:
    """Per feature, the AUC of the feature alone (folded to >= 0.5), largest first."""
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.ones(len(real.features)), np.zeros(len(sim.features))]
    out = []
    for j, name in enumerate(FEATURE_NAMES):
        v = np.r_[real.features[:, j], sim.features[:, j]]
        ok = np.isfinite(v)
        if len(np.unique(y[ok])) < 2:
            continue
        a = roc_auc_score(y[ok], v[ok])
        out.append((name, max(a, 1 - a)))
    return sorted(out, key=lambda x: -x[1])


def quantile_table(sets: dict[str, Kinematics]) -> str:
    """Side-by-side quantiles of each biologist's distribution."""
    names = list(sets)
    lines = [f"{'quantity':34s} {'set':>12s} " + " ".join(f"p{q:<5d}" for q in QUANTILES)]
    summaries = {n: k.summary() for n, k in sets.items()}
    for quantity in summaries[names[0]]:
        for n in names:
            v = summaries[n][quantity]
            v = v[np.isfinite(v)]
            qs = np.percentile(v, QUANTILES) if len(v) else [np.nan] * len(QUANTILES)
            lines.append(f"{quantity:34s} {n:>12s} " + " ".join(f"{q:6.2f}" for q in qs))
    for n in names:
        lines.append(f"{'share of frames with bend > 30°':34s} {n:>12s} {100 * sets[n].bend_over(30):6.1f} %")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--domain", action="append", help="simulator preset (repeatable; default: default)")
    parser.add_argument("--larvae", type=int, default=40)
    parser.add_argument("--duration", type=float, default=180.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args(argv)
    domains = args.domain or ["default"]

    tick = time.time()
    runs = read_real(args.data.resolve())
    if not runs:
        print(f"error: no readable tracking file in {args.data}", file=sys.stderr)
        return 1
    real = kinematics(runs, group_prefix="real:")
    print(f"real: {len(runs)} files, {real.n_segments} segments, {len(real.features)} windows "
          f"({args.data.resolve()})")
    sets = {"real": real}
    results = []
    for domain in domains:
        sim = kinematics(simulated_runs(domain, args.larvae, args.duration, args.seed),
                         group_prefix=f"{domain}:")
        sets[domain] = sim
        auc, sd = domain_auc(real, sim, args.folds, args.seed)
        results.append((domain, auc, sd, len(sim.features)))
        top = ", ".join(f"{n} {a:.2f}" for n, a in univariate_auc(real, sim)[:6])
        print(f"{domain}: {sim.n_segments} segments, {len(sim.features)} windows; "
              f"real-vs-simulated ROC AUC {auc:.3f} ± {sd:.3f}; most separating: {top}")
    print()
    print(quantile_table(sets))
    print()
    print("domain gap (ROC AUC of a real-vs-simulated classifier, grouped CV by larva; 0.5 = no gap)")
    for domain, auc, sd, n in results:
        print(f"  {domain:12s} {auc:.3f} ± {sd:.3f}   ({n} simulated windows vs {len(real.features)} real)")
    print(f"time {time.time() - tick:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
