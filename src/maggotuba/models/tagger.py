"""The MaggotUBA tagger: the pretrained encoder followed by a dense classifier.

Training runs in two phases (SPEC §6.2, MR !1's ``n_pretraining_iter`` and
``n_finetuning_iter``): phase 1 trains the classifier on the frozen encoder
(eval mode, running batch-norm statistics), phase 2 fine-tunes encoder and
classifier together at a tenth of the learning rate. The loss is cross-entropy
weighted per class (``auto`` balancing: normalised inverse class frequency).
Every ``validate_every`` iterations the validation macro-F1 is computed and the
best model is kept. Batches are drawn from a generator seeded with
``(seed, phase, iteration)``: training is deterministic on a given device.

A model instance directory (``models/<instance>/``) holds:

* ``clf_config.json``: labels, classifier shape, window geometry, training
  settings, validation metrics, provenance;
* ``autoencoder_config.json``: the encoder's MaggotUBA configuration;
* ``tagger.safetensors``: encoder (``encoder.*``) and classifier
  (``classifier.*``) weights;
* ``training_log.json``: losses and validation history.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from taggingbackends.errors import FormatError
from taggingbackends.fileio import atomic_path, atomic_write_text

from ..features import WindowSpec
from .autoencoder import Encoder, MaggotUBAConfig

CLF_CONFIG_FILE = "clf_config.json"
AE_CONFIG_FILE = "autoencoder_config.json"
WEIGHTS_FILE = "tagger.safetensors"
LOG_FILE = "training_log.json"
DENSE_KIND = "maggotuba-dense"


@dataclass
class TaggerConfig:
    """What a tagger predicts and how it was trained."""

    labels: list[str]
    layers: int = 1
    hidden: int | None = None             # width of hidden layers (default: latent size)
    post_processing: list[str] = field(default_factory=lambda: ["abc_aac"])
    iterations: tuple[int, int] = (1000, 1000)   # phase 1 (frozen encoder), phase 2 (fine-tuning)
    batch_size: int = 128
    learning_rate: float = 0.005
    finetune_learning_rate: float = 0.0005
    grad_clip: float = 100.0
    validate_every: int = 100
    seed: int = 0
    balancing: str = "auto"
    class_weights: list[float] | None = None

    def __post_init__(self) -> None:
        self.labels = [str(label) for label in self.labels]
        self.iterations = tuple(int(i) for i in self.iterations)  # type: ignore[assignment]
        if len(self.labels) < 2:
            raise ValueError("a tagger needs at least two labels")
        if self.layers < 1:
            raise ValueError("--layers must be at least 1")
        if len(self.iterations) != 2 or min(self.iterations) < 0:
            raise ValueError("iterations must be two non-negative counts (frozen, fine-tuning)")


class Tagger(nn.Module):
    """Encoder + dense classifier: ``(n, 2, 5, len_traj)`` windows → class logits."""

    def __init__(self, model_config: MaggotUBAConfig, n_classes: int, layers: int = 1,
                 hidden: int | None = None) -> None:
        super().__init__()
        self.encoder = Encoder(model_config)
        width = hidden or model_config.dim_latent
        blocks: list[nn.Module] = []
        size = model_config.dim_latent
        for _ in range(layers - 1):
            blocks += [nn.Linear(size, width), nn.ReLU()]
            size = width
        blocks.append(nn.Linear(size, n_classes))
        self.classifier = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.encoder(x))


# --------------------------------------------------------------- training
@dataclass
class TrainingData:
    """Windows with class indices and the larva (group) each one comes from."""

    windows: np.ndarray   # (n, 2, 5, len_traj) float32
    labels: np.ndarray    # (n,) int64
    groups: np.ndarray    # (n,) int64

    def __len__(self) -> int:
        return len(self.labels)


def macro_f1(truth: np.ndarray, predicted: np.ndarray, n_classes: int) -> float:
    """Mean F1 over the classes present in ``truth``."""
    scores = []
    for c in range(n_classes):
        true_c, pred_c = truth == c, predicted == c
        if not true_c.any():
            continue
        tp = float(np.sum(true_c & pred_c))
        precision = tp / max(pred_c.sum(), 1)
        recall = tp / true_c.sum()
        scores.append(0.0 if tp == 0 else 2 * precision * recall / (precision + recall))
    return float(np.mean(scores)) if scores else 0.0


def train_tagger(
    train: TrainingData,
    validation: TrainingData,
    encoder_state: dict,
    model_config: MaggotUBAConfig,
    spec: WindowSpec,
    config: TaggerConfig,
    class_weights: np.ndarray,
    device: str = "cpu",
    progress: Callable[[str, int, float], None] | None = None,
    classifier_state: dict | None = None,
) -> tuple[Tagger, dict]:
    """Train a tagger from a pretrained encoder (and optionally a classifier, for
    fine-tuning an existing tagger); returns the best model (eval mode) and its log."""
    torch.manual_seed(config.seed)
    model = Tagger(model_config, len(config.labels), config.layers, config.hidden)
    model.encoder.load_state_dict(encoder_state)
    if classifier_state is not None:
        model.classifier.load_state_dict(classifier_state)
    model.to(device)
    weights = torch.as_tensor(np.asarray(class_weights, dtype=np.float32), device=device)
    loss_fn = nn.CrossEntropyLoss(weight=weights)
    windows = torch.from_numpy(train.windows)
    targets = torch.from_numpy(train.labels)
    log: dict = {"train_loss": [], "validation": [], "best_macro_f1": -1.0, "best": None}
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    started = time.perf_counter()
    for phase, (iterations, lr) in enumerate(zip(config.iterations,
                                                 (config.learning_rate, config.finetune_learning_rate))):
        frozen = phase == 0
        for p in model.encoder.parameters():
            p.requires_grad_(not frozen)
        params = model.classifier.parameters() if frozen else model.parameters()
        optimiser = torch.optim.Adam(params, lr=lr)
        for iteration in range(iterations):
            model.train()
            if frozen:
                model.encoder.eval()
            rng = np.random.default_rng([config.seed, phase, iteration])
            index = torch.from_numpy(rng.integers(0, len(train), size=config.batch_size))
            batch, target = windows[index].to(device), targets[index].to(device)
            loss = loss_fn(model(batch), target)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimiser.step()
            log["train_loss"].append(loss.item())
            done = iteration + 1
            if done % config.validate_every == 0 or done == iterations:
                score = macro_f1(validation.labels, predict_classes(model, validation.windows, device),
                                 len(config.labels))
                log["validation"].append([phase + 1, done, score])
                if score > log["best_macro_f1"]:
                    log["best_macro_f1"], log["best"] = score, [phase + 1, done]
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if progress is not None:
                progress("frozen encoder" if frozen else "fine-tuning", iteration + 1, log["train_loss"][-1])
    log["seconds"] = time.perf_counter() - started
    model.load_state_dict(best_state)
    return model.eval(), log


@torch.inference_mode()
def predict_classes(model: Tagger, windows: np.ndarray, device: str = "cpu",
                    batch_size: int = 1024) -> np.ndarray:
    model.eval()
    out = []
    for start in range(0, len(windows), batch_size):
        batch = torch.from_numpy(windows[start:start + batch_size]).to(device)
        out.append(model(batch).argmax(dim=1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


# ------------------------------------------------------------ persistence
@dataclass
class SavedTagger:
    """A tagger loaded from a model instance directory."""

    model: Tagger
    config: TaggerConfig
    model_config: MaggotUBAConfig
    spec: WindowSpec
    directory: Path
    weights_sha1: str
    metadata: dict


def save_tagger(model: Tagger, config: TaggerConfig, model_config: MaggotUBAConfig, spec: WindowSpec,
                directory: str | Path, log: dict | None = None, extra: dict | None = None) -> Path:
    """Write a model instance directory (atomically, file by file)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_path(directory / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp))
    document = {"kind": DENSE_KIND, **_config_dict(config), "window": asdict(spec),
                "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()}
    if extra:
        document.update(extra)
    atomic_write_text(directory / CLF_CONFIG_FILE, json.dumps(document, indent=2))
    atomic_write_text(directory / AE_CONFIG_FILE, model_config.to_json())
    if log is not None:
        atomic_write_text(directory / LOG_FILE, json.dumps(log))
    return directory


def load_dense_tagger(directory: str | Path, device: str = "cpu") -> SavedTagger:
    """Load a dense tagger saved by :func:`save_tagger`; FormatError if broken.

    Instances of any kind (dense, random forest, bagging) are loaded by
    :func:`maggotuba.instances.load_tagger`, which dispatches on ``kind``."""
    directory = Path(directory)
    kind = model_kind(directory)
    if kind not in (None, DENSE_KIND):
        raise FormatError(directory / CLF_CONFIG_FILE, f"is a {kind!r} model, not a dense tagger")
    for name in (CLF_CONFIG_FILE, AE_CONFIG_FILE, WEIGHTS_FILE):
        if not (directory / name).is_file():
            raise FormatError(directory, f"is not a tagger model directory (no {name})")
    try:
        document = json.loads((directory / CLF_CONFIG_FILE).read_text())
        config = TaggerConfig(**{k: document[k] for k in TaggerConfig.__dataclass_fields__ if k in document})
        spec = WindowSpec(**document["window"])
        model_config = MaggotUBAConfig.from_json(directory / AE_CONFIG_FILE)
    except (ValueError, KeyError, TypeError) as err:
        raise FormatError(directory / CLF_CONFIG_FILE, f"invalid tagger configuration: {err}") from err
    model = Tagger(model_config, len(config.labels), config.layers, config.hidden)
    weights_path = directory / WEIGHTS_FILE
    try:
        model.load_state_dict(load_file(str(weights_path)))
    except Exception as err:  # safetensors raises several types for corrupt files
        raise FormatError(weights_path, f"cannot load tagger weights: {str(err).splitlines()[0]}") from err
    digest = hashlib.sha1(weights_path.read_bytes()).hexdigest()
    return SavedTagger(model=model.to(device).eval(), config=config, model_config=model_config,
                       spec=spec, directory=directory, weights_sha1=digest, metadata=document)


def model_kind(directory: str | Path) -> str | None:
    """The ``kind`` of a model instance directory (None if unreadable or absent)."""
    try:
        document = json.loads((Path(directory) / CLF_CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return None
    return document.get("kind") if isinstance(document, dict) else None


def _config_dict(config: TaggerConfig) -> dict:
    out = asdict(config)
    out["iterations"] = list(config.iterations)
    return out
