"""Graded exercise of notebook 04 (AWQ): the per-input-channel scales s = s_X^alpha, normalised.

Every expected value below is worked out by hand in the comment beside it; none comes from the reference.
"""
from __future__ import annotations

import random

import torch

from .checks import CheckFailure, agrees_with_reference, assert_close, assert_tensor, call, literal, prop
from .concept import concept_checks
from .registry import Exercise

NOTEBOOK = "04_awq"


@prop("returns a floating (in,) tensor with max(s) * min(s) = 1")
def _q1_norm(fn, ref):
    gen = torch.Generator().manual_seed(0)
    act = torch.rand(20, generator=gen) * 5 + 0.01
    for alpha in (0.25, 0.5, 0.9):
        s = call(fn, act, alpha, _ref=ref)
        what = f"awq_scales(random mean |x| (20,), alpha={alpha})"
        assert_tensor(s, what=what, shape=(20,), floating=True)
        assert_close(float(s.max() * s.min()), 1.0, what=f"{what}: max(s) * min(s)", rtol=1e-5)


@prop("multiplying every activation by a constant changes nothing (only ratios matter)")
def _q1_invariant(fn, ref):
    act = torch.tensor([0.3, 1.2, 7.0, 0.05, 2.5])
    a = call(fn, act, 0.6, _ref=ref)
    assert_close(call(fn, act * 37.0, 0.6, _ref=ref), a, what="awq_scales(37 * act, 0.6) vs awq_scales(act, 0.6)",
                 rtol=1e-5)


@prop("larger alpha spreads the scales further (salient channels get larger scales)")
def _q1_monotone(fn, ref):
    act = torch.tensor([0.1, 0.5, 1.0, 4.0])
    lo, hi = call(fn, act, 0.3, _ref=ref), call(fn, act, 0.8, _ref=ref)
    if not (hi[-1] > lo[-1] > 1.0 and hi[0] < lo[0] < 1.0):
        raise CheckFailure(f"awq_scales([0.1, 0.5, 1.0, 4.0], alpha) for alpha 0.3 and 0.8\n  expected the largest "
                           f"channel's scale to grow above 1 and the smallest to shrink below 1 as alpha grows; got "
                           f"{lo.tolist()} and {hi.tolist()}")


def _q1_case(gen: torch.Generator, rng: random.Random):
    n = rng.randint(2, 40)
    act = torch.rand(n, generator=gen) ** 4 * rng.choice([0.01, 1.0, 100.0])  # skewed, like real channels
    if rng.random() < 0.3:
        act[rng.randrange(n)] = 0.0  # a silent channel
    return (act, rng.choice([0.0, 0.05, 0.35, 0.5, 0.95, 1.0])), {}


Q04_1 = Exercise(
    id="q04_1", points=4, notebook=NOTEBOOK, reference="lessonlib.quant.awq:awq_scales",
    statement="Return AWQ's per-input-channel scales for one layer: s = act_mean_abs ** alpha (act_mean_abs (in,) "
              "is the mean |x_j| of each input channel over the calibration tokens), clamped below at 1e-4, then "
              "divided by sqrt(max(s) * min(s)) so that the largest and the smallest scale multiply to 1. "
              "Return a float tensor (in,).",
    hints=("Clamp before normalising: a silent channel (mean |x| = 0) would otherwise make min(s) = 0.",
           "alpha = 0 must give all ones (plain RTN); alpha = 1 makes s proportional to the activations.",
           "The normaliser is one number: (s.max() * s.min()).sqrt()."),
    checks=(
        literal("hand-checked square roots", (torch.tensor([1.0, 4.0, 16.0]), 0.5),
                expected=torch.tensor([0.5, 1.0, 2.0])),  # s = [1, 2, 4], sqrt(4 * 1) = 2
        literal("alpha = 0 gives plain RTN (all ones)", (torch.tensor([0.2, 3.0, 9.0]), 0.0),
                expected=torch.ones(3)),
        literal("alpha = 1", (torch.tensor([1.0, 4.0]), 1.0), expected=torch.tensor([0.5, 2.0])),  # sqrt(4) = 2
        literal("a silent channel is clamped at 1e-4 before normalising", (torch.tensor([0.0, 1.0, 100.0]), 1.0),
                expected=torch.tensor([1e-3, 10.0, 1000.0]), rtol=1e-5, atol=1e-9),  # sqrt(1e-4 * 100) = 0.1
        literal("alpha = 0.5 on [0.25, 1, 9]", (torch.tensor([0.25, 1.0, 9.0]), 0.5),
                expected=torch.tensor([0.5 / 1.5 ** 0.5, 1 / 1.5 ** 0.5, 3 / 1.5 ** 0.5])),  # sqrt(3 * 0.5) = sqrt 1.5
        _q1_norm, _q1_invariant, _q1_monotone,
        agrees_with_reference("matches the reference on random activation statistics", _q1_case, n_cases=20,
                              rtol=1e-5, atol=1e-7),
    ),
)

EXERCISES = [Q04_1]


# ------------------------------------------------------------------ q04_2: concept question
Q04_C1 = Exercise(
    id="q04_2", points=1, notebook=NOTEBOOK, reference="lessonlib.concepts:q04_c1",
    statement="AWQ multiplies a salient input channel of W by s > 1 before rounding and divides after. Why does that lower the output error? A: that channel's rounding error is divided by s while the group's step barely changes. B: it makes the weights of the channel exactly representable. C: it increases the number of grid levels. D: it removes the channel from quantization. Return one letter.",
    hints=('Write the rounding error of s*w and divide it by s.',),
    checks=concept_checks("q04_2", "A"),
)
EXERCISES = [*EXERCISES, Q04_C1]
