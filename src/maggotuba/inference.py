"""Fast CPU inference for the MaggotUBA encoder: the whole network as a chain of GEMMs.

The encoder (see :mod:`maggotuba.models.autoencoder`) alternates ``(n_points, 1)`` body
convolutions and ``(1, len_traj)`` time convolutions over a tiny ``5 x 20`` grid, each
followed by an activation and a BatchNorm. On such a grid a "same" convolution is a dense
linear map, so every layer becomes one matrix product:

* a **time** convolution ``C_in -> C_out`` with kernel ``(1, K)`` is, for every window and
  spine point, the product of the ``T*C_in`` input row with a precomputed
  *Toeplitz-expanded* ``(T*C_in) x (T*C_out)`` matrix. The zero padding is inside the
  matrix (taps that would read padding are zeros), so one GEMM
  ``(batch*5) x (T*C_in) @ (T*C_in) x (T*C_out)`` does the whole layer. With ``K = T = 20``
  and the original padding (10 left, 9 right) the expansion costs no more multiply-adds
  than the direct convolution over the padded input (both do 20 taps per output); and
  since a quarter of the expanded matrix is structurally zero (the taps that read
  padding), its columns are split into 4 groups of output times, each multiplied only by
  the band of input times it depends on (15 % fewer multiply-adds for the 128 -> 64
  layer, about 8 % less time overall);
* a **body** convolution with kernel ``(K, 1)`` is, for every window and time step, the
  product of the ``5*C_in`` input row with a ``(5*C_in) x (5*C_out)`` matrix: one GEMM
  ``(batch*T) x (5*C_in) @ (5*C_in) x (5*C_out)``.

Activations are stored with the channel innermost: ``(batch, point, time, channel)`` for
the time convolutions, ``(batch, time, point, channel)`` for the body convolutions, one
transposing copy between them (blocks of ``C`` contiguous values). The first body
convolution reads the raw ``(batch, 2, 5, T)`` windows as ``(batch, T, 2*5)`` rows and
writes ``(batch, point, time, channel)`` directly, one small GEMM per output point (the
128-channel result is the largest tensor and is never transposed). The final Linear gets
its columns permuted to the last layout.

BatchNorm folding is exact here, bias included: each block is ``conv -> act -> BN`` and the
BN affine map ``a*x + b`` of block ``k`` is folded into the dense matrix of block ``k+1``
(``diag(a)`` on its input side) and into its bias (``b`` pushed through the dense matrix).
Because the padding zeros are explicit entries of the dense matrix, the pushed-through
bias is automatically the per-position one (a time-conv bias varies with time, a body-conv
bias with the spine point), which is what
:func:`~maggotuba.models.autoencoder.fold_batchnorm` computes as bias maps. Each layer is
then ``act(X @ D + bias)``: GEMM(s) and one fused add+ReLU pass. Folding is done in
float64, rounded once.

Windows are processed in sub-batches of :data:`best_batch_size` into preallocated buffers
(no allocation per call, the 128-channel intermediate stays at a few MB) with a fixed
number of torch threads, so the same input gives bit-identical output run to run.

Measured on a 2-core Sapphire Rapids VM (AVX-512, AMX; fp32 matmul peak ~440 GFLOP/s, so
the fp32 limit is ~10,400 windows/s at 42.3 MFLOP per window), see
``benchmarks/encoder_benchmark.py``: ``fp32`` ~9,500 windows/s (~92 % of that limit; the
plain ``Encoder`` reaches 50-65 %), ``bf16`` ~21,000 and ``bf16-full`` ~36,000 windows/s.
"""

from __future__ import annotations

import functools
import math
import os
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .models.autoencoder import Encoder, FusedEncoder, _bn_affine

__all__ = ["PRECISIONS", "FastEncoder", "best_batch_size", "make_inference_encoder", "supports"]

#: Sub-batch size (windows) used internally: the measured optimum of the GEMM chain on the
#: reference machine (throughput within a few % from 128 to 1024; the fp32 128-channel
#: intermediate of a 256-window sub-batch is 13 MB).
best_batch_size = 256

#: Accepted ``precision`` values (see :class:`FastEncoder`).
PRECISIONS = ("fp32", "bf16", "bf16-full")

_HTC, _THC = "HTC", "THC"  # (batch, point, time, channel) / (batch, time, point, channel)


def _default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


_NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.lru_cache(maxsize=1)
def has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX). Without it,
    torch emulates bf16 GEMMs: measured 140x *slower* than fp32 on an AVX2 EPYC."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:  # pragma: no cover - not Linux: trust torch's own dispatch level
        return torch.backends.cpu.get_cpu_capability().startswith("AVX512")
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    return any(flag in flags for flag in _NATIVE_BF16_FLAGS)


@torch.no_grad()
def _time_matrix(w: torch.Tensor, left: int, T: int) -> torch.Tensor:
    """Dense ``(T*C_in, T*C_out)`` matrix of a ``(1, K)`` "same" conv on T steps.

    Row ``(t, ci)``, column ``(t', co)``: ``w[co, ci, 0, t - t' + left]`` where that tap
    exists, 0 where the convolution would read padding.
    """
    c_out, c_in, _, K = w.shape
    t = torch.arange(T)
    k = t.view(T, 1) - t.view(1, T) + left  # (t, t')
    mask = (k >= 0) & (k < K)
    taps = w[:, :, 0, :][:, :, k.clamp(0, K - 1)] * mask  # (co, ci, t, t')
    return taps.permute(2, 1, 3, 0).reshape(T * c_in, T * c_out)


@torch.no_grad()
def _body_matrix(w: torch.Tensor, top: int, H: int, raw_input: bool) -> torch.Tensor:
    """Dense ``(H*C_in, H*C_out)`` matrix of a ``(K, 1)`` "same" conv on H points.

    Row ``(h, ci)`` (``(ci, h)`` for the raw, channel-major input), column ``(h', co)``.
    """
    c_out, c_in, K, _ = w.shape
    h = torch.arange(H)
    k = h.view(H, 1) - h.view(1, H) + top  # (h, h')
    mask = (k >= 0) & (k < K)
    taps = w[:, :, :, 0][:, :, k.clamp(0, K - 1)] * mask  # (co, ci, h, h')
    order = (1, 2, 3, 0) if raw_input else (2, 1, 3, 0)
    return taps.permute(*order).reshape(H * c_in, H * c_out)


def _band_parts(D: torch.Tensor, T: int, c_in: int, c_out: int) -> list[tuple[int, int, int, int]]:
    """Split a time matrix's columns into groups of output times, each with the contiguous
    range of input-time rows it needs: ``(row0, row1, col0, col1)`` slices.

    Structural zeros (taps that read padding) outside a group's row range are skipped;
    splitting is used only when it saves >= 10 % of the multiply-adds and the groups keep
    at least 128 columns (narrower GEMMs lose more in efficiency than they save).
    """
    whole = [(0, T * c_in, 0, T * c_out)]
    n_groups = 4
    width = math.ceil(T / n_groups)
    if T < 8 or width * c_out < 128:
        return whole
    nonzero = (D.view(T, c_in, T, c_out) != 0).any(dim=3).any(dim=1)  # (t, t')
    parts = []
    for start in range(0, T, width):
        stop = min(T, start + width)
        rows = torch.nonzero(nonzero[:, start:stop].any(dim=1)).flatten()
        if len(rows) == 0:
            lo, hi = 0, 1  # an all-zero group still needs its output written: keep 1 block
        else:
            lo, hi = int(rows.min()), int(rows.max()) + 1
        parts.append((lo * c_in, hi * c_in, start * c_out, stop * c_out))
    used = sum((r1 - r0) * (c1 - c0) for r0, r1, c0, c1 in parts)
    return parts if used <= 0.9 * (T * c_in) * (T * c_out) else whole


class _Layer:
    """One block of the chain: ``act(X @ D + bias)``, GEMM in ``dtype``."""

    def __init__(self, kind: str, first: bool, matrix: torch.Tensor, bias: torch.Tensor | None,
                 c_in: int, c_out: int, in_layout: str, out_layout: str):
        self.kind = kind                # "time" | "body"
        self.first = first              # reads the raw (n, C, H, T) windows
        self.matrix = matrix            # float64 (rows, cols) until finalised
        self.bias = bias                # float64 (cols,) or None
        self.c_in, self.c_out = c_in, c_out
        self.in_layout, self.out_layout = in_layout, out_layout
        self.dtype = torch.float32
        self.bias_in_gemm = False       # bias added by the GEMM (addmm)
        self.widen = False              # bf16 GEMM whose output is widened to float32
        self.parts: list[tuple[int, int, int, int, torch.Tensor]] = []
        self.macs = matrix.numel()      # per GEMM row; times rows per window below


def supports(encoder: Encoder) -> bool:
    """Whether the GEMM chain applies: every kernel is ``(k, 1)`` or ``(1, k)``."""
    return all(kh == 1 or kw == 1 for kh, kw in encoder.config.enc_kernel)


class FastEncoder:
    """Eval-mode MaggotUBA encoder as a chain of GEMMs (inference only, CPU).

    ``FastEncoder(encoder)(windows)`` maps a float32 array ``(n, 2, 5, len_traj)`` to the
    ``(n, dim_latent)`` float32 embeddings of ``encoder.eval()(windows)``. It is a snapshot
    of the encoder's weights and BatchNorm running statistics at construction time (the
    running statistics are used whatever the encoder's train/eval mode).

    Precisions:

    * ``"fp32"``: everything in float32; equal to the plain encoder up to float32 rounding
      (both are within ~1e-5 of the float64 result for embeddings up to ~6, ~2e-6 for the
      published fixture).
    * ``"bf16"``: only the dominant layer(s), those with >= 25 % of the multiply-adds (the
      128 -> 64 time convolution, 78 %, for the default architecture), run as bfloat16 GEMMs
      (AMX / AVX512-BF16 through oneDNN, float32 accumulation, output rounded to bfloat16);
      every other layer, the bias/activation passes and the final Linear stay float32.
      About 2.2x the fp32 path; embeddings within ~2e-3 of fp32 for the published encoder
      on simulated larvae, 99.98 % of the argmax labels of random linear heads unchanged.
    * ``"bf16-full"``: every convolution in bfloat16 (weights and activations), only the
      final Linear in float32. About 3.9x the fp32 path, ~10x larger errors than ``"bf16"``
      (99.8 % of labels unchanged on average, but down to 95 % for some heads).

    Calls are serialised by a lock (the buffers are shared) and run with ``threads`` torch
    threads (the previous setting is restored afterwards). The same input gives
    bit-identical output from call to call.
    """

    def __init__(self, encoder: Encoder, precision: str = "fp32", threads: int | None = None,
                 batch_size: int | None = None):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
        if isinstance(encoder, FusedEncoder):
            raise TypeError("pass the Encoder itself, not its fused copy")
        if not supports(encoder):
            raise ValueError("FastEncoder needs (k, 1) or (1, k) kernels; use Encoder.fused() instead")
        cfg = encoder.config
        self.config = cfg
        self.precision = precision
        self.threads = int(threads) if threads else _default_threads()
        self.batch_size = int(batch_size) if batch_size else best_batch_size
        if self.threads < 1 or self.batch_size < 1:
            raise ValueError("threads and batch_size must be positive")
        self.input_shape = tuple(cfg.input_shape)
        self.n_points, self.len_traj = cfg.n_points, cfg.len_traj
        self.dim_latent = cfg.dim_latent
        self.activation = cfg.activation
        self._act_inplace: Callable[[torch.Tensor], torch.Tensor] = {
            "relu": torch.relu_, "elu": nn.functional.elu_, "tanh": torch.tanh_,
            "sigmoid": torch.sigmoid_,
        }[cfg.activation]
        layers, linear_w, linear_b = self._build(encoder)
        self._layers = self._finalise(layers, precision)
        # final Linear (float32 whatever the precision), rows in the last layer's layout
        H, T = self.n_points, self.len_traj
        lw = linear_w.view(-1, cfg.enc_filters[-1], H, T)  # (L, C, H, T)
        order = (0, 2, 3, 1) if self._layers[-1].out_layout == _HTC else (0, 3, 2, 1)
        self._linear_w = lw.permute(*order).reshape(lw.shape[0], -1).t().float().contiguous()
        self._linear_b = linear_b.float().contiguous()
        self._buffers: list[dict[str, torch.Tensor]] | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ construction
    @torch.no_grad()
    def _build(self, encoder: Encoder) -> tuple[list[_Layer], torch.Tensor, torch.Tensor]:
        """Dense float64 matrices and biases with every BatchNorm folded in (exactly)."""
        cfg = encoder.config
        H, T = cfg.n_points, cfg.len_traj
        mods = list(encoder.convolutional_blocks)
        if len(mods) % 4:
            raise ValueError("unexpected encoder structure")
        layers: list[_Layer] = []
        prev: tuple[torch.Tensor, torch.Tensor] | None = None
        for j in range(0, len(mods), 4):
            pad, conv, _act, bn = mods[j:j + 4]
            first = j == 0
            w = conv.weight.detach().double().cpu()
            c_out, c_in, kh, _kw = w.shape
            left, _right, top, _bottom = pad.padding
            has_bias = prev is not None or conv.bias is not None
            conv_bias = (conv.bias.detach().double().cpu() if conv.bias is not None
                         else torch.zeros(c_out, dtype=torch.float64))
            if prev is None:  # no BatchNorm before the first block
                a = torch.ones(c_in, dtype=torch.float64)
                b = torch.zeros(c_in, dtype=torch.float64)
            else:
                a, b = (v.detach().double().cpu() for v in prev)
            if kh == 1:  # time conv, rows (t, ci), columns (t', co)
                D = _time_matrix(w, left, T)
                a_rows, b_rows = a.repeat(T), b.repeat(T)
                col_bias = conv_bias.repeat(T)
                in_layout = out_layout = _HTC
            else:  # body conv, rows (h, ci) (raw input: (ci, h)), columns (h', co)
                D = _body_matrix(w, top, H, raw_input=first)
                a_rows = a.repeat_interleave(H) if first else a.repeat(H)
                b_rows = b.repeat_interleave(H) if first else b.repeat(H)
                col_bias = conv_bias.repeat(H)
                in_layout = _THC
                out_layout = _HTC if first else _THC  # see _finalise
            bias = b_rows @ D + col_bias
            D = D * a_rows.view(-1, 1)
            layer = _Layer("time" if kh == 1 else "body", first, D, bias if has_bias else None,
                           c_in, c_out, in_layout, out_layout)
            layer.macs *= H if kh == 1 else T
            layers.append(layer)
            prev = _bn_affine(bn)
        linear, bn1 = encoder.output_layers
        lw = linear.weight.detach().double().cpu()
        lb = (linear.bias.detach().double().cpu() if linear.bias is not None
              else torch.zeros(lw.shape[0], dtype=torch.float64))
        a, b = (v.detach().double().cpu() for v in prev)
        lw4 = lw.view(lw.shape[0], cfg.enc_filters[-1], H, T)
        lb = lb + (lw4 * b.view(1, -1, 1, 1)).sum(dim=(1, 2, 3))
        lw4 = lw4 * a.view(1, -1, 1, 1)
        a1, b1 = (v.detach().double().cpu() for v in _bn_affine(bn1))
        lw = lw4.reshape(lw.shape[0], -1) * a1.view(-1, 1)
        lb = lb * a1 + b1
        return layers, lw, lb

    def _finalise(self, layers: list[_Layer], precision: str) -> list[_Layer]:
        """Per-layer dtypes, band splits and final matrix/bias shapes and types."""
        H, T = self.n_points, self.len_traj
        total = sum(L.macs for L in layers)
        for L in layers:
            if precision == "bf16-full" or (precision == "bf16" and L.macs >= 0.25 * total):
                L.dtype = torch.bfloat16
        for i, L in enumerate(layers):
            nxt = layers[i + 1].dtype if i + 1 < len(layers) else None
            # a bf16 GEMM feeding a float32 layer: its output is widened to float32 first and
            # the bias added in float32 (rounding error relative to X @ D, not X @ D + bias)
            L.widen = L.dtype == torch.bfloat16 and nxt == torch.float32
            if L.kind == "time":
                # (the band split pays in float32 only: the AMX bf16 GEMM is not compute-bound)
                slices = (_band_parts(L.matrix, T, L.c_in, L.c_out) if L.dtype == torch.float32
                          else [(0, L.matrix.shape[0], 0, L.matrix.shape[1])])
                L.parts = [(r0, r1, c0, c1, L.matrix[r0:r1, c0:c1].to(L.dtype).contiguous())
                           for r0, r1, c0, c1 in slices]
                L.matrix = None
                bias = L.bias
            elif L.first:
                # one (T, C*H) @ (C*H, C_out) product per output point h': (H, C*H, C_out),
                # written straight into the (batch, point, time, channel) layout
                L.matrix = L.matrix.view(-1, H, L.c_out).transpose(0, 1).to(L.dtype).contiguous()
                bias = None if L.bias is None else L.bias.view(H, 1, L.c_out)
            else:
                L.matrix = L.matrix.to(L.dtype).contiguous()
                bias = L.bias
            bias_dtype = torch.float32 if L.widen else L.dtype
            L.bias = None if bias is None else bias.to(bias_dtype).contiguous()
            # bf16: the bias is added by the GEMM (addmm: in float32, before the output is
            # rounded), which also saves a slow bf16 elementwise pass
            L.bias_in_gemm = (L.bias is not None and L.dtype == torch.bfloat16 and not L.widen
                              and not L.first and len(L.parts) <= 1)
        return layers

    # ------------------------------------------------------------------ running
    def _shape(self, layout: str, c: int) -> tuple[int, ...]:
        H, T = self.n_points, self.len_traj
        return (self.batch_size, H, T, c) if layout == _HTC else (self.batch_size, T, H, c)

    def _get_buffers(self) -> list[dict[str, torch.Tensor]]:
        """Per layer: input staging ("x", when a transpose and/or a cast is needed), GEMM
        output ("y") and widened output ("wide"); sliced to the chunk size at each call."""
        if self._buffers is not None:
            return self._buffers
        H, T = self.n_points, self.len_traj
        c0 = self.input_shape[0]
        bufs = []
        prev_layout, prev_dtype = None, torch.float32
        for L in self._layers:
            b: dict[str, torch.Tensor] = {}
            if L.first:
                shape = ((self.batch_size, H, T, c0) if L.kind == "time"
                         else (self.batch_size, T, c0 * H))
                b["x"] = torch.empty(shape, dtype=L.dtype)
            elif prev_layout != L.in_layout or prev_dtype != L.dtype:
                b["x"] = torch.empty(self._shape(L.in_layout, L.c_in), dtype=L.dtype)
            b["y"] = torch.empty(self._shape(L.out_layout, L.c_out), dtype=L.dtype)
            if L.widen:
                b["wide"] = torch.empty(self._shape(L.out_layout, L.c_out), dtype=torch.float32)
            bufs.append(b)
            prev_layout, prev_dtype = L.out_layout, (torch.float32 if L.widen else L.dtype)
        self._buffers = bufs
        return bufs

    def _bias_act(self, y: torch.Tensor, bias: torch.Tensor | None) -> None:
        if bias is not None and self.activation == "relu" and y.dtype == torch.float32:
            torch.ops.aten._add_relu_(y, bias)
            return
        if bias is not None:
            y.add_(bias)
        self._act_inplace(y)

    def _forward_chunk(self, x: torch.Tensor, out: torch.Tensor) -> None:
        """x: (n, C, H, T) float32; writes (n, dim_latent) float32 into out."""
        n = x.shape[0]
        H, T = self.n_points, self.len_traj
        h, layout = x, None
        for L, b in zip(self._layers, self._get_buffers()):
            if L.first:
                xin = b["x"][:n]
                if L.kind == "time":  # (n, C, H, T) -> (n, H, T, C)
                    xin.copy_(h.permute(0, 2, 3, 1))
                else:  # (n, C, H, T) -> (n, T, C*H)
                    xin.copy_(h.reshape(n, -1, T).transpose(1, 2))
            elif "x" in b:  # transpose between layouts and/or cast, in one copy
                xin = b["x"][:n]
                xin.copy_(h if layout == L.in_layout else h.transpose(1, 2))
            else:
                xin = h
            y = b["y"][:n]
            if L.kind == "time":
                a2, y2 = xin.reshape(n * H, -1), y.view(n * H, -1)
                if L.bias_in_gemm:
                    torch.addmm(L.bias, a2, L.parts[0][4], out=y2)
                elif len(L.parts) == 1:
                    torch.mm(a2, L.parts[0][4], out=y2)
                else:
                    for r0, r1, c0, c1, d in L.parts:
                        torch.mm(a2[:, r0:r1], d, out=y2[:, c0:c1])
            elif L.first:  # (n, 1, T, C*H) @ (H, C*H, C_out) -> (n, H, T, C_out)
                torch.matmul(xin.unsqueeze(1), L.matrix, out=y)
                y2 = y
            else:
                y2 = y.view(n * T, -1)
                if L.bias_in_gemm:
                    torch.addmm(L.bias, xin.reshape(n * T, -1), L.matrix, out=y2)
                else:
                    torch.mm(xin.reshape(n * T, -1), L.matrix, out=y2)
            if L.bias_in_gemm:
                self._act_inplace(y2)
                h = y
            elif L.widen:
                h = b["wide"][:n]
                h.copy_(y)
                self._bias_act(h.view(y2.shape), L.bias)
            else:
                self._bias_act(y2, L.bias)
                h = y
            layout = L.out_layout
        flat = h.reshape(n, -1)
        if flat.dtype != torch.float32:
            flat = flat.float()
        torch.addmm(self._linear_b, flat, self._linear_w, out=out)

    @torch.inference_mode()
    def forward_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings of a tensor ``(n, 2, 5, T)`` as a float32 tensor ``(n, dim_latent)``."""
        if x.dim() != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"encoder input must have shape (batch, {', '.join(map(str, self.input_shape))}),"
                             f" got {tuple(x.shape)}")
        x = x.to(device="cpu", dtype=torch.float32).contiguous()
        n = x.shape[0]
        result = torch.empty(n, self.dim_latent, dtype=torch.float32)
        if n == 0:
            return result
        bs = self.batch_size
        with self._lock:
            previous = torch.get_num_threads()
            if previous != self.threads:
                torch.set_num_threads(self.threads)
            try:
                for start in range(0, n, bs):
                    stop = min(n, start + bs)
                    self._forward_chunk(x[start:stop], result[start:stop])
            finally:
                if previous != self.threads:
                    torch.set_num_threads(previous)
        return result

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        """Embeddings ``(n, dim_latent)`` float32 of windows ``(n, 2, 5, T)``."""
        x = np.ascontiguousarray(windows, dtype=np.float32)
        return self.forward_tensor(torch.from_numpy(x)).numpy()


def make_inference_encoder(encoder: Encoder, precision: str = "fp32", threads: int | None = None,
                           batch_size: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """A callable ``windows (n, 2, 5, T) float32 -> embeddings (n, dim_latent) float32``.

    Uses :class:`FastEncoder` (the GEMM chain) when every kernel is ``(k, 1)`` or ``(1, k)``
    (the MaggotUBA default), the BN-folded
    :class:`~maggotuba.models.autoencoder.FusedEncoder` otherwise (fp32 only there).
    ``threads`` defaults to all the cores this process may use; ``batch_size`` (the
    internal sub-batch) to :data:`best_batch_size`.
    """
    if supports(encoder):
        return FastEncoder(encoder, precision=precision, threads=threads, batch_size=batch_size)
    if precision != "fp32":
        raise ValueError("reduced precision needs the GEMM path ((k, 1)/(1, k) kernels)")
    fused = encoder.fused()
    n_threads = int(threads) if threads else _default_threads()
    bs = int(batch_size) if batch_size else best_batch_size
    lock = threading.Lock()

    @torch.inference_mode()
    def run(windows: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32))
        with lock:
            previous = torch.get_num_threads()
            torch.set_num_threads(n_threads)
            try:
                parts = [fused(x[i:i + bs]) for i in range(0, x.shape[0], bs)]
            finally:
                torch.set_num_threads(previous)
        if not parts:
            return np.empty((0, encoder.config.dim_latent), dtype=np.float32)
        return torch.cat(parts).numpy()

    return run
