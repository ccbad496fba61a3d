"""Quantization-aware training: fake quantization with the straight-through estimator (STE).

Rounding has zero gradient almost everywhere, so QAT uses the STE (Bengio et al. 2013, "Estimating or
Propagating Gradients Through Stochastic Neurons"; Jacob et al. 2018, section 3): the forward pass
quantizes, the backward pass treats round() as the identity inside the representable range
[(q_min - z) s, (q_max - z) s] and passes zero gradient for values clipped outside it
(the "clipped STE" of Nagel et al. 2021, "A White Paper on Neural Network Quantization", eq. 37).
(Boundaries get a tolerance of 1e-4 grid steps for float round-off.)  With Adam every latent weight ends
up oscillating across a rounding boundary (Nagel et al. 2022, "Overcoming Oscillations in
Quantization-Aware Training"); plain SGD with a decaying learning rate settles better on small problems.
Two ways to set the grid (``prepare_qat(..., clip=)``):

* ``"refit"``: scales and zeros are refitted to the current weight's min/max on every step and receive no
  gradient.  Every weight then lies inside its own grid's range, so **the clipped branch of the STE never
  fires**: the estimator is the plain identity.
* ``"mse"``: a fixed clipping range, as in PACT (Choi et al. 2018, arXiv:1805.06085) and LSQ (Esser et al.
  2019, arXiv:1902.08153) initialisation: each group's clip ratio r (from ``CLIP_GRID``) minimises the
  weight MSE of round-to-nearest at preparation, and the scales/zeros are then frozen.  Weights beyond the
  clipped range (the outliers clipped at the start, and any weight that grows past it) get zero gradient:
  the clipped branch is real.  (Nothing here learns the range; LSQ/PACT would also train it.)

``prepare_qat`` swaps linear layers for ``QATLinear``; ``convert_qat`` turns them into packed
``QuantLinear`` layers with exactly the outputs the model was trained with.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import skip_init

from ..models import get_weight
from .affine import QuantScheme, compute_qparams, expand_qparams, fake_quant, quantize_codes
from ..models import is_linear_like, replace_submodule
from .qlinear import QuantLinear, default_filter
from ..atomic import atomic

__all__ = ["ste_forward", "FakeQuantSTE", "fake_quant_ste", "QATLinear", "prepare_qat", "convert_qat",
           "mse_clip_ratios", "CLIP_GRID", "CLIP_MODES"]

CLIP_GRID = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5)  # clip ratios tried per group
CLIP_MODES = ("refit", "mse")


_TOL = 1e-4  # grid steps: the group's own min and max may land a rounding error outside the fitted range


def ste_forward(x: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, qmin: int,
                qmax: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The forward pass of the clipped STE: the fake-quantized x, and the mask where its gradient is 1.

    y = (clamp(round(x / s + z), q_min, q_max) - z) * s; the mask is True where x lies inside the
    representable range [(q_min - z) s, (q_max - z) s] (to within 1e-4 grid steps).
    """
    u = x / scales + zeros  # position on the integer grid, not yet rounded
    # BEGIN SOLUTION
    inside = (u >= qmin - _TOL) & (u <= qmax + _TOL)
    y = (torch.round(u).clamp(qmin, qmax) - zeros) * scales
    # END SOLUTION
    return y, inside


class FakeQuantSTE(torch.autograd.Function):
    """y = (clamp(round(x / s + z), q_min, q_max) - z) * s; dy/dx = 1 inside the range, 0 outside."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
        y, inside = ste_forward(x, scales, zeros, qmin, qmax)
        ctx.save_for_backward(inside)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (inside,) = ctx.saved_tensors
        return grad * inside, None, None, None, None


def mse_clip_ratios(w: torch.Tensor, scheme: QuantScheme, grid: tuple[float, ...] = CLIP_GRID) -> torch.Tensor:
    """Per group, the clip ratio r of ``grid`` whose round-to-nearest grid gives the smallest weight MSE,
    (1|out, G).  Ties go to the larger r (less clipping).

    The error of each ratio comes from ``affine.fake_quant`` (each group's scale and zero broadcast over its own
    columns), the same values as rounding with ``quantize_codes`` on ``expand_qparams`` copies, and faster."""
    w = w.detach().float()  # (out, in)
    rows, n_in = (1 if scheme.group_size == 0 else w.shape[0]), w.shape[1]
    G = scheme.n_groups(n_in)
    best_err, best_r = None, None
    for r in sorted(grid, reverse=True):
        err = fake_quant(w, scheme, r).sub_(w).pow_(2).reshape(rows, G, -1).sum(-1)  # (rows, G)
        if best_err is None:
            best_err, best_r = err, torch.full_like(err, r)
        else:
            better = err < best_err
            best_err, best_r = torch.where(better, err, best_err), torch.where(better, torch.full_like(err, r), best_r)
    return best_r


def fake_quant_ste(w: torch.Tensor, scheme: QuantScheme, clip_ratio: float | torch.Tensor = 1.0,
                   qparams: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Fake-quantize a weight (out, in); differentiable (STE).  The grid is fitted on the current value (with
    ``clip_ratio``), or given as fixed ``qparams`` = (scales, zeros), each (1|out, G)."""
    scales, zeros = qparams if qparams is not None else compute_qparams(w.detach(), scheme, clip_ratio)  # (rows, G)
    n_in = w.shape[1]
    y = FakeQuantSTE.apply(w.float(), expand_qparams(scales, n_in), expand_qparams(zeros, n_in),
                           scheme.qmin, scheme.qmax)
    return y.to(w.dtype)


class QATLinear(nn.Linear):
    """An ``nn.Linear`` whose forward uses the fake-quantized weight; it trains the float weight."""

    def __init__(self, in_features: int, out_features: int, scheme: QuantScheme, bias: bool = True,
                 device=None, dtype=None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        scheme.n_groups(in_features)  # the group size must divide the row
        self.scheme = scheme
        self.register_buffer("fixed_scales", None)  # (1|out, G) when the range is fixed, else refitted per step
        self.register_buffer("fixed_zeros", None)

    def qparams(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        return None if self.fixed_scales is None else (self.fixed_scales, self.fixed_zeros)

    @torch.no_grad()
    def fix_range(self, clip_ratio: float | torch.Tensor | None = None) -> torch.Tensor:
        """Freeze the grid at the current weight with ``clip_ratio`` (default: ``mse_clip_ratios``); returns r."""
        r = mse_clip_ratios(self.weight, self.scheme) if clip_ratio is None else clip_ratio
        s, z = compute_qparams(self.weight.detach(), self.scheme, r)  # (rows, G)
        self.fixed_scales, self.fixed_zeros = s.to(self.weight.device), z.to(self.weight.device)
        return r

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, fake_quant_ste(self.weight, self.scheme, qparams=self.qparams()), self.bias)

    @classmethod
    def from_linear(cls, linear: nn.Module, scheme: QuantScheme) -> "QATLinear":
        w = get_weight(linear)  # (out, in), also for GPT-2 Conv1D
        bias = getattr(linear, "bias", None)
        m = skip_init(cls, w.shape[1], w.shape[0], scheme, bias=bias is not None,  # no random init: the
                      device=w.device, dtype=w.dtype)  # weight (and bias) are copied below
        with torch.no_grad():
            m.weight.copy_(w)
            if bias is not None:
                m.bias.copy_(bias)
        return m

    def extra_repr(self) -> str:
        return super().extra_repr() + f", scheme={self.scheme}"


@atomic
def prepare_qat(model: nn.Module, scheme: QuantScheme,
                filter_fn: Callable[[nn.Module, str], bool] | None = None, clip: str = "refit") -> nn.Module:
    """Replace the selected linear layers (default: all but ``lm_head``) by ``QATLinear`` in place.

    ``clip="refit"`` refits the grid to the weight on every step; ``clip="mse"`` fixes each group's range at
    its MSE-best clip ratio (``mse_clip_ratios``), so weights outside it are clipped and get no gradient."""
    if clip not in CLIP_MODES:
        raise ValueError(f"clip={clip!r} must be one of {CLIP_MODES}")
    keep = filter_fn or default_filter
    targets = [(n, m) for n, m in model.named_modules()
               if is_linear_like(m) and not isinstance(m, QATLinear) and keep(m, n)]
    if not targets:
        raise ValueError("prepare_qat selected no linear layer; check filter_fn")
    for n, m in targets:
        q = QATLinear.from_linear(m, scheme)
        if clip == "mse":
            q.fix_range()
        replace_submodule(model, n, q)
    return model


@atomic
def convert_qat(model: nn.Module, scale_dtype: torch.dtype | None = None) -> nn.Module:
    """Replace every ``QATLinear`` by a packed ``QuantLinear`` of its current weight, in place."""
    targets = [(n, m) for n, m in model.named_modules() if isinstance(m, QATLinear)]
    if not targets:
        raise ValueError("model has no QATLinear layer; run prepare_qat first")
    for n, m in targets:
        qp = m.qparams()
        if qp is None:
            new = QuantLinear.from_linear(m, m.scheme, scale_dtype=scale_dtype)
        else:  # the frozen grid the layer trained with
            s, z = qp
            n_in = m.weight.shape[1]
            codes = quantize_codes(m.weight.detach(), expand_qparams(s, n_in), expand_qparams(z, n_in), m.scheme)
            new = QuantLinear.from_linear(m, m.scheme, codes=codes, scales=s, zeros=None if m.scheme.sym else z,
                                          scale_dtype=scale_dtype)
        replace_submodule(model, n, new)
    return model
