"""Graded exercise of notebook 06 (magnitude pruning): the N:M keep-mask.

Every expected mask below is worked out by hand in the comment beside it; none comes from the reference.
Convention (``lessonlib.prune.masks``): True = keep; N:M keeps ``keep_n`` of every ``group_m`` consecutive
inputs, so ``group_m - keep_n`` are pruned, the lowest scores first, ties to the leftmost.
"""
from __future__ import annotations

import random

import torch

from .checks import CheckFailure, agrees_with_reference, assert_close, assert_tensor, call, literal, prop
from .concept import concept_checks
from .registry import Exercise

NOTEBOOK = "06_magnitude_pruning"
T, F = True, False


def _mask(rows: list[list[bool]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.bool)


def _check_mask(got, shape, what: str) -> None:
    assert_tensor(got, what=what, shape=shape, dtype=torch.bool)


# ------------------------------------------------------------------ q06_1 nm_mask
@prop("returns a bool keep-mask of the scores' shape")
def _q1_type(fn, ref):
    s = torch.arange(24.0).reshape(3, 8)
    _check_mask(call(fn, s, 2, 4, _ref=ref), (3, 8), "nm_mask(scores (3, 8), 2, 4)")


@prop("every group of group_m consecutive inputs keeps exactly keep_n entries")
def _q1_exact(fn, ref):
    gen = torch.Generator().manual_seed(1)
    for n, m in ((1, 4), (2, 4), (3, 4), (2, 8), (5, 8), (1, 2)):
        s = torch.randn(6, 4 * m, generator=gen)
        got = call(fn, s, n, m, _ref=ref)
        what = f"nm_mask(random scores (6, {4 * m}), keep_n={n}, group_m={m})"
        _check_mask(got, tuple(s.shape), what)
        pruned = (~got).reshape(6, 4, m).sum(-1)  # (out, groups)
        if (pruned != m - n).any():
            r, g = (int(i) for i in (pruned != m - n).nonzero()[0])
            raise CheckFailure(f"{what}\n  row {r}, group {g} (columns {g * m}..{g * m + m - 1}) keeps "
                               f"{m - int(pruned[r, g])} entries; every group must keep exactly keep_n={n}")


@prop("only the order of the scores matters (adding a constant or scaling by 3 changes nothing)")
def _q1_monotone(fn, ref):
    gen = torch.Generator().manual_seed(2)
    s = torch.randn(4, 8, generator=gen)
    a = call(fn, s, 2, 4, _ref=ref)
    for name, t in (("scores - 10", s - 10.0), ("3 * scores", 3.0 * s)):
        assert_close(call(fn, t, 2, 4, _ref=ref), a, what=f"nm_mask({name}, 2, 4) vs nm_mask(scores, 2, 4)")


@prop("rows are independent: permuting the rows permutes the mask")
def _q1_rows(fn, ref):
    gen = torch.Generator().manual_seed(3)
    s = torch.randn(5, 8, generator=gen)
    perm = torch.tensor([3, 0, 4, 1, 2])
    a = call(fn, s, 1, 4, _ref=ref)
    assert_close(call(fn, s[perm], 1, 4, _ref=ref), a[perm],
                 what="nm_mask(scores[perm], 1, 4) vs nm_mask(scores, 1, 4)[perm]")


def _q1_case(gen: torch.Generator, rng: random.Random):
    n, m = rng.choice([(1, 4), (2, 4), (3, 4), (2, 8), (4, 8), (1, 2), (3, 6)])
    out, groups = rng.randint(1, 6), rng.randint(1, 5)
    if rng.random() < 0.4:  # small integers: many ties, broken to the left
        s = torch.randint(0, 3, (out, groups * m), generator=gen).float()
    else:
        s = torch.randn(out, groups * m, generator=gen)
    return (s, n, m), {}


Q06_1 = Exercise(
    id="q06_1", points=4, notebook=NOTEBOOK, reference="lessonlib.prune.masks:nm_mask",
    statement="Return the N:M keep-mask of a score matrix (out, in): split every row into groups of group_m "
              "consecutive input columns and, in each group, keep the keep_n entries with the highest scores "
              "and prune (set False) the other group_m - keep_n; among equal scores the leftmost is pruned "
              "first. Return a bool tensor of the scores' shape, True = keep. N:M means N kept of every M: "
              "2:4 keeps 2 of 4, 3:4 keeps 3 of 4.",
    hints=("scores.reshape(out, in // group_m, group_m) puts each group on the last axis.",
           "torch.argsort(..., dim=-1, stable=True) breaks ties by position; the first group_m - keep_n "
           "indices of each group are the ones to prune.",
           "mask.scatter_(-1, idx, False) switches off the chosen entries; reshape back to (out, in)."),
    checks=(
        literal("2:4 on one row", (torch.tensor([[4.0, 1.0, 3.0, 2.0, 0.5, 0.7, 0.1, 0.9]]), 2, 4),
                expected=_mask([[T, F, T, F, F, T, F, T]])),  # prune {1, 2} and {0.1, 0.5}
        literal("3:4 prunes one, the lowest score even if negative",
                (torch.tensor([[0.3, -5.0, 2.0, 1.0]]), 3, 4),
                expected=_mask([[T, F, T, T]])),  # -5 is the lowest score
        literal("1:4 keeps only the largest of each group",
                (torch.tensor([[1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]]), 1, 4),
                expected=_mask([[F, F, F, T], [T, F, F, F]])),
        literal("groups are consecutive columns, not strided",
                (torch.tensor([[1.0, 2.0, 9.0, 8.0, 7.0, 6.0, 3.0, 4.0]]), 2, 4),
                expected=_mask([[F, F, T, T, T, T, F, F]])),  # {1,2,9,8} -> keep 9,8; {7,6,3,4} -> keep 7,6
        literal("ties go to the leftmost entry", (torch.ones(2, 4), 2, 4),
                expected=_mask([[F, F, T, T], [F, F, T, T]])),
        literal("6:8 in one group of eight", (torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0, 6.0, 7.0, 8.0]]), 6, 8),
                expected=_mask([[T, T, T, F, F, T, T, T]])),  # prune 1 and 2
        _q1_type, _q1_exact, _q1_monotone, _q1_rows,
        agrees_with_reference("matches the reference on random scores (with and without ties)", _q1_case,
                              n_cases=20),
    ),
)

EXERCISES = [Q06_1]


# ------------------------------------------------------------------ q06_2: concept question
Q06_C1 = Exercise(
    id="q06_2", points=1, notebook=NOTEBOOK, reference="lessonlib.concepts:q06_c1",
    statement='N:M sparsity means N kept of every M consecutive weights. What fraction of a 3:4 sparse matrix is zero? Return the number.',
    hints=('Count the zeros in one group of four.',),
    checks=concept_checks("q06_2", 0.25),
)
EXERCISES = [*EXERCISES, Q06_C1]
