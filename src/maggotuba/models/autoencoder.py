"""The MaggotUBA autoencoder: configuration, encoder, decoder, fused inference encoder.

This is an independent implementation of the convolutional autoencoder of the original
MaggotUBA code (GitHub ``DecBayComp/Approaches_to_detect_behavioural_changes``, folder
``maggotuba/``). The layer structure, the module names and therefore the state-dict keys
are the same as the original's, so that an original ``best_validated_encoder.pt`` (the
encoder's ``state_dict()``) loads into :class:`Encoder` with ``strict=True``, and
``best_validated_decoder.pt`` into :class:`Decoder`.

Input windows have shape ``(batch, 2, n_points, len_traj)``: channel 0 holds x and channel 1
holds y, the height runs over the 5 spine points (in the order of the Point_dynamics
columns), and the width is time. ``n_points = n_features // 2 = 5``.

Encoder (one block per entry of ``enc_filters``/``enc_kernel``)::

    ZeroPad2d("same") -> Conv2d(kernel, bias=config.bias) -> activation -> BatchNorm2d
    ... flatten(C, H, W) -> Linear(C*5*len_traj -> dim_latent) -> BatchNorm1d(dim_latent)

"Same" padding of a kernel extent ``k``: ``k // 2`` before and ``k // 2`` after when ``k``
is odd, ``k // 2`` before and ``k // 2 - 1`` after when ``k`` is even (so a ``(1, 20)``
time kernel gets 10 zeros on the left and 9 on the right; this is *not* PyTorch's
``padding="same"``, which puts the extra zero on the right).

Decoder::

    Linear(dim_latent -> 5*output_length) -> reshape (batch, 1, 5, output_length)
    blocks as in the encoder over dec_filters/dec_kernel (first block has 1 input channel)
    Conv2d(dec_filters[-1] -> 2, kernel 1x1, with bias) -> BatchNorm2d(2)

``output_length = len_pred + len_traj + len_pred`` for the default target
``past ‖ present ‖ future`` (concatenated along time).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from taggingbackends.errors import FormatError

__all__ = [
    "ACTIVATIONS",
    "AutoEncoder",
    "Decoder",
    "Encoder",
    "FusedEncoder",
    "MaggotUBAConfig",
    "fold_batchnorm",
    "init_weights",
    "same_padding",
]

#: Activation names accepted in ``config.json`` (same set as the original code).
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}

_TARGETS = ("past", "present", "future")
_DEFAULT_FILTERS = (128, 64, 32, 32, 32, 16)

# Keys in the order the original code writes them in config.json (args.default_config).
_ORIGINAL_KEY_ORDER = (
    "project_dir", "seed", "exp_name", "data_dir", "raw_data_dir", "log_dir", "exp_folder",
    "config", "num_workers", "n_features", "len_traj", "len_pred", "dim_latent",
    "activation", "enc_filters", "dec_filters", "enc_kernel", "dec_kernel", "bias",
    "enc_depth", "dec_depth", "init", "n_clusters", "dim_reduc", "optim_iter",
    "pseudo_epoch", "batch_size", "lr", "loss", "cluster_penalty", "cluster_penalty_coef",
    "length_penalty_coef", "grad_clip", "optimizer", "target",
)

# Alternative spellings accepted by MaggotUBAConfig.from_json (canonical name wins if
# both are present).
_ALIASES = {
    "latent_dim": "dim_latent",
    "n_latent": "dim_latent",
    "dim_z": "dim_latent",
    "encoder_filters": "enc_filters",
    "enc_channels": "enc_filters",
    "decoder_filters": "dec_filters",
    "dec_channels": "dec_filters",
    "encoder_kernel": "enc_kernel",
    "enc_kernels": "enc_kernel",
    "enc_kernel_size": "enc_kernel",
    "enc_kernel_sizes": "enc_kernel",
    "decoder_kernel": "dec_kernel",
    "dec_kernels": "dec_kernel",
    "dec_kernel_size": "dec_kernel",
    "dec_kernel_sizes": "dec_kernel",
    "encoder_depth": "enc_depth",
    "decoder_depth": "dec_depth",
    "nonlinearity": "activation",
    "activation_function": "activation",
    "use_bias": "bias",
    "conv_bias": "bias",
    "n_coordinates": "n_features",
    "len_past_future": "len_pred",
}


def default_encoder_kernels(len_traj: int) -> list[tuple[int, int]]:
    """The original default: (5,1) across the body alternating with (1,len_traj) over time."""
    return [(5, 1), (1, len_traj)] * 3


def default_decoder_kernels(len_traj: int) -> list[tuple[int, int]]:
    """The original default: time kernel first, then alternating."""
    return [(1, len_traj), (5, 1)] * 3


def same_padding(k: int) -> tuple[int, int]:
    """Zeros (before, after) that keep a dimension's size under a kernel of extent ``k``."""
    return (k // 2, k // 2) if k % 2 else (k // 2, k // 2 - 1)


def _pad_for(kernel: tuple[int, int]) -> tuple[int, int, int, int]:
    """ZeroPad2d argument (left, right, top, bottom) for a (height, width) kernel."""
    top, bottom = same_padding(kernel[0])
    left, right = same_padding(kernel[1])
    return (left, right, top, bottom)


def _as_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    try:
        as_float = float(value)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None
    if not math.isfinite(as_float) or as_float != int(as_float):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return int(as_float)


def _as_bool(name: str, value: Any) -> bool:
    if value is None:
        return False  # the original Decoder's default ``bias=None`` means no bias
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "0", "1"):
        return value.strip().lower() in ("true", "1")
    raise ValueError(f"{name} must be a boolean, got {value!r}")


def _filters(name: str, value: Any, depth: int) -> list[int]:
    if isinstance(value, (list, tuple)):
        out = [_as_int(f"{name}[{i}]", v) for i, v in enumerate(value)]
    else:
        # original semantics: a scalar width is repeated (depth - 1) times
        out = [_as_int(name, value)] * (depth - 1)
    if not out or any(c <= 0 for c in out):
        raise ValueError(f"{name} must list at least one positive channel count, got {value!r}")
    return out


def _kernels(name: str, value: Any, n_blocks: int) -> list[tuple[int, int]]:
    def pair(v: Any, where: str) -> tuple[int, int]:
        if isinstance(v, (list, tuple)) and len(v) == 2:
            h, w = _as_int(where, v[0]), _as_int(where, v[1])
        elif isinstance(v, (list, tuple)):
            raise ValueError(f"{where} must be a (height, width) pair, got {v!r}")
        else:
            h = w = _as_int(where, v)
        if h <= 0 or w <= 0:
            raise ValueError(f"{where} must be positive, got {v!r}")
        return (h, w)

    if isinstance(value, (list, tuple)):
        if len(value) == 2 and all(not isinstance(v, (list, tuple)) for v in value):
            # a single (height, width) pair: used for every block
            return [pair(value, name)] * n_blocks
        return [pair(v, f"{name}[{i}]") for i, v in enumerate(value)]
    return [pair(value, name)] * n_blocks


@dataclass
class MaggotUBAConfig:
    """The hyperparameters of a MaggotUBA autoencoder, as in the original ``config.json``.

    Defaults are the original's (``args.default_config``) except ``dim_latent``, which is 25
    here (the original default is 10). ``len_pred=None`` means ``len_pred = len_traj``, and
    ``enc_kernel``/``dec_kernel`` left to ``None`` get the original default kernels computed
    from ``len_traj``.

    Architecture keys: ``len_traj, len_pred, dim_latent, n_features, activation,
    enc_filters, dec_filters, enc_kernel, dec_kernel, bias, enc_depth, dec_depth, init,
    target``. Training keys are kept so that a config survives a read/write round trip.
    Any other key of the file (paths, adapter-specific settings) is kept in ``extra`` and
    written back by :meth:`to_json`.

    As in the original, a list in ``enc_filters`` fixes the number of blocks and
    ``enc_depth`` is then unused; a scalar width is repeated ``enc_depth - 1`` times.
    """

    len_traj: int = 20
    len_pred: int | None = None
    dim_latent: int = 25
    n_features: int = 10
    activation: str = "relu"
    enc_filters: list[int] = field(default_factory=lambda: list(_DEFAULT_FILTERS))
    dec_filters: list[int] = field(default_factory=lambda: list(_DEFAULT_FILTERS))
    enc_kernel: list[tuple[int, int]] | None = None
    dec_kernel: list[tuple[int, int]] | None = None
    bias: bool = False
    enc_depth: int = 6
    dec_depth: int = 6
    init: str = "kaiming"
    target: list[str] = field(default_factory=lambda: list(_TARGETS))
    # training settings of the original (not used by the model itself)
    seed: int = 100
    optim_iter: int = 1000
    pseudo_epoch: int = 100
    batch_size: int = 128
    lr: float = 0.005
    loss: str = "MSE"
    optimizer: str = "adam"
    grad_clip: float = 100.0
    n_clusters: int = 2
    dim_reduc: str = "UMAP"
    cluster_penalty: str | None = None
    cluster_penalty_coef: float = 0.0
    length_penalty_coef: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.len_traj = _as_int("len_traj", self.len_traj)
        self.len_pred = self.len_traj if self.len_pred is None else _as_int("len_pred", self.len_pred)
        self.dim_latent = _as_int("dim_latent", self.dim_latent)
        self.n_features = _as_int("n_features", self.n_features)
        self.enc_depth = _as_int("enc_depth", self.enc_depth)
        self.dec_depth = _as_int("dec_depth", self.dec_depth)
        if self.len_traj <= 0 or self.len_pred < 0 or self.dim_latent <= 0:
            raise ValueError("len_traj and dim_latent must be positive and len_pred non-negative")
        if self.n_features <= 0 or self.n_features % 2:
            raise ValueError(f"n_features must be a positive even number, got {self.n_features}")
        if not isinstance(self.activation, str) or self.activation.lower() not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}")
        self.activation = self.activation.lower()
        self.bias = _as_bool("bias", self.bias)
        self.enc_filters = _filters("enc_filters", self.enc_filters, self.enc_depth)
        self.dec_filters = _filters("dec_filters", self.dec_filters, self.dec_depth)
        self.enc_kernel = (default_encoder_kernels(self.len_traj) if self.enc_kernel is None
                           else _kernels("enc_kernel", self.enc_kernel, len(self.enc_filters)))
        self.dec_kernel = (default_decoder_kernels(self.len_traj) if self.dec_kernel is None
                           else _kernels("dec_kernel", self.dec_kernel, len(self.dec_filters)))
        for side in ("enc", "dec"):
            nf, nk = len(getattr(self, f"{side}_filters")), len(getattr(self, f"{side}_kernel"))
            if nf != nk:
                raise ValueError(f"{side}_filters has {nf} entries but {side}_kernel has {nk}")
        if isinstance(self.target, str):
            self.target = [self.target]
        self.target = [str(t) for t in self.target]
        if not self.target or any(t not in _TARGETS for t in self.target):
            raise ValueError(f"target must be a non-empty subset of {list(_TARGETS)}, got {self.target!r}")
        if not isinstance(self.extra, dict):
            raise TypeError("extra must be a dict")

    # ----- derived sizes
    @property
    def n_points(self) -> int:
        """Number of spine points (5): the height of an input window."""
        return self.n_features // 2

    @property
    def output_length(self) -> int:
        """Length along time of the decoder output (past ‖ present ‖ future by default)."""
        return (("past" in self.target) * self.len_pred + ("present" in self.target) * self.len_traj
                + ("future" in self.target) * self.len_pred)

    @property
    def window_length(self) -> int:
        """Rows of a full training sample: ``2 * len_pred + len_traj``."""
        return 2 * self.len_pred + self.len_traj

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape of one encoder input window: ``(2, n_points, len_traj)``."""
        return (2, self.n_points, self.len_traj)

    # ----- (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dict with the original key names, in the original's key order."""
        known: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if f.name in ("enc_kernel", "dec_kernel"):
                value = [list(k) for k in value]
            elif isinstance(value, list):
                value = list(value)
            known[f.name] = value
        out: dict[str, Any] = {}
        for key in _ORIGINAL_KEY_ORDER:
            if key in known:
                out[key] = known.pop(key)
            elif key in self.extra:
                out[key] = self.extra[key]
        out.update(known)
        for key, value in self.extra.items():
            out.setdefault(key, value)
        return out

    def to_json(self, path: str | os.PathLike | None = None, indent: int = 2) -> str:
        """The config as JSON text (original key names); also written to ``path`` if given."""
        text = json.dumps(self.to_dict(), indent=indent)
        if path is not None:
            Path(path).write_text(text + "\n", encoding="utf-8")
        return text

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MaggotUBAConfig:
        """Build from a mapping with the original (or alias) key names.

        Raises ``ValueError``/``TypeError`` for invalid values. Unknown keys go to ``extra``.
        """
        if not isinstance(data, Mapping):
            raise TypeError(f"expected a JSON object, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        nested_extra = isinstance(data.get("extra"), Mapping)
        extra: dict[str, Any] = dict(data["extra"]) if nested_extra else {}
        kwargs = {key: value for key, value in data.items() if key in names}
        for key, value in data.items():
            if key in names or (key == "extra" and nested_extra):
                continue
            canonical = _ALIASES.get(key)
            if canonical is not None and canonical not in kwargs:
                kwargs[canonical] = value
            else:
                extra[key] = value
        return cls(**kwargs, extra=extra)

    @classmethod
    def from_json(cls, source: str | os.PathLike | Mapping[str, Any]) -> MaggotUBAConfig:
        """Read a config from a ``config.json`` path, a JSON text or an already-parsed dict.

        Tolerant of the original key names, of a few aliases (``latent_dim``, ...), of
        kernels written as JSON lists, of scalar widths/kernels, and of ``len_pred: null``.
        Problems raise :class:`taggingbackends.errors.FormatError` naming the file (no file
        name for a dict or a JSON text).
        """
        path: Path | None = None
        if isinstance(source, Mapping):
            data: Any = source
        elif isinstance(source, str) and source.lstrip().startswith("{"):
            try:
                data = json.loads(source)
            except json.JSONDecodeError as err:
                raise FormatError(None, f"invalid JSON ({err})") from err
        else:
            path = Path(source)
            try:
                text = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                raise FormatError(path, "file not found") from None
            except (OSError, UnicodeDecodeError) as err:
                raise FormatError(path, f"cannot read ({err})") from err
            try:
                data = json.loads(text)
            except json.JSONDecodeError as err:
                raise FormatError(path, f"invalid JSON ({err})") from err
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as err:
            raise FormatError(path, f"invalid MaggotUBA config: {err}") from err

    @classmethod
    def coerce(cls, config: MaggotUBAConfig | Mapping[str, Any] | str | os.PathLike | None = None,
               **overrides: Any) -> MaggotUBAConfig:
        """A config from a config object, a dict, a path, or keyword arguments."""
        if config is None:
            return cls.from_dict(overrides) if overrides else cls()
        if isinstance(config, cls):
            if not overrides:
                return config
            return cls.from_dict({**config.to_dict(), **overrides})
        if isinstance(config, (str, os.PathLike)) and "len_traj" in overrides:
            # Encoder(**config_dict) with the original's config.json: its "config" key is
            # the path that config was once saved to (maybe gone), not a file to read.
            return cls.from_dict({"config": str(config), **overrides})
        base = cls.from_json(config)
        return cls.from_dict({**base.to_dict(), **overrides}) if overrides else base


# ----------------------------------------------------------------------------------------
# layers


def _make_activation(name: str) -> nn.Module:
    return ACTIVATIONS[name]()


def _conv_block(c_in: int, c_out: int, kernel: tuple[int, int], bias: bool,
                activation: str) -> list[nn.Module]:
    """[ZeroPad2d, Conv2d, activation, BatchNorm2d]: 4 Sequential slots, as in the original."""
    return [
        nn.ZeroPad2d(_pad_for(kernel)),
        nn.Conv2d(c_in, c_out, kernel_size=kernel, bias=bias),
        _make_activation(activation),
        nn.BatchNorm2d(c_out, affine=True, track_running_stats=True),
    ]


def init_weights(module: nn.Module, scheme: str) -> None:
    """Re-initialise every Linear/Conv layer of ``module`` the way the original does.

    Biases are set to 0; weights get ``kaiming`` (uniform, ``nonlinearity="relu"``),
    ``xavier`` (uniform) or ``orthogonal`` init. Any other scheme name leaves PyTorch's
    default initialisation (as the original, which ignores unknown names). Layers are
    visited in ``Module.apply`` order (children before parents, registration order), so
    that with the same seed the draws follow the same sequence as the original code.
    """

    def visit(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d, nn.ConvTranspose2d)):
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
            if scheme == "orthogonal":
                nn.init.orthogonal_(m.weight)
            elif scheme == "xavier":
                nn.init.xavier_uniform_(m.weight)
            elif scheme == "kaiming":
                nn.init.kaiming_uniform_(m.weight, nonlinearity="relu")

    module.apply(visit)


class Encoder(nn.Module):
    """The MaggotUBA encoder: window ``(batch, 2, 5, len_traj)`` -> ``(batch, dim_latent)``.

    State-dict keys are those of the original: ``convolutional_blocks.{4i+1}.weight`` (conv
    of block i, plus ``.bias`` if ``config.bias``), ``convolutional_blocks.{4i+3}.*``
    (BatchNorm2d), ``output_layers.0.*`` (Linear) and ``output_layers.1.*`` (BatchNorm1d).

    ``Encoder(config)`` accepts a :class:`MaggotUBAConfig`, a config dict (for instance
    the parsed original ``config.json``) or a path; ``Encoder(**config_dict)`` also works.
    Use ``.eval()`` for inference: BatchNorm then uses its running statistics.
    """

    def __init__(self, config: MaggotUBAConfig | Mapping[str, Any] | str | os.PathLike | None = None,
                 *, initialise: bool = True, **overrides: Any):
        super().__init__()
        cfg = MaggotUBAConfig.coerce(config, **overrides)
        self.config = cfg
        channels = [2] + cfg.enc_filters
        layers: list[nn.Module] = []
        for c_in, c_out, kernel in zip(channels[:-1], channels[1:], cfg.enc_kernel):
            layers += _conv_block(c_in, c_out, kernel, cfg.bias, cfg.activation)
        self.convolutional_blocks = nn.Sequential(*layers)
        flat = cfg.enc_filters[-1] * cfg.n_points * cfg.len_traj
        self.output_layers = nn.Sequential(
            nn.Linear(flat, cfg.dim_latent),
            nn.BatchNorm1d(cfg.dim_latent, affine=True, track_running_stats=True),
        )
        if initialise:
            init_weights(self, cfg.init)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or tuple(x.shape[1:]) != self.config.input_shape:
            raise ValueError(f"encoder input must have shape (batch, {', '.join(map(str, self.config.input_shape))}),"
                             f" got {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        # flatten order: channel, then spine point, then time (C, H, W)
        return self.output_layers(self.convolutional_blocks(x).flatten(start_dim=1))

    def fused(self) -> FusedEncoder:
        """An inference-only copy with the BatchNorm layers folded in (see :func:`fold_batchnorm`)."""
        return fold_batchnorm(self)


class Decoder(nn.Module):
    """The MaggotUBA decoder: ``(batch, dim_latent)`` -> ``(batch, 2, 5, output_length)``.

    State-dict keys are those of the original: ``upsampling_layer.*`` (Linear),
    ``conv_blocks.{4i+1}.weight`` / ``conv_blocks.{4i+3}.*``, ``output_layers.0.*`` (1x1
    Conv2d with bias) and ``output_layers.1.*`` (BatchNorm2d(2)).
    """

    def __init__(self, config: MaggotUBAConfig | Mapping[str, Any] | str | os.PathLike | None = None,
                 *, initialise: bool = True, **overrides: Any):
        super().__init__()
        cfg = MaggotUBAConfig.coerce(config, **overrides)
        self.config = cfg
        self.upsampling_layer = nn.Linear(cfg.dim_latent, cfg.n_points * cfg.output_length)
        channels = [1] + cfg.dec_filters
        layers: list[nn.Module] = []
        for c_in, c_out, kernel in zip(channels[:-1], channels[1:], cfg.dec_kernel):
            layers += _conv_block(c_in, c_out, kernel, cfg.bias, cfg.activation)
        self.conv_blocks = nn.Sequential(*layers)
        self.output_layers = nn.Sequential(
            nn.Conv2d(cfg.dec_filters[-1], 2, (1, 1)),
            nn.BatchNorm2d(2, affine=True, track_running_stats=True),
        )
        if initialise:
            init_weights(self, cfg.init)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        x = self.upsampling_layer(z).reshape(-1, 1, cfg.n_points, cfg.output_length)
        return self.output_layers(self.conv_blocks(x))


class AutoEncoder(nn.Module):
    """Encoder + decoder. ``forward(present)`` returns the decoded target window.

    With the default target the output is ``past ‖ present ‖ future`` along time, of shape
    ``(batch, 2, 5, len_pred + len_traj + len_pred)``; the input is the present window only.
    State-dict keys: ``encoder.*`` and ``decoder.*`` (as the original ``AutoEncoder``).
    With ``torch.manual_seed(s)`` before construction, the initial weights equal those of
    the original ``AutoEncoder`` built under the same seed (same layer order and init).
    """

    def __init__(self, config: MaggotUBAConfig | Mapping[str, Any] | str | os.PathLike | None = None,
                 *, initialise: bool = True, **overrides: Any):
        super().__init__()
        cfg = MaggotUBAConfig.coerce(config, **overrides)
        self.config = cfg
        self.encoder = Encoder(cfg, initialise=False)
        self.decoder = Decoder(cfg, initialise=False)
        if initialise:
            init_weights(self, cfg.init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Latent codes of the present windows ``x``."""
        return self.encoder(x)

    def make_target(self, past: torch.Tensor | None, present: torch.Tensor,
                    future: torch.Tensor | None) -> torch.Tensor:
        """The training target: the configured parts concatenated along time."""
        parts = {"past": past, "present": present, "future": future}
        chosen = [parts[name] for name in _TARGETS if name in self.config.target]
        if any(p is None for p in chosen):
            raise ValueError(f"target {self.config.target} needs past/present/future windows")
        return torch.cat(chosen, dim=-1)

    def split_output(self, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split a decoder output into its ``past``/``present``/``future`` parts (those in target)."""
        out: dict[str, torch.Tensor] = {}
        start = 0
        for name in _TARGETS:
            if name in self.config.target:
                n = self.config.len_traj if name == "present" else self.config.len_pred
                out[name] = y[..., start:start + n]
                start += n
        return out


# ----------------------------------------------------------------------------------------
# inference-optimised encoder


def _bn_affine(bn: nn.BatchNorm1d | nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) in float64 such that eval-mode ``bn(x) == scale * x + shift``."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("BatchNorm without running statistics cannot be folded")
    scale = torch.rsqrt(bn.running_var.double() + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    shift = -bn.running_mean.double() * scale
    if bn.bias is not None:
        shift = shift + bn.bias.double()
    return scale, shift


class FusedEncoder(nn.Module):
    """Eval-mode :class:`Encoder` with every BatchNorm folded away (inference only).

    Built by :func:`fold_batchnorm`; it is a snapshot: later changes to the source encoder
    are not seen. It always computes the eval-mode function (running statistics), whatever
    ``train()``/``eval()`` says. Per block: ``act(conv(pad(x), W') + B)`` where ``B`` is a
    per-position bias map of shape ``(C, 5, len_traj)``; then one Linear.
    """

    def __init__(self, weights: Sequence[torch.Tensor], bias_maps: Sequence[torch.Tensor | None],
                 pads: Sequence[tuple[int, int, int, int]], activation: str,
                 linear_weight: torch.Tensor, linear_bias: torch.Tensor,
                 input_shape: tuple[int, int, int]):
        super().__init__()
        self.n_blocks = len(weights)
        self.pads = [tuple(p) for p in pads]
        self.input_shape = tuple(input_shape)
        self.activation = _make_activation(activation)
        for i, (w, b) in enumerate(zip(weights, bias_maps)):
            self.register_buffer(f"weight_{i}", w.contiguous())
            self.register_buffer(f"bias_map_{i}", None if b is None else b.contiguous())
        self.register_buffer("linear_weight", linear_weight.contiguous())
        self.register_buffer("linear_bias", linear_bias.contiguous())
        # symmetric "same" padding can be done by the convolution itself
        self._conv_padding: list[tuple[int, int] | None] = [
            (top, left) if (left == right and top == bottom) else None
            for (left, right, top, bottom) in self.pads
        ]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"encoder input must have shape (batch, {', '.join(map(str, self.input_shape))}),"
                             f" got {tuple(x.shape)}")
        for i in range(self.n_blocks):
            w = getattr(self, f"weight_{i}")
            padding = self._conv_padding[i]
            if padding is not None:
                x = F.conv2d(x, w, padding=padding)
            else:
                x = F.conv2d(F.pad(x, self.pads[i]), w)
            b = getattr(self, f"bias_map_{i}")
            if b is not None:
                x = x + b
            x = self.activation(x)
        return F.linear(x.flatten(start_dim=1), self.linear_weight, self.linear_bias)


@torch.no_grad()
def fold_batchnorm(encoder: Encoder) -> FusedEncoder:
    """Fold all BatchNorm layers of an :class:`Encoder` (eval-mode semantics), exactly.

    The original blocks are ``pad -> conv -> act -> BN``, so a BatchNorm follows the
    nonlinearity and can NOT be folded into its own convolution. What is folded, and why it
    is exact (up to float rounding; the folding is done in float64):

    * ``BN_k`` into ``conv_{k+1}`` (blocks 2..n): with ``BN_k(z) = a*z + b`` per channel,
      ``conv(pad(a*z + b)) = conv'(pad(z)) + B`` where ``conv'`` has its weights scaled by
      ``a`` along the input channels (exact: scaling commutes with zero padding) and
      ``B = conv(pad(b broadcast over the 5 x len_traj grid))``. Because the zero padding
      is applied to the BN *output*, ``B`` is NOT a per-channel constant: outputs whose
      receptive field overlaps the padding see fewer ``b`` terms. With 5 spine points and a
      (5,1) kernel (pads 2/2) only the centre point row is padding-free; with a
      (1, len_traj) kernel on len_traj frames (pads 10/9 for 20) only one time column is.
      Folding ``b`` into an ordinary per-channel conv bias would therefore be wrong almost
      everywhere. Since the encoder's input size is fixed (the Linear needs it), ``B`` is
      stored as a per-position bias map ``(C_out, 5, len_traj)``, which is exact.
    * the last ``BN2d`` into the Linear: flatten and Linear are affine with no padding in
      between, so ``W diag(a) z + (W b + c)``: exact.
    * the final ``BN1d`` into the Linear: ``a1 (W x + c) + b1``: exact.
    * ``ZeroPad2d`` + conv: done by the conv's own padding when symmetric (odd kernels),
      otherwise kept as an explicit pad: exact.
    """
    cfg = encoder.config
    mods = list(encoder.convolutional_blocks)
    if len(mods) % 4:
        raise ValueError("unexpected encoder structure")
    H, W = cfg.n_points, cfg.len_traj
    dtype = encoder.output_layers[0].weight.dtype
    weights, bias_maps, pads = [], [], []
    prev: tuple[torch.Tensor, torch.Tensor] | None = None
    for j in range(0, len(mods), 4):
        pad, conv, _act, bn = mods[j:j + 4]
        w = conv.weight.double()
        c_out = w.shape[0]
        conv_bias = conv.bias.double() if conv.bias is not None else None
        if prev is None:
            w_f = w
            bmap = None if conv_bias is None else conv_bias.view(c_out, 1, 1).expand(c_out, H, W)
        else:
            a, b = prev
            w_f = w * a.view(1, -1, 1, 1)
            const = b.view(1, -1, 1, 1).expand(1, b.numel(), H, W)
            bmap = F.conv2d(F.pad(const, pad.padding), w)[0]
            if conv_bias is not None:
                bmap = bmap + conv_bias.view(c_out, 1, 1)
        weights.append(w_f.to(dtype))
        bias_maps.append(None if bmap is None else bmap.to(dtype))
        pads.append(tuple(pad.padding))
        prev = _bn_affine(bn)
    linear, bn1 = encoder.output_layers
    lw = linear.weight.double()
    lb = linear.bias.double() if linear.bias is not None else torch.zeros(lw.shape[0], dtype=torch.float64)
    a, b = prev  # last BatchNorm2d, one value per channel, repeated over the (H, W) grid
    a_flat = a.repeat_interleave(H * W)
    b_flat = b.repeat_interleave(H * W)
    lb = lb + lw @ b_flat
    lw = lw * a_flat.view(1, -1)
    a1, b1 = _bn_affine(bn1)
    lw = lw * a1.view(-1, 1)
    lb = lb * a1 + b1
    fused = FusedEncoder(weights, bias_maps, pads, cfg.activation, lw.to(dtype), lb.to(dtype),
                         cfg.input_shape)
    fused.config = cfg
    return fused.to(encoder.output_layers[0].weight.device).eval()


def calibrate_batchnorm(module: nn.Module, input_shape: tuple[int, ...], seed: int = 0) -> nn.Module:
    """Give a randomly initialised model realistic batch-norm state, for tests and
    benchmarks: non-trivial affine parameters and running statistics accumulated over
    a few train-mode passes on random inputs of ``input_shape`` (without the batch
    axis). Returns ``module`` in eval mode."""
    g = torch.Generator().manual_seed(seed)
    bns = [m for m in module.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    with torch.no_grad():
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average
            m.weight.copy_(0.7 + 0.6 * torch.rand(m.num_features, generator=g))
            m.bias.copy_(0.3 * torch.randn(m.num_features, generator=g))
        module.train()
        for _ in range(4):
            module(0.3 + 1.5 * torch.randn(64, *input_shape, generator=g))
        for m in bns:
            m.momentum = 0.1
    return module.eval()
