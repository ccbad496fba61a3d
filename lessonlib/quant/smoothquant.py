"""Activation observers and SmoothQuant: migrating activation outliers into the weights for W8A8.

Xiao et al. 2023, "SmoothQuant: Accurate and Efficient Post-Training Quantization for Large Language
Models".  Activations have a few channels with huge magnitudes, which makes per-tensor INT8 activation
quantization lossy; weights are easy to quantize.  Since Y = X W^T = (X diag(s)^-1)(W diag(s))^T for any
s > 0 (section 4, eq. 3), choose per input channel j (eq. 4)

    s_j = max|X_j|^alpha / max|W_:,j|^(1 - alpha),   alpha = 0.5 by default,

so both factors have moderate ranges, then quantize both to INT8 ("W8A8").  ``max|X_j|`` comes from a
calibration observer: ``MinMaxObserver`` (running min/max) or ``PercentileObserver`` (a high percentile
of |x|, robust to rare spikes; Wu et al. 2020, "Integer Quantization for Deep Learning Inference", 4.2).
Weights are quantized per output channel, activations per tensor (static, from an observer, SmoothQuant's
O3) or dynamically per tensor / per token.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..models import get_weight
from .affine import QuantScheme, check_finite, dequantize_codes, fake_quant, quantize_codes

__all__ = ["MinMaxObserver", "PercentileObserver", "smooth_scales", "smooth_weight", "quantize_activation",
           "w8a8_linear", "W8A8Linear"]

_W8 = QuantScheme(8, -1, True)  # weights: per output channel, symmetric
_A8 = QuantScheme(8, 0, True)  # activations: per tensor, symmetric


class MinMaxObserver:
    """Running per-channel (last dim) or per-tensor min and max of everything passed to ``observe``."""

    def __init__(self, per_channel: bool = True):
        self.per_channel = per_channel
        self.min: torch.Tensor | None = None
        self.max: torch.Tensor | None = None

    def observe(self, x: torch.Tensor) -> None:
        check_finite(x, "activation")
        x = x.detach().reshape(-1, x.shape[-1]).float()  # (tokens, C)
        lo, hi = (x.amin(0), x.amax(0)) if self.per_channel else (x.min(), x.max())
        self.min = lo if self.min is None else torch.minimum(self.min, lo)
        self.max = hi if self.max is None else torch.maximum(self.max, hi)

    def absmax(self) -> torch.Tensor:
        if self.min is None:
            raise RuntimeError("observer has seen no data; call observe() first")
        return torch.maximum(self.min.abs(), self.max.abs())


class PercentileObserver:
    """The ``percentile`` (e.g. 99.9) of |x| per channel or per tensor, over everything observed
    (keeps at most ``max_values`` values per channel, a seeded subsample, to bound memory)."""

    def __init__(self, percentile: float = 99.9, per_channel: bool = False, max_values: int = 1 << 20, seed: int = 0):
        if not 0.0 < percentile <= 100.0:
            raise ValueError(f"percentile={percentile} is outside (0, 100]")
        self.percentile, self.per_channel, self.max_values = percentile, per_channel, max_values
        self.gen = torch.Generator().manual_seed(seed)
        self.values: list[torch.Tensor] = []

    def observe(self, x: torch.Tensor) -> None:
        check_finite(x, "activation")
        a = x.detach().reshape(-1, x.shape[-1]).abs().float().cpu()  # (tokens, C)
        self.values.append(a if self.per_channel else a.reshape(-1, 1))
        v = torch.cat(self.values)
        if v.shape[0] > self.max_values:
            v = v[torch.randperm(v.shape[0], generator=self.gen)[: self.max_values]]
        self.values = [v]

    def absmax(self) -> torch.Tensor:
        if not self.values:
            raise RuntimeError("observer has seen no data; call observe() first")
        v = self.values[0]  # (n, C or 1)
        k = max(1, min(v.shape[0], round(self.percentile / 100 * v.shape[0])))
        out = v.kthvalue(k, dim=0).values  # (C or 1,)
        return out if self.per_channel else out[0]


def smooth_scales(act_absmax: torch.Tensor, weight: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """SmoothQuant eq. 4: s_j = max|X_j|^alpha / max|W_:,j|^(1-alpha), (in,), clamped to >= 1e-5."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha} is outside [0, 1]")
    if weight.dim() != 2 or tuple(act_absmax.shape) != (weight.shape[1],):
        raise ValueError(f"act_absmax {tuple(act_absmax.shape)} must be (in,) for a weight {tuple(weight.shape)}")
    check_finite(act_absmax, "act_absmax")
    # BEGIN SOLUTION
    w_max = weight.detach().abs().float().amax(dim=0).clamp(min=1e-5)  # (in,): max over the output rows
    a_max = act_absmax.float().clamp(min=1e-5)  # (in,)
    s = (a_max.pow(alpha) / w_max.pow(1 - alpha)).clamp(min=1e-5)  # (in,)
    # END SOLUTION
    return s


def smooth_weight(weight: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """W diag(s): (out, in); the matching activation is X / s (folded into the previous op in practice)."""
    return weight * scales.to(weight.dtype)


def quantize_activation(x: torch.Tensor, absmax: torch.Tensor | float | None = None, per_token: bool = False,
                        bits: int = 8) -> torch.Tensor:
    """Symmetric fake quantization of activations (..., C): static with a given ``absmax`` (from an
    observer), else dynamic per tensor or per token."""
    x2 = x.reshape(-1, x.shape[-1]).float()  # (tokens, C)
    if absmax is not None:
        sch = QuantScheme(bits, 0, True)
        s = torch.as_tensor(absmax, dtype=torch.float32, device=x.device).clamp(min=1e-8) / sch.qmax
        out = dequantize_codes(quantize_codes(x2, s, torch.zeros_like(s), sch), s, torch.zeros_like(s))
    else:
        out = fake_quant(x2, QuantScheme(bits, -1 if per_token else 0, True))
    return out.reshape(x.shape).to(x.dtype)


def w8a8_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                act_absmax: torch.Tensor | float | None = None, per_token: bool = False) -> torch.Tensor:
    """Y = Q_a(X) Q_w(W)^T + b with INT8 per-channel weights and INT8 activations (fake-quantized)."""
    return F.linear(quantize_activation(x, act_absmax, per_token), fake_quant(weight, _W8), bias)


class W8A8Linear(nn.Module):
    """A linear layer run as W8A8 with optional SmoothQuant migration: y = Q(x / s) Q(W s)^T + b.

    With ``smooth`` given, ``x / s`` is done in ``forward`` (one s per linear: the textbook form, which costs
    a division per activation at run time).  The deployable form folds 1/s into the operation that writes x
    (``lessonlib.quant.smooth_fold``) and builds these layers with ``smooth=None``: no run-time division.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, smooth: torch.Tensor | None,
                 act_absmax: torch.Tensor | float | None = None, per_token: bool = False):
        super().__init__()
        s = torch.ones(weight.shape[1]) if smooth is None else smooth.float()
        self.register_buffer("inv_smooth", None if smooth is None else (1.0 / s).to(weight.dtype))
        self.register_buffer("weight", fake_quant(smooth_weight(weight, s), _W8))  # (out, in), on the INT8 grid
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self.act_absmax, self.per_token = act_absmax, per_token

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x if self.inv_smooth is None else x * self.inv_smooth
        return F.linear(quantize_activation(x, self.act_absmax, self.per_token), self.weight,
                        self.bias)

    @classmethod
    def from_linear(cls, linear: nn.Module, act_absmax: torch.Tensor | None = None, alpha: float | None = 0.5,
                    per_token: bool = False) -> "W8A8Linear":
        """``act_absmax`` (in,) from an observer; ``alpha=None`` turns migration off.  Activations are
        quantized statically with absmax(x / s) when ``act_absmax`` is given, else dynamically."""
        w = get_weight(linear)  # (out, in)
        s = None if alpha is None or act_absmax is None else smooth_scales(act_absmax, w, alpha)
        static = None if act_absmax is None else float((act_absmax / (1 if s is None else s)).max())
        return cls(w, getattr(linear, "bias", None), s, static, per_token)
