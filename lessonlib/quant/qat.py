"""Quantization-aware training: fake quantization with the straight-through estimator (STE).

Rounding has zero gradient almost everywhere, so QAT uses the STE (Bengio et al. 2013, "Estimating or
Propagating Gradients Through Stochastic Neurons"; Jacob et al. 2018, section 3): the forward pass
quantizes, the backward pass treats round() as the identity inside the representable range
[(q_min - z) s, (q_max - z) s] and passes zero gradient for values clipped outside it
(the "clipped STE" of Nagel et al. 2021, "A White Paper on Neural Network Quantization", eq. 37).
(Boundaries get a tolerance of 1e-4 grid steps for float round-off.)  With Adam every latent weight ends
up oscillating across a rounding boundary (Nagel et al. 2022, "Overcoming Oscillations in
Quantization-Aware Training"); plain SGD with a decaying learning rate settles better on small problems.
Scales and zeros are recomputed from the current weight on every step and receive no gradient.
``prepare_qat`` swaps linear layers for ``QATLinear``; ``convert_qat`` turns them into packed
``QuantLinear`` layers with exactly the outputs the model was trained with.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from ..models import get_weight
from .affine import QuantScheme, compute_qparams, expand_qparams
from .qlinear import QuantLinear, default_filter, is_linear_like, replace_module
from ..atomic import atomic

__all__ = ["ste_forward", "FakeQuantSTE", "fake_quant_ste", "QATLinear", "prepare_qat", "convert_qat"]


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


def fake_quant_ste(w: torch.Tensor, scheme: QuantScheme, clip_ratio: float | torch.Tensor = 1.0) -> torch.Tensor:
    """Fake-quantize a weight (out, in) with grid parameters fitted on its current value; differentiable (STE)."""
    scales, zeros = compute_qparams(w.detach(), scheme, clip_ratio)  # (rows, G)
    n_in = w.shape[1]
    y = FakeQuantSTE.apply(w.float(), expand_qparams(scales, n_in), expand_qparams(zeros, n_in),
                           scheme.qmin, scheme.qmax)
    return y.to(w.dtype)


class QATLinear(nn.Linear):
    """An ``nn.Linear`` whose forward uses the fake-quantized weight; it trains the float weight."""

    def __init__(self, in_features: int, out_features: int, scheme: QuantScheme, bias: bool = True, **kw):
        super().__init__(in_features, out_features, bias=bias, **kw)
        scheme.n_groups(in_features)  # the group size must divide the row
        self.scheme = scheme

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, fake_quant_ste(self.weight, self.scheme), self.bias)

    @classmethod
    def from_linear(cls, linear: nn.Module, scheme: QuantScheme) -> "QATLinear":
        w = get_weight(linear)  # (out, in), also for GPT-2 Conv1D
        bias = getattr(linear, "bias", None)
        m = cls(w.shape[1], w.shape[0], scheme, bias=bias is not None, device=w.device, dtype=w.dtype)
        with torch.no_grad():
            m.weight.copy_(w)
            if bias is not None:
                m.bias.copy_(bias)
        return m

    def extra_repr(self) -> str:
        return super().extra_repr() + f", scheme={self.scheme}"


@atomic
def prepare_qat(model: nn.Module, scheme: QuantScheme,
                filter_fn: Callable[[nn.Module, str], bool] | None = None) -> nn.Module:
    """Replace the selected linear layers (default: all but ``lm_head``) by ``QATLinear`` in place."""
    keep = filter_fn or default_filter
    targets = [(n, m) for n, m in model.named_modules()
               if is_linear_like(m) and not isinstance(m, QATLinear) and keep(m, n)]
    if not targets:
        raise ValueError("prepare_qat selected no linear layer; check filter_fn")
    for n, m in targets:
        replace_module(model, n, QATLinear.from_linear(m, scheme))
    return model


@atomic
def convert_qat(model: nn.Module, scale_dtype: torch.dtype | None = None) -> nn.Module:
    """Replace every ``QATLinear`` by a packed ``QuantLinear`` of its current weight, in place."""
    targets = [(n, m) for n, m in model.named_modules() if isinstance(m, QATLinear)]
    if not targets:
        raise ValueError("model has no QATLinear layer; run prepare_qat first")
    for n, m in targets:
        replace_module(model, n, QuantLinear.from_linear(m, m.scheme, scale_dtype=scale_dtype))
    return model
