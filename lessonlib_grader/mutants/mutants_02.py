"""Wrong answers a student might hand in for notebook 02's exercise (each must score 0)."""
from __future__ import annotations

import torch

from . import mutant


def _maxes(act_absmax, weight):
    return act_absmax.float().clamp(min=1e-5), weight.abs().float().amax(dim=0).clamp(min=1e-5)  # (in,), (in,)


@mutant("q02_1", "swaps the exponents: max|X|^(1 - alpha) / max|W|^alpha (identical only at alpha = 0.5)")
def swapped_exponents(act_absmax, weight, alpha=0.5):
    a, w = _maxes(act_absmax, weight)
    return (a.pow(1 - alpha) / w.pow(alpha)).clamp(min=1e-5)


@mutant("q02_1", "takes the weight maximum over each output row (dim=1) instead of each input column")
def rows_not_columns(act_absmax, weight, alpha=0.5):
    a = act_absmax.float().clamp(min=1e-5)
    w = weight.abs().float().amax(dim=1).clamp(min=1e-5)  # (out,)
    return (a.pow(alpha) / w.pow(1 - alpha)).clamp(min=1e-5)


@mutant("q02_1", "forgets the absolute value of the weights (max W instead of max |W|)")
def no_abs(act_absmax, weight, alpha=0.5):
    a = act_absmax.float().clamp(min=1e-5)
    w = weight.float().amax(dim=0).clamp(min=1e-5)
    return (a.pow(alpha) / w.pow(1 - alpha)).clamp(min=1e-5)


@mutant("q02_1", "multiplies by the weight range instead of dividing")
def multiplies(act_absmax, weight, alpha=0.5):
    a, w = _maxes(act_absmax, weight)
    return (a.pow(alpha) * w.pow(1 - alpha)).clamp(min=1e-5)


@mutant("q02_1", "no clamp: a dead channel or zero column gives inf or nan")
def no_clamp(act_absmax, weight, alpha=0.5):
    a, w = act_absmax.float(), weight.abs().float().amax(dim=0)
    return a.pow(alpha) / w.pow(1 - alpha)


@mutant("q02_1", "uses alpha for both exponents: (max|X| / max|W|)^alpha")
def same_exponent(act_absmax, weight, alpha=0.5):
    a, w = _maxes(act_absmax, weight)
    return (a / w).pow(alpha).clamp(min=1e-5)


@mutant("q02_1", "uses the mean |W| of each column instead of its maximum")
def mean_not_max(act_absmax, weight, alpha=0.5):
    a = act_absmax.float().clamp(min=1e-5)
    w = weight.abs().float().mean(dim=0).clamp(min=1e-5)
    return (a.pow(alpha) / w.pow(1 - alpha)).clamp(min=1e-5)


@mutant("q02_2", "concept answer: q_proj (it reads the norm)")
def concept_q02_2_0():
    return "A"


@mutant("q02_2", "concept answer: gate_proj (it reads the norm)")
def concept_q02_2_1():
    return "B"


@mutant("q02_2", "concept answer: claims every factor goes into a norm")
def concept_q02_2_2():
    return "D"
