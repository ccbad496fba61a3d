"""Graded exercises of notebook 24 (number formats): microscaling quantization, and NF4's real cost in bits.

q24_1: the student writes :func:`lessonlib.quant.formats.mx_quantize` (MXFP4 / MXFP8: blocks of 32 sharing a
power-of-two scale, elements rounded to FP4 E2M1 or FP8 E4M3).  The literal cases are computed by hand in the
comments and avoid exact ties between two levels; the random cases compare with the reference.
q24_2: a concept question (a number).
"""
from __future__ import annotations

import random

import torch

from .checks import Check, CheckFailure, assert_close, call, literal as _literal, prop
from .registry import Exercise
from .concept import answer_function_checks  # concept questions: (answer type, reference agreement)

NOTEBOOK = "24_number_formats"


def _row(*head: float, n: int = 32) -> torch.Tensor:
    return torch.tensor([list(head) + [0.0] * (n - len(head))])  # (1, n)


def _expect(*head: float, scale: float, n: int = 32) -> tuple:
    return (_row(*head, n=n), torch.tensor([[scale]]))


def _same(got, want: tuple, what: str) -> None:
    """``got`` must be a pair (elements, scales) equal to ``want`` (exact: every value is a power of two times
    a short binary fraction)."""
    if not (isinstance(got, tuple) and len(got) == 2 and all(isinstance(t, torch.Tensor) for t in got)):
        raise CheckFailure(f"{what}: expected a pair (elements, scales) of tensors, got {type(got).__name__}")
    for name, g, w in (("elements", got[0], want[0]), ("scales", got[1], want[1])):
        if tuple(g.shape) != tuple(w.shape):
            raise CheckFailure(f"{what}: {name} have shape {tuple(g.shape)}, expected {tuple(w.shape)}")
        assert_close(g.float(), w.float(), what=f"{what}: {name}", rtol=0.0, atol=0.0)


def literal(name: str, args: tuple, expected: tuple) -> Check:
    def run(fn, ref):
        _same(call(fn, *args, _ref=ref), expected, what=f"mx_quantize on {name!r}")
    return Check(name, "literal", run)


def _agree(fn, ref):
    gen, rng = torch.Generator().manual_seed(0), random.Random(0)
    for _ in range(8):
        rows, blocks = rng.randint(1, 4), rng.randint(1, 3)
        w = torch.randn(rows, 32 * blocks, generator=gen) * torch.exp(torch.randn(rows, 1, generator=gen) * 2)
        fmt = rng.choice(["mxfp4", "mxfp8"])
        _same(call(fn, w, fmt, _ref=ref), ref(w.clone(), fmt), what=f"mx_quantize(seeded w {tuple(w.shape)}, {fmt!r})")


@prop("scales are powers of two, one per block of 32 of a row; FP4 elements are signed E2M1 values")
def _structure(fn, ref):
    g = torch.Generator().manual_seed(5)
    w = torch.randn(3, 96, generator=g) * 0.05
    el, s = call(fn, w, "mxfp4", _ref=ref)
    if tuple(s.shape) != (3, 3) or tuple(el.shape) != (3, 96):
        raise CheckFailure(f"mx_quantize(w (3, 96), 'mxfp4') must return elements (3, 96) and scales (3, 3), "
                           f"got {tuple(el.shape)} and {tuple(s.shape)}")
    if not torch.equal(torch.exp2(torch.log2(s).round()), s):
        raise CheckFailure(f"MX scales must be powers of two (E8M0); got {s.flatten()[:4].tolist()}")
    ok = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])
    if not torch.isin(el.abs(), ok).all():
        raise CheckFailure(f"FP4 E2M1 elements must be +-{ok.tolist()}; got {el.abs().unique()[:8].tolist()}")
    assert_close(el.reshape(3, 3, 32) * s.unsqueeze(-1), w.reshape(3, 3, 32), what="decoded w vs w (MXFP4)",
                 rtol=0.0, atol=float(w.abs().max()) * 0.35)


Q24_1 = Exercise(
    id="q24_1", points=5, notebook=NOTEBOOK, reference="lessonlib.quant.formats:mx_quantize",
    statement="Quantize w (out, in) to a microscaling format, fmt 'mxfp4' or 'mxfp8'. Each row is cut into blocks "
              "of 32 consecutive weights; a block shares the scale 2^(floor(log2 absmax) - emax) with emax = 2 "
              "for FP4 E2M1 (largest value 6) and 8 for FP8 E4M3 (largest 448); an all-zero block counts as "
              "absmax 1; clamp the exponent to -127..127. Each weight / scale becomes the nearest element value: "
              "FP4 keeps the sign and rounds the magnitude to the nearest of 0, 0.5, 1, 1.5, 2, 3, 4, 6 "
              "(saturating at 6); FP8 clamps to +-448 and casts to torch.float8_e4m3fn. Return (elements "
              "(out, in) float32, scales (out, in / 32) float32).",
    hints=("Reshape to (out, in / 32, 32) and take the absmax over the last axis.",
           "torch.floor(torch.log2(amax)) - emax, then torch.exp2: the scale is a power of two, not amax / 6.",
           "For FP4, lessonlib.quant.formats.fp4_e2m1_levels() lists the magnitudes; round to the nearest with "
           "the midpoints between them (torch.bucketize), then put the sign back."),
    checks=(
        # amax 6: floor(log2 6) = 2, scale 2^0 = 1; -1.2 -> -1 (midpoint 1.25), 0.2 -> 0 (midpoint 0.25)
        literal("one block, absmax 6: scale 1, [6, 3, -1.2, 0.2] -> [6, 3, -1, 0]",
                (_row(6.0, 3.0, -1.2, 0.2), "mxfp4"), _expect(6.0, 3.0, -1.0, 0.0, scale=1.0)),
        # amax 0.75: floor(log2 0.75) = -1, scale 2^-3; x = [6, 2.4, -0.8] -> [6, 2, -1]
        literal("absmax 0.75: scale 1/8, [0.75, 0.3, -0.1] -> elements [6, 2, -1]",
                (_row(0.75, 0.3, -0.1), "mxfp4"), _expect(6.0, 2.0, -1.0, scale=0.125)),
        # amax 7: scale 2^(2 - 2) = 1; 7 saturates at 6; -4.4 -> -4 (midpoint 5)
        literal("absmax 7 saturates at 6: [7, -4.4] -> [6, -4], scale 1",
                (_row(7.0, -4.4), "mxfp4"), _expect(6.0, -4.0, scale=1.0)),
        # all zero: absmax counts as 1, scale 2^(0 - 2) = 0.25, elements 0
        literal("an all-zero block: elements 0, scale 2^-2", (_row(), "mxfp4"), _expect(scale=0.25)),
        # MXFP8: amax 1, scale 2^(0 - 8); 0.3 * 256 = 76.8 -> E4M3 step 8 in [64, 128): 80
        literal("MXFP8, absmax 1: scale 2^-8, [1, 0.3] -> [256, 80]",
                (_row(1.0, 0.3), "mxfp8"), _expect(256.0, 80.0, scale=2.0 ** -8)),
        # two rows, two blocks: row 0 blocks absmax 3 (scale 2^-1) and 0.5 (2^-3); row 1 absmax 12 (2^1), 1 (2^-2)
        literal("two rows of two blocks: one scale per block of each row",
                (torch.tensor([[3.0] + [0.0] * 31 + [0.5] + [0.0] * 31, [12.0] + [0.0] * 31 + [-1.0] + [0.0] * 31]),
                 "mxfp4"),
                (torch.tensor([[6.0] + [0.0] * 31 + [4.0] + [0.0] * 31,
                                        [6.0] + [0.0] * 31 + [-4.0] + [0.0] * 31]),
                          torch.tensor([[0.5, 0.125], [2.0, 0.25]]))),
        _structure,
        Check("seeded weights over many magnitudes, MXFP4 and MXFP8: equal to the reference", "reference", _agree),
    ),
)

Q24_2 = Exercise(
    id="q24_2", points=2, notebook=NOTEBOOK, reference="lessonlib.concepts:nf4_double_quant_bits",
    statement="Concept question (a number). QLoRA stores NF4 weights in blocks of 64 with one absmax each; double "
              "quantization stores those absmaxes in 8 bits, with one fp32 constant per 256 absmaxes. How many "
              "bits does one weight cost, everything included?",
    hints=("4 bits for the element, plus its share of the block's 8-bit absmax.",
           "The fp32 constant is shared by 256 blocks of 64 weights."),
    checks=(_literal("the number", (), expected=4.126953125, rtol=1e-5), *answer_function_checks("number")),
)

EXERCISES = [Q24_1, Q24_2]
