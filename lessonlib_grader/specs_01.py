"""Graded exercise of notebook 01 (linear quantization): scales and zero points per group.

Every expected value below is computed by hand in the comment beside it; none comes from the reference.
"""
from __future__ import annotations

import random

import torch

from .checks import Check, CheckFailure, assert_close, assert_tensor, call, describe_call, prop
from .concept import concept_checks
from .registry import Exercise

NOTEBOOK = "01_linear_quantization"


def _qp(fn, ref, w, scheme, clip_ratio=1.0, *, what: str):
    """Call the student's function and check it returns (scales, zeros), two float tensors of one shape."""
    got = call(fn, w, scheme, clip_ratio, _ref=ref)
    if not isinstance(got, tuple) or len(got) != 2:
        raise CheckFailure(f"{what}\n  expected a tuple (scales, zeros), got {type(got).__name__}")
    s, z = got
    assert_tensor(s, what=f"{what}: scales", floating=True)
    assert_tensor(z, what=f"{what}: zeros", shape=tuple(s.shape), floating=True)
    return s, z


def _hand(name: str, w: list, scheme_args: tuple, scales: list, zeros: list, clip_ratio: float = 1.0):
    from lessonlib.quant.affine import QuantScheme

    def run(fn, ref):
        scheme = QuantScheme(*scheme_args)
        what = f"compute_qparams({w}, QuantScheme{scheme_args}, clip_ratio={clip_ratio})"
        s, z = _qp(fn, ref, torch.tensor(w), scheme, clip_ratio, what=what)
        assert_close(s, torch.tensor(scales), what=f"{what}: scales")
        assert_close(z, torch.tensor(zeros), what=f"{what}: zeros")

    return Check(name, "literal", run)


def _scheme(rng: random.Random):
    from lessonlib.quant.affine import QuantScheme

    return QuantScheme(rng.choice([2, 3, 4, 8]), rng.choice([0, -1, 4, 8, 16]), rng.random() < 0.5)


@prop("returns (1|out, G) scales and zeros for per-tensor, per-channel and per-group schemes")
def _shapes(fn, ref):
    from lessonlib.quant.affine import QuantScheme

    w = torch.randn(6, 32, generator=torch.Generator().manual_seed(3))
    for gs, shape in ((0, (1, 1)), (-1, (6, 1)), (8, (6, 4)), (32, (6, 1))):
        for sym in (False, True):
            s, _ = _qp(fn, ref, w, QuantScheme(4, gs, sym), what=f"a (6, 32) weight, group_size={gs}, sym={sym}")
            if tuple(s.shape) != shape:
                raise CheckFailure(f"a (6, 32) weight with group_size={gs}: expected scales of shape {shape}, "
                                   f"got {tuple(s.shape)}")


@prop("asymmetric: each group's min maps to code 0 and its max to code 2^b - 1, exactly")
def _endpoints(fn, ref):
    from lessonlib.quant.affine import QuantScheme

    w = torch.randn(4, 24, generator=torch.Generator().manual_seed(5)) * 3
    for bits in (2, 3, 4, 8):
        scheme = QuantScheme(bits, 8, False)
        s, z = _qp(fn, ref, w, scheme, what=f"a random (4, 24) weight, {bits}-bit asymmetric g8")
        wg = w.reshape(4, 3, 8)
        lo = wg.amin(-1) / s + z  # (4, 3) the code of each group's minimum
        hi = wg.amax(-1) / s + z
        assert_close(lo, torch.zeros_like(lo), what=f"{bits}-bit: min(w)/s + z for every group (should be 0)",
                     atol=1e-4)
        assert_close(hi, torch.full_like(hi, 2 ** bits - 1.0),
                     what=f"{bits}-bit: max(w)/s + z for every group (should be 2^b - 1 = {2 ** bits - 1})",
                     atol=1e-4)


@prop("symmetric: zeros are 0 and the largest |w| of each group lies (2^b - 1) / 2 steps from 0")
def _sym_endpoint(fn, ref):
    from lessonlib.quant.affine import QuantScheme

    w = torch.randn(3, 16, generator=torch.Generator().manual_seed(7))
    for bits in (3, 4, 8):
        s, z = _qp(fn, ref, w, QuantScheme(bits, 4, True), what=f"a random (3, 16) weight, {bits}-bit symmetric g4")
        assert_close(z, torch.zeros_like(z), what=f"{bits}-bit symmetric zeros")
        top = w.abs().reshape(3, 4, 4).amax(-1) / s
        assert_close(top, torch.full_like(top, (2 ** bits - 1) / 2),
                     what=f"{bits}-bit symmetric: max|w| / s per group (should be (2^b - 1) / 2)", atol=1e-4)


@prop("scales of groups that are constant or all zero are finite and positive (no division by zero)")
def _degenerate(fn, ref):
    from lessonlib.quant.affine import QuantScheme

    w = torch.tensor([[0.0, 0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 2.0]])
    for sym in (False, True):
        s, z = _qp(fn, ref, w, QuantScheme(4, 4, sym), what=f"groups [0,0,0,0] and [2,2,2,2], sym={sym}")
        if not (torch.isfinite(s).all() and (s > 0).all() and torch.isfinite(z).all()):
            raise CheckFailure(f"groups [0,0,0,0] and [2,2,2,2], sym={sym}: scales {s.tolist()} and zeros "
                               f"{z.tolist()} must be finite, scales > 0")


def _agrees(n_cases: int = 25, seed: int = 0) -> Check:
    """Scales and zeros match the reference on seeded random weights, schemes and clip ratios (float or
    a per-group tensor)."""

    def run(fn, ref):
        gen, rng = torch.Generator().manual_seed(seed), random.Random(seed)
        for i in range(n_cases):
            scheme = _scheme(rng)
            w = torch.randn(rng.randint(1, 6), 16 * rng.randint(1, 3), generator=gen) * rng.choice([0.01, 1.0, 10.0])
            rows = 1 if scheme.group_size == 0 else w.shape[0]
            clip = rng.choice([1.0, 1.0, 0.8, 0.5, "tensor"])
            if clip == "tensor":
                clip = 0.5 + 0.5 * torch.rand(rows, scheme.n_groups(w.shape[1]), generator=gen)
            want_s, want_z = ref(w.clone(), scheme, clip)
            shown = describe_call("compute_qparams", None, (w, scheme, clip), {})
            what = f"random case {i + 1}/{n_cases} (seed {seed}): {shown}"
            s, z = _qp(fn, ref, w, scheme, clip, what=what)
            assert_close(s, want_s, what=f"{what}: scales", rtol=1e-5, atol=1e-7)
            assert_close(z, want_z, what=f"{what}: zeros", rtol=1e-5, atol=1e-5)

    return Check("matches the reference on random weights, schemes and clip ratios", "reference", run)


Q01_1 = Exercise(
    id="q01_1", points=5, notebook=NOTEBOOK, reference="lessonlib.quant.affine:compute_qparams",
    statement="Given wg, the weight reshaped to (rows, G, g) (one slice per group; G = 1 for per-tensor and "
              "per-channel schemes) and the clip ratio r, return the scales and zero points of every group as "
              "two float tensors of shape (rows, G). Asymmetric: s = (max - min) / (2^b - 1), z = -min / s (a "
              "float, not rounded), with the range clipped to [-r max|w|, r max|w|]. Symmetric: s = r max|w| / "
              "scheme.half_range, z = 0 (half_range = (2^b - 1) / 2 on the full grid of 2^b levels, 2^(b-1) - 1 "
              "when scheme.restricted). A group whose range is 0 gets s = 1 (and z = -min) so it is still exact.",
    hints=("Reduce over the last axis of wg only: wg.amin(dim=-1), wg.amax(dim=-1), wg.abs().amax(dim=-1).",
           "b bits give 2^b levels but only 2^b - 1 steps between the lowest and the highest: "
           "scheme.qmax is that number of steps for an asymmetric grid; a symmetric grid spans "
           "scheme.half_range steps on each side of 0.",
           "Clip the range with torch.minimum(max, r * absmax) and torch.maximum(min, -r * absmax).",
           "torch.where(scales > 0, scales, torch.ones_like(scales)) avoids dividing by zero."),
    checks=(
        # 2-bit asym g4: group [0,1,2,3]: s = 3/3 = 1, z = 0; group [-3,-1,1,3]: s = 6/3 = 2, z = 3/2 = 1.5
        _hand("2-bit asymmetric, groups of 4", [[0.0, 1.0, 2.0, 3.0, -3.0, -1.0, 1.0, 3.0]], (2, 4, False),
              [[1.0, 2.0]], [[0.0, 1.5]]),
        # 4-bit sym per channel (full grid): row 0 max|w| = 7.5 -> s = 7.5/7.5 = 1; row 1 0.75 -> s = 0.1
        _hand("4-bit symmetric, per output channel", [[1.0, -7.5, 3.5, 0.0], [0.5, 0.25, -0.75, 0.0]],
              (4, -1, True), [[1.0], [0.1]], [[0.0], [0.0]]),
        # 3-bit asym per tensor: min -1, max 6 -> s = 7/7 = 1, z = 1
        _hand("3-bit asymmetric, one scale for the whole tensor", [[0.0, 6.0], [-1.0, 2.0]], (3, 0, False),
              [[1.0]], [[1.0]]),
        # clip 0.5, 2-bit asym g4 on [-4, 0, 2, 4]: range [-2, 2] -> s = 4/3, z = 2 / (4/3) = 1.5
        _hand("clip ratio 0.5 shrinks the range", [[-4.0, 0.0, 2.0, 4.0]], (2, 4, False), [[4.0 / 3.0]], [[1.5]],
              clip_ratio=0.5),
        # constant group [2, 2]: s = 1, z = -2; all-zero group sym: s = 1
        _hand("a constant group gets scale 1 and zero -min", [[2.0, 2.0]], (4, 2, False), [[1.0]], [[-2.0]]),
        _shapes, _endpoints, _sym_endpoint, _degenerate,
        _agrees(),
    ),
)

EXERCISES = [Q01_1]



# ------------------------------------------------------------------ q01_2: concept question
Q01_C1 = Exercise(
    id="q01_2", points=1, notebook=NOTEBOOK, reference="lessonlib.concepts:q01_c1",
    statement='A uniform grid keeps its range and goes from 4 to 6 bits. By what factor does the mean squared rounding error fall (weights spread evenly across each step)? Return the number.',
    hints=('The MSE of rounding to a step s is s^2 / 12.',),
    checks=concept_checks("q01_2", 16.0),
)
EXERCISES = [*EXERCISES, Q01_C1]
