"""Plausible wrong answers to notebook 05's exercise (the forward pass of the clipped STE); all must be caught."""
from __future__ import annotations

import torch

from . import mutant

_TOL = 1e-4


def _u(x, scales, zeros):
    return x / scales + zeros


@mutant("q05_1", "no clamp: values outside the range get codes outside [qmin, qmax]")
def ste_no_clamp(x, scales, zeros, qmin, qmax):
    u = _u(x, scales, zeros)
    inside = (u >= qmin - _TOL) & (u <= qmax + _TOL)
    return (torch.round(u) - zeros) * scales, inside


@mutant("q05_1", "forgets to subtract the zero point when dequantizing")
def ste_no_zero(x, scales, zeros, qmin, qmax):
    u = _u(x, scales, zeros)
    inside = (u >= qmin - _TOL) & (u <= qmax + _TOL)
    return torch.round(u).clamp(qmin, qmax) * scales, inside


@mutant("q05_1", "the mask tests the rounded code, so values rounding onto an end code count as inside")
def ste_mask_after_round(x, scales, zeros, qmin, qmax):
    u = torch.round(_u(x, scales, zeros))
    inside = (u >= qmin) & (u <= qmax)
    return (u.clamp(qmin, qmax) - zeros) * scales, inside


@mutant("q05_1", "floor instead of round")
def ste_floor(x, scales, zeros, qmin, qmax):
    u = _u(x, scales, zeros)
    inside = (u >= qmin - _TOL) & (u <= qmax + _TOL)
    return (torch.floor(u).clamp(qmin, qmax) - zeros) * scales, inside


@mutant("q05_1", "strict comparisons without tolerance: the range's own end points get no gradient")
def ste_strict(x, scales, zeros, qmin, qmax):
    u = _u(x, scales, zeros)
    inside = (u > qmin) & (u < qmax)
    return (torch.round(u).clamp(qmin, qmax) - zeros) * scales, inside


@mutant("q05_1", "the mask compares x itself (not its grid position) with qmin and qmax")
def ste_mask_on_x(x, scales, zeros, qmin, qmax):
    u = _u(x, scales, zeros)
    inside = (x >= qmin) & (x <= qmax)
    return (torch.round(u).clamp(qmin, qmax) - zeros) * scales, inside


@mutant("q05_2", "concept answer: half the weights")
def concept_q05_2_0():
    return 0.5


@mutant("q05_2", "concept answer: every weight")
def concept_q05_2_1():
    return 1.0


@mutant("q05_2", "concept answer: a small clipped tail")
def concept_q05_2_2():
    return 0.05
