"""Graded exercise of notebook 02 (post-training quantization): SmoothQuant's migration scales.

Every expected value below is computed by hand in the comment beside it; none comes from the reference.
"""
from __future__ import annotations

import random

import torch

from .checks import CheckFailure, agrees_with_reference, assert_close, assert_tensor, call, literal, prop
from .concept import concept_checks
from .registry import Exercise

NOTEBOOK = "02_post_training_quantization"

T = torch.tensor
# max|X_j| = [4, 1, 9]; the columns of W have max|W_:,j| = [2, 4, 0.5] (note the -4 and the -2)
A3 = T([4.0, 1.0, 9.0])
W3 = T([[1.0, -4.0, 0.5], [-2.0, 1.0, 0.25]])


@prop("returns one float32 scale per input channel, shape (in,), for a (2, 3) weight; inputs unchanged")
def _shape(fn, ref):
    got = call(fn, A3, W3, 0.5, _ref=ref)
    assert_tensor(got, what="smooth_scales(act_absmax (3,), weight (2, 3), alpha=0.5)", shape=(3,),
                  dtype=torch.float32)


@prop("balance at alpha = 0.5: after migration max|X_j / s_j| equals max|W_:,j * s_j| for every channel")
def _balanced(fn, ref):
    g = torch.Generator().manual_seed(0)
    a = torch.rand(16, generator=g) * 50 + 0.1  # (in,) activation ranges with outliers up to ~50
    w = torch.randn(8, 16, generator=g)  # (out, in)
    s = call(fn, a, w, 0.5, _ref=ref)
    assert_tensor(s, what="smooth_scales(random (16,), random (8, 16), alpha=0.5)", shape=(16,))
    # a / s = a^(1/2) w^(1/2) = w s: both sides end up with the geometric mean of the two ranges
    assert_close(a / s, w.abs().amax(dim=0) * s, what="max|X_j| / s_j against max|W_:,j| * s_j at alpha=0.5",
                 rtol=1e-4, atol=1e-5)


@prop("monotone in alpha: a larger alpha moves more of the range into the weights on an outlier channel")
def _monotone(fn, ref):
    a, w = T([100.0, 1.0]), T([[1.0, 1.0]])
    s = [call(fn, a, w, al, _ref=ref) for al in (0.2, 0.5, 0.8)]
    for s_i in s:
        assert_tensor(s_i, what="smooth_scales([100, 1], [[1, 1]], alpha)", shape=(2,))
    # channel 0: s = 100^alpha -> 2.51, 10, 39.8: strictly increasing
    if not (s[0][0] < s[1][0] < s[2][0]):
        raise CheckFailure(f"smooth_scales([100, 1], [[1, 1]], alpha) for alpha = 0.2, 0.5, 0.8 gave s_0 = "
                           f"{[float(x[0]) for x in s]}; expected 100^alpha, increasing with alpha")


def _random_case(gen: torch.Generator, rng: random.Random):
    n_in, n_out = rng.randint(2, 12), rng.randint(1, 6)
    a = torch.rand(n_in, generator=gen) * 20  # may be tiny: the clamp is part of the definition
    w = torch.randn(n_out, n_in, generator=gen)
    return (a, w, rng.choice([0.0, 0.25, 0.5, 0.75, 1.0])), {}


Q02_1 = Exercise(
    id="q02_1", points=4, notebook=NOTEBOOK, reference="lessonlib.quant.smoothquant:smooth_scales",
    statement="SmoothQuant migrates activation outliers into the weights with one scale per input channel j: "
              "s_j = max|X_j|^alpha / max|W_:,j|^(1 - alpha), where max|X_j| is given (act_absmax, shape (in,)) "
              "and max|W_:,j| is the largest |weight| in column j of W (out, in). Clamp both maxima and the "
              "result to at least 1e-5 so that a dead channel gives a finite scale. Return s, float32, (in,).",
    hints=("A column of W (out, in) is one input channel: reduce with .abs().amax(dim=0).",
           "alpha = 1 puts the whole activation range into the weights (s = max|X_j|); alpha = 0 gives 1/max|W_:,j|.",
           "Use .clamp(min=1e-5) before the powers: 0 ** negative is inf."),
    checks=(
        # alpha 0.5: sqrt(4 / 2) = 1.414214, sqrt(1 / 4) = 0.5, sqrt(9 / 0.5) = sqrt(18) = 4.242641
        literal("alpha 0.5 by hand", (A3, W3, 0.5), expected=T([1.414214, 0.5, 4.242641]), rtol=1e-5),
        # alpha 1: s = max|X_j| = [4, 1, 9]
        literal("alpha 1 moves everything into the weights", (A3, W3, 1.0), expected=T([4.0, 1.0, 9.0])),
        # alpha 0: s = 1 / max|W_:,j| = [1/2, 1/4, 1/0.5] = [0.5, 0.25, 2]
        literal("alpha 0 divides by the weight range", (A3, W3, 0.0), expected=T([0.5, 0.25, 2.0])),
        # alpha 0.25: 4^0.25 / 2^0.75 = 1.414214 / 1.681793 = 0.840896; 1 / 4^0.75 = 0.353553;
        # 9^0.25 / 0.5^0.75 = 1.732051 / 0.594604 = 2.912951
        literal("alpha 0.25 by hand", (A3, W3, 0.25), expected=T([0.840896, 0.353553, 2.912951]), rtol=1e-5),
        # a dead activation channel and an all-zero weight column: both clamp to 1e-5, s_0 = 1e-5^0.5 / 1e-5^0.5 = 1;
        # channel 1: sqrt(4) / sqrt(1) = 2
        literal("dead channel and zero column stay finite", (T([0.0, 4.0]), T([[0.0, 1.0], [0.0, -1.0]]), 0.5),
                expected=T([1.0, 2.0]), rtol=1e-4),
        _shape, _balanced, _monotone,
        agrees_with_reference("matches the reference on random inputs", _random_case, n_cases=6, rtol=1e-5,
                              atol=1e-6),
    ),
)

EXERCISES = [Q02_1]


# ------------------------------------------------------------------ q02_2: concept question
Q02_C1 = Exercise(
    id="q02_2", points=1, notebook=NOTEBOOK, reference="lessonlib.concepts:q02_c1",
    statement='In the deployable SmoothQuant of a LLaMA block, which linear layer gets its smoothing factor folded into the output rows of another linear layer rather than into an RMSNorm? A: q_proj. B: gate_proj. C: o_proj. D: none, every factor goes into a norm. Return one letter.',
    hints=('Which layers read the output of a norm, and which read the output of attention?',),
    checks=concept_checks("q02_2", "C"),
)
EXERCISES = [*EXERCISES, Q02_C1]
