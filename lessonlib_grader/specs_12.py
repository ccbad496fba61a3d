"""Graded exercise of notebook 12 (architecture): mean-pooling key/value heads into GQA groups.

A K or V projection of ``n_heads`` heads of width d is a (n_heads * d, C) weight: head h is rows
h*d .. (h+1)*d - 1.  GQA (Ainslie et al. 2023, section 2.1) merges consecutive heads g*s .. g*s+s-1
(s = n_heads / n_groups) into group g by averaging them.  Every expected value below is computed by hand in
the comment beside it.
"""
from __future__ import annotations

import random

import torch

from .checks import Check, CheckFailure, assert_close, assert_tensor, call, prop
from .registry import Exercise

NOTEBOOK = "12_architecture"

T = torch.tensor


def _kind(kind: str):
    """Re-label a check written with ``prop`` as a hand-computed literal."""
    return lambda c: Check(c.name, kind, c.run)


def _pool(fn, ref, w, b, n_heads, n_groups, what):
    got = call(fn, w, b, n_heads, n_groups, _ref=ref)
    if not isinstance(got, tuple) or len(got) != 2:
        raise CheckFailure(f"{what}\n  expected a tuple (weight, bias), got {type(got).__name__}")
    W, B = got
    d = w.shape[0] // n_heads
    assert_tensor(W, what=f"{what}: weight", shape=(n_groups * d, w.shape[1]), dtype=w.dtype)
    if b is None:
        if B is not None:
            raise CheckFailure(f"{what}\n  bias=None must give bias None back, got {type(B).__name__}")
    else:
        assert_tensor(B, what=f"{what}: bias", shape=(n_groups * d,), dtype=b.dtype)
    return W, B


@_kind("literal")
@prop("4 heads of width 1 into 2 groups: rows [1,2],[3,4] -> [2,3]; [5,6],[7,8] -> [6,7]; bias [1,3,5,7] -> [2,6]")
def _width1(fn, ref):
    w = T([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]])  # (4 * 1, 2)
    W, B = _pool(fn, ref, w, T([1.0, 3.0, 5.0, 7.0]), 4, 2, "mean_pool_heads(4 heads of width 1, n_groups=2)")
    # group 0 = mean of heads 0, 1 (consecutive), group 1 = mean of heads 2, 3
    assert_close(W, T([[2.0, 3.0], [6.0, 7.0]]), what="pooled weight (consecutive heads 0+1 and 2+3)")
    assert_close(B, T([2.0, 6.0]), what="pooled bias (mean of 1, 3 and of 5, 7)")


@_kind("literal")
@prop("2 heads of width 2 into 1 group: the mean of the two 2x2 blocks, row by row; no bias")
def _width2(fn, ref):
    # head 0 = rows [[1, 0], [0, 1]], head 1 = rows [[3, 0], [4, 5]] -> mean [[2, 0], [2, 3]]
    w = T([[1.0, 0.0], [0.0, 1.0], [3.0, 0.0], [4.0, 5.0]])
    W, _ = _pool(fn, ref, w, None, 2, 1, "mean_pool_heads(2 heads of width 2, n_groups=1)")
    assert_close(W, T([[2.0, 0.0], [2.0, 3.0]]), what="pooled weight (row i of the group = mean of row i of each head)")


@_kind("literal")
@prop("6 heads of width 1 into 3 groups of 2, with a bias: [0,2 | 4,6 | 8,10] -> [1, 5, 9]")
def _three_groups(fn, ref):
    w = T([[0.0], [2.0], [4.0], [6.0], [8.0], [10.0]])  # (6, 1)
    W, B = _pool(fn, ref, w, T([1.0, 1.0, 0.0, 2.0, -4.0, 4.0]), 6, 3, "mean_pool_heads(6 heads, n_groups=3)")
    assert_close(W, T([[1.0], [5.0], [9.0]]), what="pooled weight of 3 groups of 2 consecutive heads")
    assert_close(B, T([1.0, 1.0, 0.0]), what="pooled bias of 3 groups: mean(1, 1), mean(0, 2), mean(-4, 4)")


@prop("n_groups == n_heads changes nothing; n_groups = 1 averages all heads; float64 stays float64")
def _limits(fn, ref):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(4 * 3, 5, generator=g, dtype=torch.float64)  # 4 heads of width 3
    b = torch.randn(12, generator=g, dtype=torch.float64)
    W, B = _pool(fn, ref, w, b, 4, 4, "mean_pool_heads(..., n_heads=4, n_groups=4)")
    assert_close(W, w, what="n_groups == n_heads: the weight comes back unchanged", atol=1e-12)
    assert_close(B, b, what="n_groups == n_heads: the bias comes back unchanged", atol=1e-12)
    W, B = _pool(fn, ref, w, b, 4, 1, "mean_pool_heads(..., n_heads=4, n_groups=1)")
    assert_close(W, w.reshape(4, 3, 5).mean(0), what="n_groups=1: the mean of all 4 heads", atol=1e-12)
    assert_close(B, b.reshape(4, 3).mean(0), what="n_groups=1: the bias mean of all 4 heads", atol=1e-12)


def _random(fn, ref):
    gen, rng = torch.Generator().manual_seed(3), random.Random(3)
    for i in range(6):
        n_groups, s, d, c = rng.choice([1, 2, 3]), rng.choice([1, 2, 4]), rng.choice([1, 2, 5]), rng.choice([3, 8])
        w = torch.randn(n_groups * s * d, c, generator=gen)
        b = torch.randn(n_groups * s * d, generator=gen) if i % 2 else None
        rW, rB = ref(w.clone(), None if b is None else b.clone(), n_groups * s, n_groups)
        what = f"random case {i + 1}: {n_groups * s} heads of width {d} -> {n_groups} groups"
        W, B = _pool(fn, ref, w, b, n_groups * s, n_groups, what)
        assert_close(W, rW, what=f"{what}: pooled weight", atol=1e-6)
        if b is not None:
            assert_close(B, rB, what=f"{what}: pooled bias", atol=1e-6)


Q12_1 = Exercise(
    id="q12_1", points=3, notebook=NOTEBOOK, reference="lessonlib.arch.gqa:mean_pool_heads",
    statement="Convert a K or V projection to grouped-query attention by mean pooling (Ainslie et al. 2023). "
              "weight is (n_heads * d, C) with head h in rows h*d .. (h+1)*d - 1, bias is (n_heads * d,) or None. "
              "Group g is the average of the s = n_heads / n_groups consecutive heads g*s .. g*s + s - 1. "
              "Return (weight', bias') of shapes (n_groups * d, C) and (n_groups * d,) (None when bias is None), "
              "in the input dtype. The input checks are already written.",
    hints=("d = weight.shape[0] // n_heads, s = n_heads // n_groups.",
           "weight.reshape(n_groups, s, d, C) puts the heads of group g at [g]; average over axis 1.",
           "Reshape the result back to (n_groups * d, C); the bias works the same way without the C axis."),
    checks=(_width1, _width2, _three_groups, _limits,
            Check("same pooled weight and bias as the reference on random shapes", "reference", _random)),
)

from .concept import answer_function_checks, choice, number  # noqa: E402  (concept questions)

Q12_2 = Exercise(
    id="q12_2", points=2, notebook=NOTEBOOK, reference="lessonlib.concepts:mqa_cache_mib",
    statement="Concept question (a number). SmolLM2 has 30 blocks and key/value heads of width 64. After converting it "
              "to multi-query attention (one KV head per block) as section 1 does, how many MiB (2^20 bytes) of fp16 "
              "keys and values does one 8192-token context hold?",
    hints=("Each token stores a key and a value for every KV head of every block.",
           "bytes = 2 x blocks x KV heads x head width x 2 bytes x tokens."),
    checks=(number("the KV cache in MiB", 60.0), *answer_function_checks("number")),  # 2 * 30 * 1 * 64 * 2 * 8192 / 2^20
)

Q12_3 = Exercise(
    id="q12_3", points=2, notebook=NOTEBOOK, reference="lessonlib.concepts:moe_memory_compute_choice",
    statement="Concept question (return one letter). A dense FFN is replaced by a mixture of E = 8 experts, each the "
              "same shape as the dense FFN, with top-k = 2 routing. Compared with the dense FFN, what happens to the "
              "weights held in memory and to the FFN compute per token? A: both grow 8x; B: memory grows 8x, compute "
              "about 2x (plus a small router); C: both grow 2x; D: memory stays the same and compute falls to a quarter.",
    hints=("Which experts must be loaded, and which ones does one token run through?",),
    checks=(choice("the letter of the right answer", "B"), *answer_function_checks("letter")),
)

EXERCISES = [Q12_1, Q12_2, Q12_3]
