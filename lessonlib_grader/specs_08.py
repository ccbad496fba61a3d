"""Graded exercise of notebook 08 (when sparsity pays): the 2:4 compressed layout.

``compress_2of4(W)`` returns ``(values, positions)``, both (out, in / 2): for every group of 4 consecutive
inputs of a row, the 2 kept slots (the nonzeros, padded with the group's leftmost zeros) in increasing
position order.  Every expected value below is worked out by hand in the comment beside it.
"""
from __future__ import annotations

import random

import torch

from .checks import Check, CheckFailure, assert_close, assert_tensor, call, prop
from .concept import concept_checks
from .registry import Exercise

NOTEBOOK = "08_when_sparsity_pays"
T = torch.tensor


def _kind(kind: str):
    """Re-label a check written with ``prop`` as a hand-computed literal or a comparison with the reference."""
    return lambda c: Check(c.name, kind, c.run)


def _run(fn, ref, w: torch.Tensor, what: str):
    got = call(fn, w, _ref=ref)
    if not isinstance(got, tuple) or len(got) != 2:
        raise CheckFailure(f"{what}\n  expected a tuple (values, positions), got {type(got).__name__}")
    values, pos = got
    half = (w.shape[0], w.shape[1] // 2)
    assert_tensor(values, what=f"{what}: values", shape=half, dtype=w.dtype)
    assert_tensor(pos, what=f"{what}: positions", shape=half, dtype=torch.int64)
    return values, pos


def _literal(name: str, w: list, values: list, positions: list) -> Check:
    def run(fn, ref):
        wt = T(w)
        what = f"compress_2of4({w})"
        v, p = _run(fn, ref, wt, what)
        assert_close(v, T(values), what=f"{what}: values")
        assert_close(p, T(positions), what=f"{what}: positions")
    return Check(name, "literal", run)


def _2of4(gen: torch.Generator, out: int, groups: int, dtype=torch.float32) -> torch.Tensor:
    w = torch.randn(out, 4 * groups, generator=gen).to(dtype)  # (out, in)
    keep = torch.rand(out, groups, 4, generator=gen).argsort(-1) < 2  # 2 random slots per group
    w = w * keep.reshape(out, 4 * groups)
    w[torch.rand(w.shape, generator=gen) < 0.2] = 0  # some groups with fewer than 2 nonzeros
    return w


@prop("round trip: scattering the values back to their positions rebuilds W; positions increase in each pair")
def _roundtrip(fn, ref):
    gen = torch.Generator().manual_seed(5)
    for out, groups, dt in ((3, 4, torch.float32), (5, 2, torch.float16), (1, 6, torch.float64)):
        w = _2of4(gen, out, groups, dt)
        what = f"compress_2of4(random 2:4 weight ({out}, {4 * groups}) {dt})"
        v, p = _run(fn, ref, w, what)
        if p.min() < 0 or p.max() > 3:
            raise CheckFailure(f"{what}\n  positions must lie in 0..3 (the slot inside the group of 4)")
        pairs = p.reshape(out, groups, 2)
        if (pairs[..., 0] >= pairs[..., 1]).any():
            raise CheckFailure(f"{what}\n  the two positions of every group must be distinct and increasing")
        dense = torch.zeros(out, groups, 4, dtype=dt).scatter_(-1, pairs, v.reshape(out, groups, 2))
        assert_close(dense.reshape(out, 4 * groups), w, what=f"{what}: values scattered back to their positions")


@prop("refuses what it cannot store: a group with 3 nonzeros, or in % 4 != 0 (ValueError)")
def _errors(fn, ref):
    for w, why in ((T([[1.0, 2.0, 3.0, 0.0]]), "a group with 3 nonzeros"), (T([[1.0, 0.0, 0.0, 0.0, 0.0, 0.0]]), "in = 6")):
        try:
            fn(w.clone())
        except ValueError:
            continue
        except NotImplementedError:
            raise
        except Exception as e:  # noqa: BLE001 - the student's error type is what we check
            raise CheckFailure(f"compress_2of4({w.tolist()}) ({why}) raised {type(e).__name__}, expected ValueError")
        raise CheckFailure(f"compress_2of4({w.tolist()}) ({why}) returned; it must raise ValueError")


@_kind("reference")
@prop("agrees with the reference on random 2:4 weights")
def _random(fn, ref):
    gen, rng = torch.Generator().manual_seed(9), random.Random(9)
    for case in range(8):
        w = _2of4(gen, rng.randint(1, 6), rng.randint(1, 5))
        what = f"random case {case + 1}: compress_2of4(weight {tuple(w.shape)})"
        v, p = _run(fn, ref, w, what)
        rv, rp = ref(w.clone())
        assert_close(v, rv, what=f"{what}: values")
        assert_close(p, rp, what=f"{what}: positions")


Q08_1 = Exercise(
    id="q08_1", points=4, notebook=NOTEBOOK, reference="lessonlib.prune.sparse_kernels:compress_2of4",
    statement="Compress a 2:4-sparse weight (out, in) to the layout of NVIDIA's sparse tensor cores: return "
              "(values, positions), both (out, in // 2). For every group of 4 consecutive inputs of a row, keep 2 "
              "slots: the group's nonzeros, and if it has fewer than 2, its leftmost zeros; list the 2 slots in "
              "increasing position. positions (int64, 0..3) is the slot's index inside its group, values (the "
              "weight's dtype) the number there. Raise ValueError if in % 4 != 0 or a group has 3 or 4 nonzeros.",
    hints=("weight.reshape(out, in // 4, 4) puts every group on the last axis.",
           "A stable argsort of (group == 0) lists the nonzero positions first, then the zeros, each by position.",
           "Take the first 2, sort them, and .gather(-1, pos) the values; reshape both to (out, in // 2)."),
    checks=(
        _literal("two groups with two nonzeros each", [[0.0, 3.0, 0.0, -1.0, 5.0, 0.0, 0.0, 2.0]],
                 [[3.0, -1.0, 5.0, 2.0]], [[1, 3, 0, 3]]),  # nonzeros at 1, 3 and at 0, 3 (= columns 4, 7)
        _literal("positions in increasing order, not by size", [[0.0, 1.0, 0.0, 5.0]],
                 [[1.0, 5.0]], [[1, 3]]),  # 5 is larger, but slot 1 comes first
        _literal("fewer than 2 nonzeros: pad with the leftmost zeros", [[0.0, 0.0, 0.0, 7.0, 0.0, 0.0, 0.0, 0.0]],
                 [[0.0, 7.0, 0.0, 0.0]], [[0, 3, 0, 1]]),  # {3} + leftmost zero 0; all zeros -> slots 0, 1
        _literal("rows are compressed on their own", [[1.0, 2.0, 0.0, 0.0], [0.0, 0.0, 3.0, 4.0]],
                 [[1.0, 2.0], [3.0, 4.0]], [[0, 1], [2, 3]]),
        _roundtrip, _errors, _random,
    ),
)

EXERCISES = [Q08_1]



# ------------------------------------------------------------------ q08_2: concept question
Q08_C1 = Exercise(
    id="q08_2", points=1, notebook=NOTEBOOK, reference="lessonlib.concepts:q08_c1",
    statement='A matrix stored as CSR keeps fp16 values and int32 column indices for its non-zeros (row pointers are negligible). Above which sparsity does it take fewer bytes than dense fp16? Return the number (tolerance 0.01).',
    hints=('Compare (1 - s) * (2 + 4) bytes with 2 bytes per weight.',),
    checks=concept_checks("q08_2", 2.0 / 3.0),
)
EXERCISES = [*EXERCISES, Q08_C1]
