"""Graded exercises of notebook 07 (SparseGPT and Wanda): the Wanda mask and one SparseGPT block.

Every expected value below is worked out by hand in the comment beside it; none comes from the reference.
``sparsegpt_block_step`` changes its inputs ``W1`` (and, under N:M, ``mask1``) in place by contract, so its
checks call it with ``_check_inputs=False`` or directly, on copies.
"""
from __future__ import annotations

import random

import torch

from .checks import (Check, CheckFailure, GradingTimeout, agrees_with_reference, assert_close, assert_exact_zeros,
                     assert_tensor, call, literal, prop)
from .concept import concept_checks
from .registry import Exercise

NOTEBOOK = "07_sparsegpt_wanda"
T, F = True, False


def _mask(rows: list[list[bool]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.bool)


# ------------------------------------------------------------------ q07_1 wanda_mask
@prop("returns a bool keep-mask of the weight's shape")
def _q1_type(fn, ref):
    w, n = torch.randn(3, 8, generator=torch.Generator().manual_seed(0)), torch.ones(8)
    got = call(fn, w, n, 0.5, _ref=ref)
    assert_tensor(got, what="wanda_mask(weight (3, 8), ones(8), 0.5)", shape=(3, 8), dtype=torch.bool)


@prop("every row prunes exactly round(sparsity * in) weights")
def _q1_exact(fn, ref):
    gen = torch.Generator().manual_seed(1)
    w, n = torch.randn(5, 10, generator=gen), torch.rand(10, generator=gen) + 0.1
    for s, k in ((0.25, 3), (0.5, 5), (0.7, 7), (0.0, 0)):  # floor(s * 10 + 0.5)
        got = call(fn, w, n, s, _ref=ref)
        assert_tensor(got, what=f"wanda_mask(weight (5, 10), norms, {s})", shape=(5, 10), dtype=torch.bool)
        assert_exact_zeros(got.to(torch.int8), k, what=f"wanda_mask(weight (5, 10), norms, {s})", per_row=True)


@prop("sums or means of squares give the same mask (a common factor in the norms changes nothing)")
def _q1_scale(fn, ref):
    gen = torch.Generator().manual_seed(2)
    w, n = torch.randn(4, 12, generator=gen), torch.rand(12, generator=gen) + 0.05
    a = call(fn, w, n, 0.5, _ref=ref)
    assert_close(call(fn, w, 256.0 * n, 0.5, _ref=ref), a,
                 what="wanda_mask(w, 256 * norms, 0.5) vs wanda_mask(w, norms, 0.5)")


@prop("a silent input channel (norm 0) is pruned first in every row")
def _q1_dead(fn, ref):
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(4, 8, generator=gen) + 10.0  # large weights everywhere
    n = torch.ones(8)
    n[5] = 0.0
    got = call(fn, w, n, 0.125, _ref=ref)  # prunes 1 of 8 per row
    want = torch.ones(4, 8, dtype=torch.bool)
    want[:, 5] = False
    assert_close(got, want, what="wanda_mask(large weights, norms with channel 5 silent, 0.125)")


def _q1_case(gen: torch.Generator, rng: random.Random):
    out, groups = rng.randint(1, 6), rng.randint(1, 4)
    n, m = rng.choice([(0, 0), (0, 0), (2, 4), (1, 4), (4, 8)])
    inp = groups * (m or 4)
    w = torch.randn(out, inp, generator=gen)
    norms = torch.rand(inp, generator=gen) ** 3 * 50  # skewed, as real activation norms are
    s = (m - n) / m if m else rng.choice([0.1, 0.3, 0.5, 0.6, 0.9])
    return (w, norms, s, n, m), {}


Q07_1 = Exercise(
    id="q07_1", points=4, notebook=NOTEBOOK, reference="lessonlib.prune.wanda:wanda_mask",
    statement="Return Wanda's keep-mask for one linear layer: score every weight by |W_ij| times the L2 norm "
              "of its input channel j over the calibration tokens (input_sq_norms holds the sum or mean of "
              "x_j^2, so take its square root), then prune the lowest scores within each output row: "
              "exactly n_to_prune(in, sparsity) per row, or, when keep_n > 0 (N:M = keep_n kept of every "
              "group_m consecutive inputs), the group_m - keep_n lowest of each group. Return a bool tensor (out, in), True = keep.",
    hints=("Broadcast the (in,) norms along the rows: norms.sqrt().unsqueeze(0) has shape (1, in).",
           "The comparison group is one output row, not the whole matrix: prune_lowest(score, s, per_row=True).",
           "For N:M, nm_mask(score, keep_n, group_m) does the group selection."),
    checks=(
        literal("the activation norm changes the ranking",
                (torch.tensor([[1.0, -2.0, 3.0, 4.0]]), torch.tensor([16.0, 1.0, 1.0, 0.25]), 0.5),
                expected=_mask([[T, F, T, F]])),  # scores [4, 2, 3, 2]: prune the two 2s
        literal("the square root matters", (torch.tensor([[1.0, 3.0]]), torch.tensor([4.0, 1.0]), 0.5),
                expected=_mask([[F, T]])),  # scores [1*2, 3*1]; without the sqrt [4, 3] would flip
        literal("one comparison group per output row",
                (torch.tensor([[1.0, 2.0], [10.0, 20.0]]), torch.ones(2), 0.5),
                expected=_mask([[F, T], [F, T]])),  # per matrix would prune the whole first row
        literal("2:4 with the activation norms",
                (torch.tensor([[1.0, 2.0, 3.0, 4.0, 4.0, 3.0, 2.0, 1.0]]),
                 torch.tensor([100.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 100.0]), 0.5, 2, 4),
                expected=_mask([[T, F, F, T, T, F, F, T]])),  # scores [10,2,3,4 | 4,3,2,10]
        literal("sparsity 0 keeps everything", (torch.tensor([[1.0, -1.0, 0.5]]), torch.ones(3), 0.0),
                expected=_mask([[T, T, T]])),
        _q1_type, _q1_exact, _q1_scale, _q1_dead,
        agrees_with_reference("matches the reference on random layers (unstructured and N:M)", _q1_case,
                              n_cases=20),
    ),
)


# ------------------------------------------------------------------ q07_2 sparsegpt_block_step
def _floor_half(c: torch.Tensor) -> torch.Tensor:
    """A quantizer onto the grid {..., -0.5, 0.5, 1.5, ...}: it has no zero, so it cannot keep a pruned zero."""
    return torch.floor(c) + 0.5


def _direct(fn, *args):
    """Call the student's function directly (its in-place effects stay visible); explain exceptions."""
    try:
        return fn(*args)
    except (NotImplementedError, GradingTimeout, CheckFailure):
        raise
    except Exception as exc:
        raise CheckFailure(f"calling sparsegpt_block_step on a random block raised {type(exc).__name__}: {exc}") from None


def _pair(got, what: str, shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(got, tuple) or len(got) != 2:
        raise CheckFailure(f"{what}\n  expected a tuple (Q1, Err1), got {type(got).__name__}")
    for name, t in zip(("Q1", "Err1"), got):
        assert_tensor(t, what=f"{what}: {name}", shape=shape, floating=True)
    return got


def _step_literal(name: str, args: tuple, q_want: list, e_want: list) -> Check:
    """A hand-computed block (a literal check that tolerates the in-place update of W1 the contract asks for)."""
    def run(fn, ref):
        got = call(fn, *args, _ref=ref, _check_inputs=False)
        what = f"sparsegpt_block_step({name})"
        q, e = _pair(got, what, tuple(args[0].shape))
        assert_close(q, torch.tensor(q_want), what=f"{what}: Q1 (the final block weights)", atol=1e-5)
        assert_close(e, torch.tensor(e_want), what=f"{what}: Err1 (the scaled errors (w - q) / d)", atol=1e-5)
    return Check(name, "literal", run)


_U3 = torch.tensor([[1.0, 2.0, 1.0], [0.0, 2.0, 1.0], [0.0, 0.0, 1.0]])  # upper, d = [1, 2, 1]
# Row 0 (prune cols 0, 1): err0 = 2/1 = 2, W -= 2*[1,2,1] -> [0,-3,-1]; err1 = -3/2, W[1:] -= -1.5*[2,1] -> [0,0.5].
# Row 1 (prune cols 1, 2): col 0 kept; col 1 is 0 (err 0); err2 = 4/1 = 4.
_LIT_ERRFB = _step_literal(
    "error feedback through the upper factor",
    (torch.tensor([[2.0, 1.0, 1.0], [1.0, 0.0, 4.0]]), _U3, _mask([[F, F, T], [T, F, F]])),
    [[0.0, 0.0, 0.5], [1.0, 0.0, 0.0]], [[2.0, -1.5, 0.0], [0.0, 0.0, 4.0]])
# 2:4 with a diagonal U (no cross terms): w^2/d^2 = [1, 2.25, 3.61, 36] prunes cols 0, 1
# (w^2/d would be [4, 2.25, 3.61, 36] and prune cols 1, 2). Err = [4/4, 1.5/1, 0, 0].
_LIT_NM = _step_literal(
    "2:4 chooses by w^2 / d^2",
    (torch.tensor([[4.0, 1.5, 1.9, 6.0]]), torch.diag(torch.tensor([4.0, 1.0, 1.0, 1.0])),
     torch.ones(1, 4, dtype=torch.bool), 2, 4),
    [[0.0, 0.0, 1.9, 6.0]], [[1.0, 1.5, 0.0, 0.0]])
# Nothing pruned, quantizer round: col 0: q = 2, err = 0.4, W -= 0.4*[1,2,1] -> [2.0, 0.2, 0.9];
# col 1: q = 0, err = 0.2/2 = 0.1, W[1:] -= 0.1*[2,1] -> [0, 0.8]; col 2: q = 1, err = -0.2.
_LIT_QUANT = _step_literal(
    "joint quantization: errors of kept weights feed back too",
    (torch.tensor([[2.4, 1.0, 1.3]]), _U3, torch.ones(1, 3, dtype=torch.bool), 0, 0, torch.round),
    [[2.0, 0.0, 1.0]], [[0.4, 0.1, -0.2]])


def _random_block(seed: int, out: int = 6, b: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    mix = torch.randn(b, b, generator=gen, dtype=torch.float64)  # correlated inputs: large off-diagonal U
    x = torch.randn(4 * b, b, generator=gen, dtype=torch.float64) @ mix
    h = x.T @ x / x.shape[0] + 0.1 * torch.eye(b, dtype=torch.float64)  # (B, B) SPD
    u = torch.linalg.cholesky(torch.linalg.inv(h), upper=True)  # U^T U = H^-1
    w = torch.randn(out, b, generator=gen, dtype=torch.float64)
    return w, u


@prop("pruned weights come out exactly zero, also with a quantizer that has no zero")
def _q2_zeros(fn, ref):
    w, u = _random_block(11)
    mask = torch.ones_like(w, dtype=torch.bool)
    mask[:, ::3] = False  # columns 0, 3, 6 pruned
    q, _ = _pair(call(fn, w, u, mask, 0, 0, _floor_half, _ref=ref, _check_inputs=False),
                 "sparsegpt_block_step(random block, fixed mask, quant=floor(x) + 0.5)", tuple(w.shape))
    bad = (q[~mask] != 0).nonzero()
    if len(bad):
        raise CheckFailure("sparsegpt_block_step(random block, fixed mask, quant=floor(x) + 0.5)\n  a pruned weight "
                           f"came out as {q[~mask][bad[0, 0]].item():.4g}; pruned weights must be exactly 0 "
                           "after quantizing (mask again)")


@prop("under N:M the block mask is filled in place and Q1 follows it")
def _q2_inplace_mask(fn, ref):
    for n, m in ((2, 4), (1, 4)):
        w, u = _random_block(20 + n)
        mask = torch.ones_like(w, dtype=torch.bool)
        got = _direct(fn, w.clone(), u.clone(), mask, n, m)
        what = f"sparsegpt_block_step(random (6, 16) block, all-True mask, keep_n={n}, group_m={m})"
        q, _ = _pair(got, what, tuple(w.shape))
        pruned = (~mask).reshape(6, -1, m).sum(-1)
        if (pruned != m - n).any():
            raise CheckFailure(f"{what}\n  afterwards mask1 prunes {pruned.tolist()} entries per group of {m}; "
                               f"fill mask1[:, i:i+{m}] in place, pruning the {m - n} lowest w^2/d^2 of each "
                               f"group (keep {n})")
        if (q[~mask] != 0).any() or (q[mask] == 0).any():
            raise CheckFailure(f"{what}\n  Q1 is not zero exactly where mask1 (after the call) is False")


def _compare_step(fn, ref, seed: int, mask_kind: str, quant) -> None:
    w, u = _random_block(seed)
    gen = torch.Generator().manual_seed(seed + 1000)
    n, m = (2, 4) if mask_kind == "2:4" else (0, 0)
    if mask_kind == "random":
        mask = torch.rand(w.shape, generator=gen) > 0.5
    else:
        mask = torch.ones_like(w, dtype=torch.bool)
    want_mask = mask.clone()
    q_ref, e_ref = ref(w.clone(), u.clone(), want_mask, n, m, quant)
    what = (f"random case seed {seed}: sparsegpt_block_step(W1 (6, 16), U1 (16, 16), {mask_kind} mask, "
            f"keep_n={n}, group_m={m}, quant={'round' if quant else None})")
    q, e = _pair(call(fn, w, u, mask, n, m, quant, _ref=ref, _check_inputs=False), what, tuple(w.shape))
    assert_close(q, q_ref, what=f"{what}: Q1", rtol=1e-6, atol=1e-8)
    assert_close(e, e_ref, what=f"{what}: Err1", rtol=1e-6, atol=1e-8)


def _q2_agree_run(fn, ref):
    for i, (kind, quant) in enumerate((("random", None), ("random", torch.round), ("2:4", None),
                                       ("2:4", torch.round), ("none", torch.round))):
        _compare_step(fn, ref, 30 + i, kind, quant)


_q2_agree = Check("matches the reference on random blocks (fixed masks, 2:4, with and without a quantizer)",
                  "reference", _q2_agree_run)


Q07_2 = Exercise(
    id="q07_2", points=6, notebook=NOTEBOOK, reference="lessonlib.prune.sparsegpt:sparsegpt_block_step",
    statement="Process one block of SparseGPT (Algorithm 1) column by column. For column i: under N:M (keep_n > 0) "
              "and at the start of each group of group_m columns, fill mask1[:, i:i+group_m] in place with "
              "nm_mask(w^2 / d^2) of the current weights; q = the column with pruned entries set to 0 (then "
              "quant(q), masked again, if a quantizer is given); err = (w - q) / d_i; subtract "
              "err * U1[i, i:] from the remaining columns i.. of W1 (in place). Return (Q1, Err1): the q columns "
              "and the err columns, both (out, B). d = diag(U1), U1 the upper Cholesky factor of H^-1.",
    hints=("The OBS update of a column uses the row U1[i, i:] of the upper factor: "
           "W1[:, i:] -= err.unsqueeze(1) * U1[i, i:].unsqueeze(0).",
           "err divides by d_i once; the saliency w^2 / d^2 divides the square by d_i squared.",
           "Choose an N:M group's mask just before processing it, from W1 as updated by the columns before."),
    checks=(_LIT_ERRFB, _LIT_NM, _LIT_QUANT, _q2_zeros, _q2_inplace_mask, _q2_agree),
    time_limit_s=20.0,
)

EXERCISES = [Q07_1, Q07_2]


# ------------------------------------------------------------------ q07_3: concept question
Q07_C1 = Exercise(
    id="q07_3", points=1, notebook=NOTEBOOK, reference="lessonlib.concepts:q07_c1",
    statement="Wanda's score |W_ij| ||X_j|| ranks weights like the OBS saliency w^2 / [H^-1]_qq with the Hessian H replaced by what? A: its diagonal. B: the identity. C: its inverse. D: its largest eigenvalue times the identity. Return one letter.",
    hints=('For a diagonal H, what is [H^-1]_qq?',),
    checks=concept_checks("q07_3", "A"),
)
EXERCISES = [*EXERCISES, Q07_C1]


# ------------------------------------------------------------------ q07_4 sparsegpt_block_mask
def _mask_lit(name: str, W1: list, d: list, sparsity: float, i1: int, want: list) -> Check:
    return literal(name, (torch.tensor(W1), torch.diag(torch.tensor(d)), sparsity, i1),
                   expected=torch.tensor(want), result=lambda got, what: assert_tensor(
                       got, what=what, shape=tuple(torch.tensor(want).shape), dtype=torch.bool))


# scores w^2 / d^2 = [[1, 16], [9, 9]]; k = n_to_prune(4, .5) - 0 = 2: (0, 0) and, of the tie at 9, (1, 0)
# (smaller row-major index). Magnitude alone (w^2 = [[1, 4], [9, 2.25]]) would prune (0, 0) and (1, 1) instead.
_LIT_M_SAL = _mask_lit("scores divide by d^2, compared over the whole block; ties to the smaller index",
                       [[1.0, 2.0], [3.0, 1.5]], [1.0, 0.5], 0.5, 0, [[False, True], [False, True]])
# out = 3, B = 1, sparsity 0.5: n_to_prune(3) = 2, n_to_prune(6) = 3, n_to_prune(9) = 5 (floor(s n + 1/2)), so the
# block at i1 = 1 prunes 3 - 2 = 1 and the block at i1 = 2 prunes 5 - 3 = 2: the counts add up, not 1.5 -> 2 each
_LIT_M_CUM1 = _mask_lit("the block's count is the cumulative difference (block at i1 = 1)", [[1.0], [2.0], [3.0]],
                        [1.0], 0.5, 1, [[False], [True], [True]])
_LIT_M_CUM2 = _mask_lit("the block's count is the cumulative difference (block at i1 = 2)", [[1.0], [2.0], [3.0]],
                        [1.0], 0.5, 2, [[False], [False], [True]])
# every score equal (|w| = 1, d = 1): k = n_to_prune(6, 1/3) = 2, the first two in row-major order
_LIT_M_TIES = _mask_lit("all scores tied: the first k in row-major order", [[1.0, -1.0, 1.0], [-1.0, 1.0, -1.0]],
                        [1.0, 1.0, 1.0], 1 / 3, 0, [[False, False, True], [True, True, True]])


@prop("over the blocks of a layer the pruned counts add up to exactly n_to_prune(out * in, sparsity)")
def _q4_total(fn, ref):
    from lessonlib.prune.masks import n_to_prune
    gen = torch.Generator().manual_seed(11)
    out, n_in, B = 7, 23, 5
    for s in (0.3, 0.5, 0.77):
        pruned = 0
        for i1 in range(0, n_in, B):
            b = min(B, n_in - i1)
            W1 = torch.randn(out, b, generator=gen)
            U1 = torch.triu(torch.rand(b, b, generator=gen)) + torch.eye(b)
            got = call(fn, W1, U1, s, i1, _ref=ref)
            assert_tensor(got, what=f"sparsegpt_block_mask(W1 ({out}, {b}), U1, {s}, i1={i1})", shape=(out, b),
                          dtype=torch.bool)
            pruned += int((~got).sum())
        if pruned != n_to_prune(out * n_in, s):
            raise CheckFailure(f"a ({out}, {n_in}) layer in blocks of {B} at sparsity {s}: the blocks pruned {pruned} "
                               f"entries in all, expected n_to_prune({out * n_in}, {s}) = {n_to_prune(out * n_in, s)}")


def _q4_case(gen, rng):
    out, b = rng.randint(1, 6), rng.randint(1, 9)
    U1 = torch.triu(torch.rand(b, b, generator=gen)) + 0.2 * torch.eye(b)
    return (torch.randn(out, b, generator=gen), U1, rng.choice((0.1, 0.25, 0.5, 0.6, 0.9)), rng.randint(0, 40)), {}


Q07_4 = Exercise(
    id="q07_4", points=4, notebook=NOTEBOOK, reference="lessonlib.prune.sparsegpt:sparsegpt_block_mask",
    statement="SparseGPT's adaptive mask for one block. W1 (out, B) holds the block's weights as updated by the "
              "earlier blocks, U1 (B, B) the block's part of the upper Cholesky factor of H^-1, i1 the block's first "
              "column in the layer. Score each weight with its OBS saliency (from the derivation), compare over the "
              "whole block, and prune as many as keep the layer's running total exact: the blocks so far, columns "
              "0..i1+B-1, must have pruned n_to_prune(out * (i1 + B), sparsity) in all. Ties go to the smaller "
              "row-major index. Return the bool keep-mask (out, B).",
    hints=("The saliency of removing w_q is w_q^2 / [H^-1]_qq; in the sequential scheme [H^-1]_qq becomes d^2 with "
           "d = diag(U1).",
           "lessonlib.prune.masks has n_to_prune and prune_lowest_count (stable: ties to the smaller index).",
           "Rounding each block's count on its own (round(s * out * B)) makes the layer's total drift."),
    checks=(_LIT_M_SAL, _LIT_M_CUM1, _LIT_M_CUM2, _LIT_M_TIES, _q4_total,
            agrees_with_reference("matches the reference on random blocks", _q4_case, n_cases=20)),
    time_limit_s=20.0,
)
EXERCISES = [*EXERCISES, Q07_4]
