"""Fast fine-tuning of a dense tagger on a few corrected larvae.

Today's fine-tune (:func:`maggotuba.models.tagger.train_tagger` with 1000,1000
iterations) runs the whole encoder on every batch of both phases: about 4 minutes on
2 CPU cores for 10 larvae. Almost all of the gain on a new rig comes from the
classifier head, which the frozen-encoder phase trains on embeddings that never
change. So the fast path:

1. **Head on cached embeddings.** The frozen encoder (eval mode, running batch-norm
   statistics, as phase 1) embeds the training and validation windows once (at most
   ``max_training_windows`` / ``max_validation_windows``, evenly spaced: neighbouring
   windows overlap almost entirely, so a stride loses little), with the
   GEMM-chain encoder of :mod:`maggotuba.inference` (about twice the plain encoder's
   speed); the dense classifier, starting from the tagger's own, is then trained on
   those 25-number vectors: an iteration costs microseconds instead of an encoder
   forward pass.
2. **An optional short joint phase** (``joint_iterations``, 0 by default). Encoder and
   head together at the fine-tuning learning rate, as phase 2, validated often on a
   fixed subset of the held-out larvae's windows. Measured on the held-out rig of
   ``benchmarks/finetune_benchmark.py`` (10 larvae): 200 joint iterations never beat the
   head alone on the validation larvae (early stopping kept the head's weights) and
   cost about 80 % of the fast path's time, so the default skips it; and the head alone
   matched today's 1000,1000 fine-tune (macro-F1 gain 0.141 vs 0.132; with 20
   larvae 0.148 vs 0.076).
3. **Model selection.** Both stages keep the weights with the best validation macro-F1
   (held-out larvae, as today); the joint stage also stops after ``patience``
   validations without improvement (the head stage is too cheap to need it, and
   stopping it early on a noisy plateau cost 0.05 macro-F1 with 20 larvae).

Everything is seeded (batches drawn from ``(seed, stage, iteration)`` as in
:func:`~maggotuba.models.tagger.train_tagger`), so a run is deterministic on a given
machine, except when ``budget_seconds`` cuts the (optional) joint stage short: a safety
net for slow machines, recorded in the log (``"joint_stopped": ["budget", iteration]``).

The defaults are the settings measured best by ``benchmarks/finetune_benchmark.py``
(see docs/maggotuba.md, "Fast fine-tuning").
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from .models.autoencoder import MaggotUBAConfig
from .models.tagger import Tagger, TaggerConfig, TrainingData, macro_f1, predict_classes

#: Progress stages, as the command line's progress bars name them.
HEAD_STAGE, JOINT_STAGE = "frozen encoder", "fine-tuning"


@dataclass(frozen=True)
class FastSettings:
    """How the fast fine-tune trains (defaults: measured best, see module docstring)."""

    head_iterations: int = 600           # classifier on cached embeddings
    head_batch_size: int = 256
    head_learning_rate: float = 0.005
    anchor: float = 0.0                  # L2 pull of the head towards the tagger's own weights
    joint_iterations: int = 0            # encoder + classifier (measured: no gain, most of the cost)
    joint_batch_size: int = 128
    joint_learning_rate: float = 0.0005
    validate_every: int = 25             # joint stage; the head stage validates every 20
    patience: int = 4                    # joint stage: validations without improvement before stopping
    max_training_windows: int = 12000    # head stage: a fixed, evenly spaced subset (neighbours ~ equal)
    max_validation_windows: int = 4000   # both stages: a fixed, evenly spaced subset
    budget_seconds: float | None = 100.0  # cap on the joint stage (the head stage always completes)

    def __post_init__(self) -> None:
        for name in ("head_iterations", "joint_iterations"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        for name in ("head_batch_size", "joint_batch_size", "validate_every", "patience",
                     "max_training_windows", "max_validation_windows"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")
        if self.anchor < 0:
            raise ValueError("anchor must not be negative")
        if self.budget_seconds is not None and self.budget_seconds <= 0:
            raise ValueError("budget_seconds must be positive")

    @property
    def iterations(self) -> tuple[int, int]:
        return (self.head_iterations, self.joint_iterations)


def embed(encoder: nn.Module, windows: np.ndarray, batch_size: int = 2048) -> np.ndarray:
    """Eval-mode embeddings of ``windows`` (the fast CPU encoder when it applies)."""
    from .inference import make_inference_encoder, supports

    encoder = encoder.eval()
    if next(encoder.parameters()).device.type == "cpu" and supports(encoder):
        return make_inference_encoder(encoder)(windows)
    device = next(encoder.parameters()).device
    parts = []
    with torch.inference_mode():
        for start in range(0, len(windows), batch_size):
            parts.append(encoder(torch.from_numpy(windows[start:start + batch_size]).to(device)).cpu())
    return torch.cat(parts).numpy() if parts else np.zeros((0, encoder.config.dim_latent), np.float32)


def _evenly_spaced(n: int, at_most: int) -> np.ndarray:
    if n <= at_most:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, at_most).round().astype(np.int64))


def _state(module: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


class _Validator:
    """Validation macro-F1, best state and patience bookkeeping for one stage."""

    def __init__(self, log: dict, stage: int, patience: int, best: float) -> None:
        self.log, self.stage, self.patience = log, stage, patience
        self.best, self.since_best = best, 0

    def record(self, iteration: int, score: float, save: Callable[[], None]) -> bool:
        """Record a validation; True when training should stop (patience exhausted)."""
        self.log["validation"].append([self.stage, iteration, score])
        if score > self.best:
            self.best, self.since_best = score, 0
            self.log["best_macro_f1"], self.log["best"] = score, [self.stage, iteration]
            save()
            return False
        self.since_best += 1
        return self.since_best >= self.patience


def _train_head(model: Tagger, train_latents: torch.Tensor, train_targets: torch.Tensor,
                validation_latents: torch.Tensor, validation_labels: np.ndarray, loss_fn: nn.Module,
                config: TaggerConfig, settings: FastSettings, log: dict,
                progress: Callable[[str, int, float], None] | None) -> dict:
    """Stage 1: the classifier on cached embeddings; returns the best whole-model state.
    Not subject to the time budget: its iterations cost microseconds, and stopping it
    would throw away the embeddings already paid for."""
    n_classes = len(config.labels)
    head = model.classifier
    optimiser = torch.optim.Adam(head.parameters(), lr=settings.head_learning_rate)

    def score() -> float:
        with torch.inference_mode():
            predicted = head(validation_latents).argmax(dim=1).numpy()
        return macro_f1(validation_labels, predicted, n_classes)

    best_state = _state(model)
    start = [p.detach().clone() for p in head.parameters()]

    def save() -> None:
        nonlocal best_state
        best_state = _state(model)

    validator = _Validator(log, 1, settings.patience, -1.0)
    validator.record(0, score(), save)
    every = 20
    for iteration in range(1, settings.head_iterations + 1):
        rng = np.random.default_rng([config.seed, 0, iteration - 1])
        index = torch.from_numpy(rng.integers(0, len(train_targets), size=settings.head_batch_size))
        loss = loss_fn(head(train_latents[index]), train_targets[index])
        if settings.anchor:
            loss = loss + settings.anchor * sum(((p - p0) ** 2).sum() for p, p0 in zip(head.parameters(), start))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(head.parameters(), config.grad_clip)
        optimiser.step()
        log["train_loss"].append(loss.item())
        if progress is not None:
            progress(HEAD_STAGE, iteration, log["train_loss"][-1])
        last = iteration == settings.head_iterations
        if iteration % every == 0 or last:
            # no early stop here: the stage costs milliseconds, and validation macro-F1 on a
            # few held-out larvae plateaus and wobbles long before the head has converged
            validator.record(iteration, score(), save)
    return best_state


def _train_joint(model: Tagger, train: TrainingData, validation: TrainingData, loss_fn: nn.Module,
                 config: TaggerConfig, settings: FastSettings, log: dict, best_state: dict,
                 device: str, deadline: float | None,
                 progress: Callable[[str, int, float], None] | None) -> dict:
    """Stage 2: encoder and classifier together, early-stopped; returns the best state."""
    n_classes = len(config.labels)
    keep = _evenly_spaced(len(validation), settings.max_validation_windows)
    val_windows, val_labels = validation.windows[keep], validation.labels[keep]

    def score() -> float:
        return macro_f1(val_labels, predict_classes(model, val_windows, device), n_classes)

    def save() -> None:
        nonlocal best_state
        best_state = _state(model)

    # the head stage's best, scored on the same validation subset as the joint stage
    model.load_state_dict(best_state)
    validator = _Validator(log, 2, settings.patience, -1.0)
    validator.record(0, score(), save)
    for p in model.encoder.parameters():
        p.requires_grad_(True)
    optimiser = torch.optim.Adam(model.parameters(), lr=settings.joint_learning_rate)
    windows, targets = torch.from_numpy(train.windows), torch.from_numpy(train.labels)
    done = 0
    for iteration in range(1, settings.joint_iterations + 1):
        model.train()
        rng = np.random.default_rng([config.seed, 1, iteration - 1])
        index = torch.from_numpy(rng.integers(0, len(train), size=settings.joint_batch_size))
        loss = loss_fn(model(windows[index].to(device)), targets[index].to(device))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimiser.step()
        log["train_loss"].append(loss.item())
        done = iteration
        if progress is not None:
            progress(JOINT_STAGE, iteration, log["train_loss"][-1])
        out_of_time = deadline is not None and time.perf_counter() > deadline
        if iteration % settings.validate_every == 0 or iteration == settings.joint_iterations or out_of_time:
            if validator.record(iteration, score(), save):
                log["joint_stopped"] = ["patience", iteration]
                break
        if out_of_time:
            log["joint_stopped"] = ["budget", iteration]
            break
    log["joint_iterations_run"] = done
    return best_state


def fast_train_tagger(
    train: TrainingData,
    validation: TrainingData,
    encoder_state: dict,
    classifier_state: dict,
    model_config: MaggotUBAConfig,
    config: TaggerConfig,
    class_weights: np.ndarray,
    settings: FastSettings = FastSettings(),
    device: str = "cpu",
    progress: Callable[[str, int, float], None] | None = None,
) -> tuple[Tagger, dict]:
    """Fine-tune an existing tagger (its encoder and classifier states) fast; returns the
    best model (eval mode) and a log shaped like :func:`~maggotuba.models.tagger.train_tagger`'s
    (``train_loss``, ``validation`` as ``[stage, iteration, macro-F1]``, ``best_macro_f1``,
    ``best``, ``seconds``) plus ``mode``, ``settings``, ``timings`` and why each stage stopped."""
    started = time.perf_counter()
    deadline = None if settings.budget_seconds is None else started + settings.budget_seconds
    torch.manual_seed(config.seed)
    model = Tagger(model_config, len(config.labels), config.layers, config.hidden)
    model.encoder.load_state_dict(encoder_state)
    model.classifier.load_state_dict(classifier_state)
    model.to(device).eval()
    weights = torch.as_tensor(np.asarray(class_weights, dtype=np.float32), device=device)
    loss_fn = nn.CrossEntropyLoss(weight=weights)
    log: dict = {"mode": "fast", "settings": asdict(settings), "train_loss": [], "validation": [],
                 "best_macro_f1": -1.0, "best": None, "timings": {}}

    for p in model.encoder.parameters():
        p.requires_grad_(False)
    head_rows = _evenly_spaced(len(train), settings.max_training_windows)
    validation_rows = _evenly_spaced(len(validation), settings.max_validation_windows)
    train_latents = torch.from_numpy(embed(model.encoder, train.windows[head_rows])).to(device)
    validation_latents = torch.from_numpy(embed(model.encoder, validation.windows[validation_rows])).to(device)
    log["timings"]["embed"] = time.perf_counter() - started
    tick = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 25 x 7 matrices: extra threads only cost synchronisation
    try:
        best_state = _train_head(model, train_latents, torch.from_numpy(train.labels[head_rows]).to(device),
                                 validation_latents, validation.labels[validation_rows], loss_fn, config,
                                 settings, log, progress)
    finally:
        torch.set_num_threads(threads)
    log["timings"]["head"] = time.perf_counter() - tick
    log["head_best"] = log["best"]
    if settings.joint_iterations > 0 and not (deadline is not None and time.perf_counter() > deadline):
        tick = time.perf_counter()
        best_state = _train_joint(model, train, validation, loss_fn, config, settings, log, best_state,
                                  device, deadline, progress)
        log["timings"]["joint"] = time.perf_counter() - tick
    model.load_state_dict(best_state)
    calibration = validation_temperature(model, validation.windows[validation_rows],
                                         validation.labels[validation_rows])
    if calibration is not None:
        log["calibration"] = calibration
    log["seconds"] = time.perf_counter() - started
    return model.eval(), log


#: Fewest validation windows (and classes) a temperature is fitted on.
MIN_CALIBRATION_WINDOWS = 200


def validation_temperature(model: Tagger, windows: np.ndarray, labels: np.ndarray) -> dict | None:
    """The temperature of the fine-tuned tagger fitted on its validation larvae
    (:mod:`maggotuba.calibration`), stored with the instance so that ``predict`` gives it
    calibrated probabilities and a meaningful ``uncertain`` flag; None when too few windows
    or classes. The same larvae chose the best iteration, so the ECE after is optimistic."""
    from .calibration import expected_calibration_error, fit_temperature, apply_temperature

    labels = np.asarray(labels)
    if len(labels) < MIN_CALIBRATION_WINDOWS or len(np.unique(labels)) < 2:
        return None
    latents = torch.from_numpy(embed(model.encoder, windows)).to(next(model.parameters()).device)
    with torch.inference_mode():
        logits = model.classifier(latents.float()).double().cpu().numpy()
    temperature = fit_temperature(logits, labels)
    return {"temperature": round(temperature, 4),
            "ece_before": round(expected_calibration_error(apply_temperature(logits, 1.0), labels), 4),
            "ece_after": round(expected_calibration_error(apply_temperature(logits, temperature), labels), 4),
            "n_fit_steps": int(len(labels)),
            "fitted_on": "the fine-tune's validation larvae (which also chose the best iteration)"}
