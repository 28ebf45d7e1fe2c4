"""Build the shipped default models from scratch, deterministically.

    python -m maggotuba.default_model --real-data ../shared/data/schleyer --device cuda

1. **Pretraining** (self-supervised, no labels): MaggotUBA autoencoder,
   2-s windows at 10 Hz (``len_traj = len_pred = 20``), 25-dimension latent
   space, on windows drawn from synthetic larvae (several seeds, frame rates
   11, 16 and 30 Hz, default and rare-behaviour-rich mixes) and from the real
   Schleyer-lab tracks (``--real-data``, MIT licence via larvaworld) →
   ``pretrained_models/default``.
2. **Tagger** (the 20230111 design): that encoder + one dense layer, 7 labels
   (upstream names ``back_large, cast_large, hunch_large, roll_large,
   run_large, stop_large, small_motion``), ``auto`` balancing (inverse
   frequency class weights), frozen-encoder then fine-tuning phases, ABC→AAC,
   trained on synthetic larvae with ground truth → ``models/default``.
3. **Evaluation** on synthetic data it never saw (other seeds, another frame
   rate, written to and read back from trx.mat): per-class precision, recall,
   F1 and the confusion matrix → ``models/default/evaluation.json``.

Everything is seeded; on a given device and software stack the output is
identical run to run (CUDA runs use deterministic algorithms).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from taggingbackends.formats import load, save
from taggingbackends.simulate import BEHAVIOURS, SimulationConfig, balanced_weights, simulate

from .features import FULL, WindowSpec, make_windows
from .model_card import add_to_config, class_frequencies, write_card
from .models.autoencoder import MaggotUBAConfig
from .instances import load_tagger
from .models.tagger import TaggerConfig, TrainingData, save_tagger, train_tagger
from .predict import predict_run
from .pretrain import PretrainConfig, load_pretrained, pretrain, sample_windows, split_by_larva

DEFAULT_LABELS = ["back_large", "cast_large", "hunch_large", "roll_large", "run_large",
                  "stop_large", "small_motion"]
SIMULATOR_TO_LABEL = {"run": "run_large", "cast": "cast_large", "back": "back_large",
                      "hunch": "hunch_large", "roll": "roll_large", "stop": "stop_large",
                      "small_motion": "small_motion"}
SHIPPED = Path(__file__).parent / "data"


def synthetic_runs(seeds, frame_rates, n_larvae: int, duration: float, balanced: bool):
    """Simulated runs with their ground truth (one per seed, frame rates cycled)."""
    out = []
    for i, seed in enumerate(seeds):
        config = SimulationConfig(n_larvae=n_larvae, duration=duration, seed=int(seed),
                                  frame_rate=float(frame_rates[i % len(frame_rates)]))
        if balanced:
            config = replace(config, behaviour_weights=balanced_weights(config))
        out.append(simulate(config))
    return out


def domain_runs(domain: str, seeds, n_larvae: int, duration: float, balanced: bool):
    """Recordings of a randomised simulator domain (``wide``, ``exploration``), with
    their ground truth; each seed gives one recording per 8 larvae, its rig drawn."""
    from taggingbackends.simulate.domain import simulate_domain

    return [result for seed in seeds
            for result in simulate_domain(domain, n_larvae=n_larvae, duration=duration,
                                          seed=int(seed), balanced=balanced)]


def label_classes(behaviour: np.ndarray) -> np.ndarray:
    """Simulator behaviour indices → indices into DEFAULT_LABELS."""
    mapping = np.array([DEFAULT_LABELS.index(SIMULATOR_TO_LABEL[b]) for b in BEHAVIOURS])
    return mapping[behaviour]


def tagger_data(results, spec: WindowSpec, group_base: int = 0) -> TrainingData:
    windows, labels, groups = [], [], []
    for i, result in enumerate(results):
        w = make_windows(result.run, spec)
        keep = w.quality == FULL
        windows.append(w.data[keep])
        labels.append(label_classes(result.behaviour)[keep])
        groups.append(group_base + 10_000 * i + result.run.track_index[keep])
    return TrainingData(np.concatenate(windows), np.concatenate(labels).astype(np.int64),
                        np.concatenate(groups))


def confusion(truth: np.ndarray, predicted: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(truth * n + predicted, minlength=n * n).reshape(n, n)


def scores(matrix: np.ndarray, names) -> dict:
    per_class = {}
    for i, name in enumerate(names):
        tp = matrix[i, i]
        precision = tp / max(matrix[:, i].sum(), 1)
        recall = tp / max(matrix[i].sum(), 1)
        f1 = 0.0 if tp == 0 else 2 * precision * recall / (precision + recall)
        per_class[name] = {"precision": round(float(precision), 4), "recall": round(float(recall), 4),
                           "f1": round(float(f1), 4), "support": int(matrix[i].sum())}
    present = [v["f1"] for v in per_class.values() if v["support"] > 0]
    return {"per_class": per_class, "macro_f1": round(float(np.mean(present)), 4),
            "accuracy": round(float(np.trace(matrix) / max(matrix.sum(), 1)), 4),
            "confusion": matrix.tolist(), "labels": list(names)}


def evaluate(model_dir: Path, seeds, frame_rate: float, n_larvae: int, duration: float,
             balanced: bool, device: str = "cpu") -> dict:
    """Tag unseen synthetic data written as trx.mat and read back; score every step."""
    saved = load_tagger(model_dir, device=device)
    matrices = {"all_steps": 0, "full_windows": 0}
    n = len(DEFAULT_LABELS)
    with tempfile.TemporaryDirectory() as tmp:
        for result in synthetic_runs(seeds, [frame_rate], n_larvae, duration, balanced):
            path = Path(tmp) / f"{result.run.id}_trx.mat"
            save(result.run, path)
            run = load(path)
            prediction = predict_run(saved, run, device=device)
            truth = label_classes(result.behaviour)
            matrices["all_steps"] = matrices["all_steps"] + confusion(truth, prediction.classes, n)
            full = prediction.quality == 0
            matrices["full_windows"] = matrices["full_windows"] + confusion(
                truth[full], prediction.classes[full], n)
    return {name: scores(np.asarray(m), DEFAULT_LABELS) for name, m in matrices.items()}


TRAINING_SOURCE = ("synthetic larvae: the randomised `wide` domain (seeds 300-305 rare behaviours "
                   "oversampled, 400-401 natural rates; 5-30 fps, 5/11/12-point spines, mm and pixels, "
                   "tracker artefacts), the calibrated `exploration` domain (seed 310, oversampled) and "
                   "the default simulator (seeds 320-321, oversampled, 11 and 16 Hz)")
TRAINING_SEEDS = 11  # simulated sets of --larvae larvae each (6 + 2 wide, 1 exploration, 2 default)


def describe(model_dir: Path, n_larvae: int = 60) -> Path:
    """Store the training class frequencies in ``clf_config.json`` and write
    ``model_card.md``, from what training recorded (no retraining).

    The frequencies are those training used: ``training_data.class_counts`` are the
    per-class numbers of full windows of the training runs (``tagger_data``), and the
    loss weights are ``class_weights`` (inverse frequency, ``auto``); the effective priors
    are their normalised product (uniform). ``python -m maggotuba.default_model
    --describe-only`` rewrites both for the shipped model."""
    config = json.loads((model_dir / "clf_config.json").read_text())
    labels, counts = config["labels"], config["training_data"]["class_counts"]
    add_to_config(model_dir, class_frequencies(labels, counts, config["class_weights"]))
    training = {"files": [], "larvae": TRAINING_SEEDS * n_larvae,
                "note": f"Simulated, not read from files: {TRAINING_SOURCE}; full windows only "
                        f"(`maggotuba.default_model.tagger_data`).",
                "labelled_steps": dict(zip(labels, (int(c) for c in counts))),
                "samples": dict(zip(labels, (int(c) for c in counts))),
                "class_weights": dict(zip(labels, config["class_weights"]))}
    validation = None
    evaluation_path = model_dir / "evaluation.json"
    if evaluation_path.is_file():
        unseen = json.loads(evaluation_path.read_text())["unseen_balanced_25Hz_trxmat"]["all_steps"]
        validation = {"title": "Evaluation on unseen synthetic larvae (balanced mix, 25 Hz, via trx.mat)",
                      "per_class": unseen["per_class"], "macro_f1": unseen["macro_f1"],
                      "accuracy": unseen["accuracy"]}
    return write_card(model_dir, name=model_dir.name, how="Built by `python -m maggotuba.default_model` "
                      "(the shipped default)", training=training, validation=validation)


CALIBRATION_SOURCE = ("the randomised `wide` domain, seeds 600-601 (never used in training or "
                      "validation), natural base rates")


def calibrate(model_dir: Path, n_larvae: int, duration: float, device: str = "cpu") -> dict:
    """Fit the instance's temperature (:mod:`maggotuba.calibration`) on simulated larvae
    it never saw and store it in ``clf_config.json`` (``calibration``), where ``predict``
    finds it. Half the larvae fit it, the other half judge it (ECE and NLL before/after)."""
    from .calibration import fit_on_heldout_larvae, logits_from_probabilities

    saved = load_tagger(model_dir, device=device)
    logits, truth, larvae = [], [], []
    for i, result in enumerate(domain_runs("wide", range(600, 602), n_larvae, duration, False)):
        prediction = predict_run(saved, result.run, device=device, post_processing=[])
        logits.append(logits_from_probabilities(prediction.probabilities))
        truth.append(label_classes(result.behaviour))
        larvae.append(i * 100_000 + np.repeat(result.run.larva_ids, result.run.lengths))
    fit = fit_on_heldout_larvae(np.concatenate(logits), np.concatenate(truth), np.concatenate(larvae), seed=0)
    record = {**{k: (round(v, 4) if isinstance(v, float) else v) for k, v in fit.to_dict().items()},
              "fitted_on": CALIBRATION_SOURCE}
    add_to_config(model_dir, {"calibration": record})
    return record


def read_real_runs(directory: Path | None):
    if directory is None or not directory.is_dir():
        return []
    return [load(directory, format="schleyer")]


def _log_every(n: int, stage: str, iteration: int, started: float) -> None:
    """One build-log line every ``n`` iterations of ``stage``."""
    if iteration % n == 0:
        print(f"{stage}: iteration {iteration}, {time.perf_counter() - started:.0f} s", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Build the shipped default models from scratch.")
    parser.add_argument("--output", type=Path, default=SHIPPED)
    parser.add_argument("--real-data", type=Path, default=None,
                        help="directory of Schleyer-lab CSV tracks used for pretraining")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--pretrain-iterations", type=int, default=8_000)
    parser.add_argument("--pretrain-learning-rate", type=float, default=PretrainConfig.learning_rate)
    parser.add_argument("--init-encoder", type=Path, default=None,
                        help="pretrained_models/ instance to continue pretraining from "
                             "(default: a random initialisation)")
    parser.add_argument("--tagger-iterations", default="2000,5000")
    parser.add_argument("--pretrain-windows", type=int, default=200_000)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: all cores; 1 is faster on a busy machine)")
    parser.add_argument("--larvae", type=int, default=60)
    parser.add_argument("--duration", type=float, default=120.0)
    parser.add_argument("--quick", action="store_true", help="tiny settings, for a smoke test")
    parser.add_argument("--calibrate-only", action="store_true",
                        help="only fit and store the temperature of the model in --output (no training)")
    parser.add_argument("--describe-only", action="store_true",
                        help="only store the training class frequencies and write model_card.md "
                             "for the model in --output (no training)")
    args = parser.parse_args(argv)
    if args.describe_only:
        print(describe(args.output / "models" / "default", n_larvae=args.larvae))
        return
    if args.calibrate_only:
        print(calibrate(args.output / "models" / "default", args.larvae // 2, args.duration, args.device))
        return
    if args.quick:
        args.pretrain_iterations, args.tagger_iterations = 50, "20,20"
        args.pretrain_windows, args.larvae, args.duration = 2_000, 8, 30.0
    started = time.perf_counter()
    if args.device.startswith("cuda"):
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    torch.set_num_threads(args.threads or max(1, os.cpu_count() or 1))

    # ---- 1. pretraining
    spec = WindowSpec(len_traj=20, frame_interval=0.1, len_pred=20)
    model_config = MaggotUBAConfig(len_traj=20, len_pred=20, dim_latent=25)
    runs = [r.run for r in synthetic_runs(range(100, 102), [11.0, 16.0, 30.0], args.larvae,
                                          args.duration, balanced=False)]
    runs += [r.run for r in synthetic_runs(range(200, 202), [11.0, 16.0, 30.0], args.larvae,
                                           args.duration, balanced=True)]
    runs += [r.run for r in domain_runs("wide", range(110, 114), args.larvae, args.duration, False)]
    runs += [r.run for r in domain_runs("wide", range(210, 212), args.larvae, args.duration, True)]
    runs += [r.run for r in domain_runs("exploration", range(120, 122), args.larvae, args.duration, False)]
    runs += read_real_runs(args.real_data)
    windows = sample_windows(runs, spec, args.pretrain_windows, seed=1)
    train, validation = split_by_larva(windows, 0.1, seed=1)
    pretrained_dir = args.output / "pretrained_models" / "default"
    initial = load_pretrained(args.init_encoder)[0].state_dict() if args.init_encoder else None
    log = pretrain(train, validation, model_config, spec, pretrained_dir,
                   PretrainConfig(iterations=args.pretrain_iterations, seed=100,
                                  learning_rate=args.pretrain_learning_rate),
                   device=args.device, initial_state=initial, progress=lambda i, *_: _log_every(100, "pretraining", i, started))
    print(f"pretraining: best validation MSE {log['best_validation_loss']:.5f} at iteration "
          f"{log['best_iteration']} ({time.perf_counter() - started:.0f} s so far)", flush=True)

    # ---- 2. tagger
    autoencoder, _, _ = load_pretrained(pretrained_dir)
    tagger_spec = WindowSpec(len_traj=20, frame_interval=0.1)
    encoder_config = MaggotUBAConfig(len_traj=20, len_pred=20, dim_latent=25)
    train_results = (domain_runs("wide", range(300, 306), args.larvae, args.duration, True)
                     + domain_runs("wide", range(400, 402), args.larvae, args.duration, False)
                     + domain_runs("exploration", [310], args.larvae, args.duration, True)
                     + synthetic_runs(range(320, 322), [11.0, 16.0], args.larvae, args.duration, True))
    validation_results = domain_runs("wide", range(500, 502), args.larvae // 2, args.duration, True)
    train_data = tagger_data(train_results, tagger_spec)
    validation_data = tagger_data(validation_results, tagger_spec, group_base=10**7)
    counts = np.bincount(train_data.labels, minlength=len(DEFAULT_LABELS)).astype(float)
    weights = np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0)
    weights = weights / weights.sum() * np.count_nonzero(counts)
    n1, n2 = (int(x) for x in args.tagger_iterations.split(","))
    config = TaggerConfig(labels=DEFAULT_LABELS, layers=1, iterations=(n1, n2), seed=0,
                          class_weights=[round(float(w), 6) for w in weights])
    model, tagger_log = train_tagger(train_data, validation_data, autoencoder.encoder.state_dict(),
                                     encoder_config, tagger_spec, config, weights, device=args.device,
                                     progress=lambda phase, i, _: _log_every(250, f"tagger ({phase})", i, started))
    model_dir = args.output / "models" / "default"
    save_tagger(model.cpu(), config, encoder_config, tagger_spec, model_dir, tagger_log,
                extra={"training_data": {"windows": len(train_data), "class_counts": counts.tolist(),
                                         "source": TRAINING_SOURCE},
                       "pretrained_model": "default",
                       **class_frequencies(DEFAULT_LABELS, counts, config.class_weights)})
    print(f"tagger: best validation macro-F1 {tagger_log['best_macro_f1']:.3f} "
          f"({time.perf_counter() - started:.0f} s so far)", flush=True)

    # ---- 3. evaluation on unseen data (other seeds, 25 Hz, via trx.mat)
    report = {"unseen_balanced_25Hz_trxmat": evaluate(model_dir, range(900, 902), 25.0, args.larvae // 2,
                                                       args.duration, True, args.device),
              "unseen_default_mix_25Hz_trxmat": evaluate(model_dir, range(950, 952), 25.0,
                                                          args.larvae // 2, args.duration, False,
                                                          args.device),
              "device": args.device, "seconds": round(time.perf_counter() - started, 1),
              "torch": torch.__version__}
    (model_dir / "evaluation.json").write_text(json.dumps(report, indent=1))
    calibration = calibrate(model_dir, args.larvae // 2, args.duration, args.device)
    print(f"calibration: temperature {calibration['temperature']}, ECE {calibration['ece_before']} → "
          f"{calibration['ece_after']} on held-out larvae", flush=True)
    describe(model_dir, n_larvae=args.larvae)
    for name in ("unseen_balanced_25Hz_trxmat", "unseen_default_mix_25Hz_trxmat"):
        full = report[name]["all_steps"]
        print(name, "macro-F1", full["macro_f1"], {k: v["f1"] for k, v in full["per_class"].items()})
    print(f"done in {report['seconds']} s on {args.device}")


if __name__ == "__main__":
    main()
