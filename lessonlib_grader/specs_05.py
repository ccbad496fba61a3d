"""Graded exercise of notebook 05 (QAT): the forward pass of the clipped straight-through estimator.

Every expected value below is worked out by hand in the comment beside it; none comes from the reference.
"""
from __future__ import annotations

import random

import torch

from .checks import Check, CheckFailure, assert_close, assert_tensor, call, prop
from .concept import concept_checks
from .registry import Exercise

NOTEBOOK = "05_qat"
T, F = True, False


def _pair(got, what: str, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(got, tuple) or len(got) != 2:
        raise CheckFailure(f"{what}\n  expected a tuple (y, inside), got {type(got).__name__}")
    y, inside = got
    assert_tensor(y, what=f"{what}: y", shape=shape, floating=True)
    assert_tensor(inside, what=f"{what}: inside", shape=shape, dtype=torch.bool)
    return y, inside


def _case(name: str, x: list, s, z, qmin: int, qmax: int, y_want: list, in_want: list) -> Check:
    """A hand-computed case (a literal check; written out because the result is a pair)."""
    def run(fn, ref):
        xs, st, zt = torch.tensor(x), torch.as_tensor(s, dtype=torch.float32), torch.as_tensor(z, dtype=torch.float32)
        what = f"ste_forward(x={x}, scales={s}, zeros={z}, qmin={qmin}, qmax={qmax})"
        y, inside = _pair(call(fn, xs, st, zt, qmin, qmax, _ref=ref), what, tuple(xs.shape))
        assert_close(y, torch.tensor(y_want), what=f"{what}: y", atol=1e-6)
        assert_close(inside, torch.tensor(in_want), what=f"{what}: inside (where the gradient is 1)")
    return Check(name, "literal", run)


# 2-bit asymmetric, s = 1, z = 1: codes 0..3 stand for [-1, 2]; u = x + 1
# x=-3 -> u=-2 clamps to 0 -> -1, outside; x=-1 -> u=0 exactly the end: inside; -0.4 -> u=0.6 -> 1 -> 0;
# 0.6 -> 1.6 -> 2 -> 1; 2.0 -> u=3 inside; 2.3 -> u=3.3 rounds to 3 (an end code) but lies outside; 5 -> outside.
_LIT_ASYM = _case("2-bit asymmetric grid, values inside, on the ends and outside",
                  [-3.0, -1.0, -0.4, 0.6, 2.0, 2.3, 5.0], 1.0, 1.0, 0, 3,
                  [-1.0, -1.0, 0.0, 1.0, 2.0, 2.0, 2.0], [F, T, T, T, T, F, F])
# 3-bit symmetric, s = 0.5, z = 0: codes -4..3 stand for [-2, 1.5]; u = 2x
# x=-2.2 -> u=-4.4 -> -4 -> -2.0, outside; -0.3 -> -0.6 -> -1 -> -0.5; 0.8 -> 1.6 -> 2 -> 1.0; 1.6 -> 3.2 -> 3 -> 1.5, outside
_LIT_SYM = _case("3-bit symmetric grid (zero point 0)", [-2.2, -0.3, 0.8, 1.6], 0.5, 0.0, -4, 3,
                 [-2.0, -0.5, 1.0, 1.5], [F, T, T, F])
# per-row scales and zeros broadcast: row 0 s=2, z=0.5, codes 0..3 -> x in [-1, 5]; row 1 s=0.25, z=2 -> [-0.5, 0.25]
# row 0: x=3.1 -> u=2.05 -> 2 -> (2-0.5)*2 = 3.0; x=-1.2 -> u=-0.1 -> 0 -> -1.0 outside (tolerance is 1e-4 steps)
# row 1: x=0.1 -> u=2.4 -> 2 -> 0.0; x=0.3 -> u=3.2 -> 3 -> 0.25 outside
_LIT_ROWS = _case("per-row scales and zero points broadcast", [[3.1, -1.2], [0.1, 0.3]], [[2.0], [0.25]],
                  [[0.5], [2.0]], 0, 3, [[3.0, -1.0], [0.0, 0.25]], [[T, F], [T, F]])
# the tolerance: u = 3 + 5e-5 (within 1e-4 steps of the end) is inside, u = 3 + 5e-3 is not
_LIT_TOL = _case("round-off at the end of the range keeps its gradient (1e-4 grid steps)", [2.00005, 2.005],
                 1.0, 1.0, 0, 3, [2.0, 2.0], [T, F])


@prop("values on the grid come back unchanged, all inside")
def _q1_idem(fn, ref):
    s, z = torch.tensor([[0.1], [0.3]]), torch.tensor([[7.0], [2.5]])
    codes = torch.tensor([[0.0, 3.0, 8.0, 15.0], [15.0, 1.0, 0.0, 4.0]])
    x = (codes - z) * s  # exactly representable points of a 4-bit asymmetric grid
    y, inside = _pair(call(fn, x, s, z, 0, 15, _ref=ref), "ste_forward(grid points, 4-bit asymmetric)", (2, 4))
    assert_close(y, x, what="ste_forward(grid points): y", atol=1e-6)
    if not bool(inside.all()):
        raise CheckFailure("ste_forward(grid points, 4-bit asymmetric)\n  every grid point lies inside the range, "
                           f"got inside={inside.tolist()}")


def _q1_case(gen: torch.Generator, rng: random.Random):
    bits, sym = rng.choice([2, 3, 4, 8]), rng.random() < 0.5
    qmin, qmax = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if sym else (0, 2 ** bits - 1)
    rows, cols = rng.randint(1, 4), rng.randint(1, 9)
    s = torch.rand(rows, 1, generator=gen) * 0.5 + 0.01
    z = torch.zeros(rows, 1) if sym else (torch.rand(rows, 1, generator=gen) * qmax).round() + 0.25
    x = torch.randn(rows, cols, generator=gen) * s * (qmax - qmin) * 0.7
    return (x, s, z, qmin, qmax), {}


def _q1_agree_run(fn, ref):
    gen, rng = torch.Generator().manual_seed(0), random.Random(0)
    for k in range(20):
        args, _ = _q1_case(gen, rng)
        y_ref, in_ref = ref(*args)
        what = f"random case {k + 1}/20: ste_forward(x {tuple(args[0].shape)}, qmin={args[3]}, qmax={args[4]})"
        y, inside = _pair(call(fn, *args, _ref=ref), what, tuple(args[0].shape))
        assert_close(y, y_ref, what=f"{what}: y", rtol=1e-5, atol=1e-6)
        assert_close(inside, in_ref, what=f"{what}: inside")


_q1_agree = Check("matches the reference on random grids (both outputs)", "reference", _q1_agree_run)


Q05_1 = Exercise(
    id="q05_1", points=4, notebook=NOTEBOOK, reference="lessonlib.quant.qat:ste_forward",
    statement="The forward pass of the clipped straight-through estimator. u = x / scales + zeros is each value's "
              "position on the integer grid (given). Return (y, inside): y = (clamp(round(u), qmin, qmax) - zeros) "
              "* scales, the fake-quantized x; inside = the bool mask where u lies in [qmin, qmax] to within 1e-4 "
              "grid steps (there the backward pass lets the gradient through, elsewhere it is 0).",
    hints=("Decide 'inside' on u before rounding: a value just past the end rounds onto the end code but lies "
           "outside the range.",
           "Dequantize with the zero point: (code - zeros) * scales.",
           "The tolerance is _TOL = 1e-4 in grid steps: u >= qmin - _TOL and u <= qmax + _TOL."),
    checks=(_LIT_ASYM, _LIT_SYM, _LIT_ROWS, _LIT_TOL, _q1_idem, _q1_agree),
)

EXERCISES = [Q05_1]



# ------------------------------------------------------------------ q05_2: concept question
Q05_C1 = Exercise(
    id="q05_2", points=1, notebook=NOTEBOOK, reference="lessonlib.concepts:q05_c1",
    statement="QAT with the grid refitted to each group's min and max at every step: what fraction of the latent weights receives zero gradient from the clipped straight-through estimator? Return the number.",
    hints=("Where do a group's smallest and largest weights land on its own grid?",),
    checks=concept_checks("q05_2", 0.0),
)
EXERCISES = [*EXERCISES, Q05_C1]
