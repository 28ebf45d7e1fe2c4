"""Load autoencoders saved by the original MaggotUBA code.

The original ``maggotuba model train`` writes, in each experiment directory
(``<project>/training_log/<experiment>/``): ``config.json`` (the full configuration,
see :class:`~maggotuba.models.autoencoder.MaggotUBAConfig`), ``best_validated_encoder.pt``
(``torch.save(encoder.state_dict())``), ``best_validated_decoder.pt`` (the decoder's state
dict), plus ``best_validated_model.pt``/``checkpoint.pt`` (the whole trainer) and ONNX
exports, which are not needed here. MaggotUBA-adapter model instances store the same
configuration as ``autoencoder_config.json``; that name is accepted as well.

Every problem with the files raises :class:`taggingbackends.errors.FormatError`, whose
one-line message names the offending file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from taggingbackends.errors import FormatError, one_line

from .autoencoder import AutoEncoder, Encoder, MaggotUBAConfig

__all__ = [
    "CONFIG_NAMES",
    "DECODER_FILE",
    "ENCODER_FILE",
    "find_config",
    "load_published_autoencoder",
    "load_published_encoder",
    "load_state_dict_checked",
    "read_config",
    "read_state_dict",
]

#: Config file names, in order of preference.
CONFIG_NAMES = ("config.json", "autoencoder_config.json")
ENCODER_FILE = "best_validated_encoder.pt"
DECODER_FILE = "best_validated_decoder.pt"

# prefixes under which a sub-network's keys may appear in bigger state dicts
_PREFIXES = {
    "encoder": ("encoder.", "autoencoder.encoder.", "module."),
    "decoder": ("decoder.", "autoencoder.decoder.", "module."),
}


def _experiment_dir(experiment_dir: str | os.PathLike) -> Path:
    path = Path(experiment_dir)
    if not path.exists():
        raise FormatError(path, "model directory not found")
    if not path.is_dir():
        raise FormatError(path, "not a directory (expected a MaggotUBA experiment/model directory)")
    return path


def find_config(experiment_dir: str | os.PathLike) -> Path:
    """Path of the config file of an experiment directory (``config.json`` first)."""
    path = _experiment_dir(experiment_dir)
    for name in CONFIG_NAMES:
        if (path / name).is_file():
            return path / name
    raise FormatError(path / CONFIG_NAMES[0], "file not found (no MaggotUBA config in the model directory)")


def read_config(experiment_dir: str | os.PathLike) -> tuple[MaggotUBAConfig, Path]:
    """The experiment's :class:`MaggotUBAConfig` and the file it was read from."""
    config_path = find_config(experiment_dir)
    return MaggotUBAConfig.from_json(config_path), config_path


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """``torch.load(path, weights_only=True, map_location="cpu")``, checked to be a state dict."""
    path = Path(path)
    if not path.is_file():
        raise FormatError(path, "file not found")
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as err:  # pickle, zip and weights-only errors all come here
        raise FormatError(path, f"cannot load as a PyTorch state dict ({one_line(err, 200)})") from err
    if not isinstance(state, Mapping) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise FormatError(path, "not a PyTorch state dict (expected a mapping of names to tensors)")
    return dict(state)


def _select(state: dict[str, torch.Tensor], expected: Mapping[str, torch.Tensor],
            part: str) -> dict[str, torch.Tensor]:
    """``state`` itself, or its sub-dict under a known prefix if only that matches."""
    if any(k in expected for k in state):
        return state
    for prefix in _PREFIXES[part]:
        sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if sub and any(k in expected for k in sub):
            return sub
    return state


def load_state_dict_checked(module: nn.Module, state: dict[str, torch.Tensor],
                            path: str | os.PathLike, config_path: str | os.PathLike | None,
                            part: str = "encoder") -> None:
    """``module.load_state_dict(state, strict=True)`` with a one-line FormatError on mismatch."""
    path = Path(path)
    expected = module.state_dict()
    state = _select(state, expected, part)
    against = f" (config: {Path(config_path).name})" if config_path is not None else ""
    optional = {k for k in expected if k.endswith("num_batches_tracked")}
    missing = [k for k in expected if k not in state and k not in optional]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        bits = []
        if missing:
            bits.append(f"{len(missing)} missing key(s), e.g. '{missing[0]}'")
        if unexpected:
            bits.append(f"{len(unexpected)} unexpected key(s), e.g. '{unexpected[0]}'")
        raise FormatError(path, f"not a MaggotUBA {part} state dict matching the config{against}: "
                                + "; ".join(bits))
    bad = [(k, tuple(v.shape), tuple(expected[k].shape)) for k, v in state.items()
           if tuple(v.shape) != tuple(expected[k].shape)]
    if bad:
        key, got, want = bad[0]
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise FormatError(path, f"shape mismatch with the config{against}: '{key}' has shape {got},"
                                f" expected {want}{more}")
    try:
        module.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError, TypeError) as err:
        raise FormatError(path, f"cannot load the {part} weights ({one_line(err, 200)})") from err


def load_published_encoder(experiment_dir: str | os.PathLike) -> tuple[Encoder, MaggotUBAConfig]:
    """The encoder saved by the original MaggotUBA in ``experiment_dir``, in eval mode, on CPU.

    Reads ``config.json`` (or ``autoencoder_config.json``) and ``best_validated_encoder.pt``.
    """
    path = _experiment_dir(experiment_dir)
    config, config_path = read_config(path)
    weights_path = path / ENCODER_FILE
    state = read_state_dict(weights_path)
    try:
        encoder = Encoder(config, initialise=False)
    except (ValueError, TypeError, RuntimeError) as err:
        raise FormatError(config_path, f"cannot build the encoder ({one_line(err, 200)})") from err
    load_state_dict_checked(encoder, state, weights_path, config_path, "encoder")
    return encoder.eval(), config


def load_published_autoencoder(experiment_dir: str | os.PathLike) -> tuple[AutoEncoder, MaggotUBAConfig]:
    """Encoder and decoder saved by the original MaggotUBA, as an eval-mode :class:`AutoEncoder`.

    Reads the config, ``best_validated_encoder.pt`` and ``best_validated_decoder.pt``.
    """
    path = _experiment_dir(experiment_dir)
    config, config_path = read_config(path)
    enc_path, dec_path = path / ENCODER_FILE, path / DECODER_FILE
    enc_state = read_state_dict(enc_path)
    dec_state = read_state_dict(dec_path)
    try:
        model = AutoEncoder(config, initialise=False)
    except (ValueError, TypeError, RuntimeError) as err:
        raise FormatError(config_path, f"cannot build the autoencoder ({one_line(err, 200)})") from err
    load_state_dict_checked(model.encoder, enc_state, enc_path, config_path, "encoder")
    load_state_dict_checked(model.decoder, dec_state, dec_path, config_path, "decoder")
    return model.eval(), config

