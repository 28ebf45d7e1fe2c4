"""Self-supervised pretraining of the MaggotUBA autoencoder (SPEC §6.1).

The autoencoder sees the *present* part of a window (``len_traj`` points) and
reconstructs past ‖ present ‖ future (``len_pred + len_traj + len_pred``
points); the loss is the mean squared error. No behaviour labels are needed,
so real recorded tracks can be used as well as synthetic ones.

Training is deterministic given the seed and resumable: each iteration's
batch is drawn from a generator seeded with ``(seed, iteration)``, and a
checkpoint (weights, optimiser state, iteration, best loss) is written
atomically at every validation, so a run interrupted and resumed ends with
the same weights as an uninterrupted one.

Output directory (a ``pretrained_models/<instance>/``):

* ``autoencoder_config.json``: model and window configuration;
* ``best_validated_encoder.safetensors`` / ``best_validated_decoder.safetensors``:
  weights of the model with the lowest validation loss;
* ``training_log.json``: losses, iterations, seed, data summary;
* ``checkpoint.pt``: resumable state (tensors and numbers only, loaded with
  ``weights_only=True``), removed when training completes unless ``keep_checkpoint``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from taggingbackends.data.tracks import Run
from taggingbackends.fileio import atomic_path, atomic_write_text

from .features import FULL, WindowSpec, prepare, windows_for_rows
from .models.autoencoder import AutoEncoder, MaggotUBAConfig

CONFIG_FILE = "autoencoder_config.json"
ENCODER_FILE = "best_validated_encoder.safetensors"
DECODER_FILE = "best_validated_decoder.safetensors"
CHECKPOINT_FILE = "checkpoint.pt"
LOG_FILE = "training_log.json"


@dataclass
class PretrainConfig:
    """Optimisation settings (defaults: the original MaggotUBA's, SPEC §6.1)."""

    iterations: int = 1000
    batch_size: int = 128
    learning_rate: float = 0.005
    grad_clip: float = 100.0
    validate_every: int = 100
    seed: int = 100
    threads: int | None = None


@dataclass
class WindowSet:
    """Windows sampled for pretraining, with the larva each one comes from."""

    data: np.ndarray                 # (n, 2, 5, len_pred + len_traj + len_pred) float32
    groups: np.ndarray               # (n,) int64: one id per (run, larva)
    summary: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.data)

    def subset(self, mask: np.ndarray) -> "WindowSet":
        return WindowSet(self.data[mask], self.groups[mask], dict(self.summary))


def sample_windows(runs: Sequence[Run], spec: WindowSpec, n_windows: int, seed: int = 0) -> WindowSet:
    """Draw up to ``n_windows`` full windows (context included, no clamping, no
    gaps) at random anchors, shared between runs in proportion to their steps."""
    rng = np.random.default_rng([seed, 1])
    sizes = np.array([run.n_steps for run in runs], dtype=float)
    quota = np.floor(n_windows * sizes / sizes.sum()).astype(int)
    quota[: n_windows - quota.sum()] += 1
    chunks, groups, group_base = [], [], 0
    for run, want in zip(runs, quota):
        prepared = prepare(run, spec.head)
        rows = rng.permutation(run.n_steps)
        taken = 0
        for start in range(0, len(rows), max(4 * want, 1024)):
            if taken >= want:
                break
            windows = windows_for_rows(prepared, rows[start:start + max(4 * want, 1024)], spec)
            full = np.flatnonzero(windows.quality == FULL)[: want - taken]
            chunks.append(windows.data[full])
            groups.append(group_base + run.track_index[windows.rows[full]])
            taken += len(full)
        group_base += run.n_tracks
    data = np.concatenate(chunks) if chunks else np.zeros((0, 2, 5, spec.width), np.float32)
    summary = {"runs": len(runs), "larvae": int(group_base), "windows": int(len(data)),
               "run_ids": [run.id for run in runs]}
    return WindowSet(data, np.concatenate(groups) if groups else np.zeros(0, np.int64), summary)


def split_by_larva(windows: WindowSet, validation_fraction: float = 0.2,
                   seed: int = 0) -> tuple[WindowSet, WindowSet]:
    """Train/validation split with every larva's windows on one side only."""
    larvae = np.unique(windows.groups)
    rng = np.random.default_rng([seed, 2])
    n_val = max(1, int(round(validation_fraction * len(larvae)))) if len(larvae) > 1 else 0
    validation = np.isin(windows.groups, rng.permutation(larvae)[:n_val])
    return windows.subset(~validation), windows.subset(validation)


def pretrain(
    train: WindowSet,
    validation: WindowSet,
    model_config: MaggotUBAConfig,
    spec: WindowSpec,
    output_dir: str | Path,
    config: PretrainConfig | None = None,
    resume: bool = True,
    keep_checkpoint: bool = False,
    progress: Callable[[int, float, float | None], None] | None = None,
    device: str = "cpu",
    initial_state: dict | None = None,
) -> dict:
    """Train the autoencoder; write the best model into ``output_dir``; return the log.

    ``initial_state``: autoencoder weights to start from (continued pretraining of an
    existing encoder on new windows) instead of a random initialisation.

    ``progress(iteration, train_loss, validation_loss_or_None)`` is called
    after every iteration (for progress bars).
    """
    config = config or PretrainConfig()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if len(train) == 0 or len(validation) == 0:
        raise ValueError("pretraining needs training and validation windows")
    if (train.data.shape[-1] != spec.width or model_config.len_traj != spec.len_traj
            or model_config.len_pred != spec.len_pred or model_config.output_length != spec.width):
        raise ValueError("windows, window spec and model configuration disagree on lengths "
                         f"(windows {train.data.shape[-1]}, spec {spec.len_pred}+{spec.len_traj}"
                         f"+{spec.len_pred}, model {model_config.len_pred}+{model_config.len_traj}"
                         f"+{model_config.len_pred})")
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    model = AutoEncoder(model_config).to(device)
    if initial_state is not None:
        model.load_state_dict(initial_state)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    log = {"seed": config.seed, "iterations": config.iterations, "train_loss": [],
           "validation": [], "best_validation_loss": math.inf, "best_iteration": None,
           "data": {"train": train.summary, "train_windows": len(train),
                    "validation_windows": len(validation)}}
    start = 0
    checkpoint_path = output_dir / CHECKPOINT_FILE
    if resume and checkpoint_path.exists():
        state = torch.load(checkpoint_path, weights_only=True, map_location=device)
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        start = int(state["iteration"])
        log = json.loads(state["log"])
    _write_config(output_dir, model_config, spec, config)
    data = torch.from_numpy(train.data).to(device)
    present = slice(spec.len_pred, spec.len_pred + spec.len_traj)
    started = time.perf_counter()
    for iteration in range(start, config.iterations):
        model.train()
        rng = np.random.default_rng([config.seed, iteration])
        index = torch.from_numpy(rng.integers(0, len(data), size=config.batch_size)).to(device)
        batch = data[index]
        loss = torch.nn.functional.mse_loss(model(batch[..., present]), batch)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimiser.step()
        log["train_loss"].append(loss.item())
        validation_loss = None
        done = iteration + 1
        if done % config.validate_every == 0 or done == config.iterations:
            validation_loss = evaluate(model, validation, spec, device=device)
            log["validation"].append([done, validation_loss])
            if validation_loss < log["best_validation_loss"]:
                log["best_validation_loss"], log["best_iteration"] = validation_loss, done
                _save_weights(model, output_dir)
            _save_checkpoint(checkpoint_path, model, optimiser, done, log)
        if progress is not None:
            progress(done, log["train_loss"][-1], validation_loss)
    log["seconds"] = log.get("seconds", 0.0) + time.perf_counter() - started
    atomic_write_text(output_dir / LOG_FILE, json.dumps(log, indent=1))
    if not keep_checkpoint and checkpoint_path.exists():
        checkpoint_path.unlink()
    return log


@torch.inference_mode()
def evaluate(model: AutoEncoder, windows: WindowSet, spec: WindowSpec, batch_size: int = 1024,
             device: str = "cpu") -> float:
    """Mean squared reconstruction error over ``windows`` (eval mode)."""
    model.eval()
    present = slice(spec.len_pred, spec.len_pred + spec.len_traj)
    total, count = 0.0, 0
    for start in range(0, len(windows), batch_size):
        batch = torch.from_numpy(windows.data[start:start + batch_size]).to(device)
        error = torch.nn.functional.mse_loss(model(batch[..., present]), batch, reduction="sum")
        total += float(error)
        count += batch.numel()
    return total / count


def load_pretrained(directory: str | Path) -> tuple[AutoEncoder, MaggotUBAConfig, WindowSpec]:
    """The best autoencoder saved by :func:`pretrain` (eval mode)."""
    directory = Path(directory)
    model_config, spec = read_config(directory)
    model = AutoEncoder(model_config)
    model.encoder.load_state_dict(load_file(directory / ENCODER_FILE))
    model.decoder.load_state_dict(load_file(directory / DECODER_FILE))
    return model.eval(), model_config, spec


def load_encoder(directory: str | Path) -> tuple[dict, MaggotUBAConfig]:
    """(encoder state dict, MaggotUBAConfig) of a pretrained instance, in our format
    (written by :func:`pretrain`) or the original MaggotUBA's (``best_validated_encoder.pt``)."""
    from .models.compat import load_published_encoder

    directory = Path(directory)
    if (directory / "best_validated_encoder.safetensors").is_file():
        model, config, _ = load_pretrained(directory)
        return model.encoder.state_dict(), config
    encoder, config = load_published_encoder(directory)
    return encoder.state_dict(), config


def read_config(directory: Path) -> tuple[MaggotUBAConfig, WindowSpec]:
    raw = json.loads((Path(directory) / CONFIG_FILE).read_text())
    spec = WindowSpec(**raw.get("window", {}))
    return MaggotUBAConfig.from_json(raw), spec


def _write_config(directory: Path, model_config: MaggotUBAConfig, spec: WindowSpec,
                  config: PretrainConfig) -> None:
    document = json.loads(model_config.to_json())
    document["window"] = asdict(spec)
    document["pretraining"] = asdict(config)
    atomic_write_text(directory / CONFIG_FILE, json.dumps(document, indent=2))


def _save_weights(model: AutoEncoder, directory: Path) -> None:
    for module, name in ((model.encoder, ENCODER_FILE), (model.decoder, DECODER_FILE)):
        state = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
        with atomic_path(directory / name) as tmp:
            save_file(state, str(tmp))


def _save_checkpoint(path: Path, model: AutoEncoder, optimiser, iteration: int, log: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save({"model": model.state_dict(), "optimiser": optimiser.state_dict(),
                    "iteration": iteration, "log": json.dumps(log)}, tmp)
