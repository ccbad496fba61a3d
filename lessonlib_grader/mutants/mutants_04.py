"""Plausible wrong answers to notebook 04's exercise (AWQ's per-channel scales); every one must be caught."""
from __future__ import annotations

from . import mutant


@mutant("q04_1", "forgets the normalisation by sqrt(max(s) * min(s))")
def awq_no_norm(act_mean_abs, alpha):
    return act_mean_abs.float().pow(alpha).clamp(min=1e-4)


@mutant("q04_1", "normalises by the largest scale instead of sqrt(max * min)")
def awq_norm_by_max(act_mean_abs, alpha):
    s = act_mean_abs.float().pow(alpha).clamp(min=1e-4)
    return s / s.max()


@mutant("q04_1", "multiplies by alpha instead of raising to the power alpha")
def awq_times_alpha(act_mean_abs, alpha):
    s = (act_mean_abs.float() * alpha).clamp(min=1e-4)
    return s / (s.max() * s.min()).sqrt()


@mutant("q04_1", "no clamp: a silent channel (mean |x| = 0) makes the normalisation divide by zero")
def awq_no_clamp(act_mean_abs, alpha):
    s = act_mean_abs.float().pow(alpha)
    return s / (s.max() * s.min()).sqrt()


@mutant("q04_1", "clamps after normalising (the normaliser sees the raw zero)")
def awq_clamp_late(act_mean_abs, alpha):
    s = act_mean_abs.float().pow(alpha)
    return (s / (s.max() * s.min()).clamp(min=1e-12).sqrt()).clamp(min=1e-4)


@mutant("q04_1", "divides by max * min without the square root")
def awq_no_sqrt(act_mean_abs, alpha):
    s = act_mean_abs.float().pow(alpha).clamp(min=1e-4)
    return s / (s.max() * s.min())


@mutant("q04_1", "inverts the scales (s = mean|x|^-alpha shrinks the salient channels)")
def awq_inverse(act_mean_abs, alpha):
    s = act_mean_abs.float().clamp(min=1e-4).pow(-alpha)
    return s / (s.max() * s.min()).sqrt()


@mutant("q04_2", "concept answer: exact representability")
def concept_q04_2_0():
    return "B"


@mutant("q04_2", "concept answer: more grid levels")
def concept_q04_2_1():
    return "C"


@mutant("q04_2", "concept answer: skips the channel")
def concept_q04_2_2():
    return "D"
