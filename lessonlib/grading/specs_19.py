"""Graded exercise of notebook 19 (entropy coding): Huffman code lengths from symbol frequencies.

When frequencies tie, several code-length assignments are equally optimal, so besides literal cases with a
unique answer the checks test what every Huffman code satisfies: a complete prefix code (Kraft sum exactly
1), the minimal expected length sum f_i l_i (computed by hand), and more frequent symbols never getting
longer codes.
"""
from __future__ import annotations

import random
from fractions import Fraction

import numpy as np
import torch

from .checks import Check, CheckFailure, assert_close, call, prop
from .registry import Exercise


def _kind(kind: str):
    """Re-label a check written with ``prop`` as a hand-computed literal or a comparison with the reference."""
    return lambda c: Check(c.name, kind, c.run)


NOTEBOOK = "19_entropy_coding"


def _lengths(got, n: int, what: str) -> np.ndarray:
    if not isinstance(got, np.ndarray):
        raise CheckFailure(f"{what}\n  expected a numpy array of code lengths, got {type(got).__name__}")
    if got.shape != (n,) or not np.issubdtype(got.dtype, np.integer):
        raise CheckFailure(f"{what}\n  expected an integer array of shape ({n},), got {got.dtype} {got.shape}")
    if (got < 1).any():
        raise CheckFailure(f"{what}\n  every code length must be >= 1 when there are 2+ symbols, got {got.tolist()}")
    return got.astype(np.int64)


def _assert_optimal(fn, ref, freqs: list[int], cost: int, what: str) -> np.ndarray:
    got = _lengths(call(fn, np.array(freqs), _ref=ref), len(freqs), what)
    kraft = sum(Fraction(1, 2 ** int(x)) for x in got)
    if kraft != 1:
        raise CheckFailure(f"{what}\n  lengths {got.tolist()} have Kraft sum {kraft} (a Huffman code is a complete "
                           "prefix code: sum 2^-l must be exactly 1)")
    total = int(np.dot(np.array(freqs, dtype=np.int64), got))
    if total != cost:
        raise CheckFailure(f"{what}\n  lengths {got.tolist()} give sum f_i l_i = {total} bits; the optimum is {cost}")
    order = np.argsort(-np.array(freqs), kind="stable")
    for a, b in zip(order[:-1], order[1:]):
        if freqs[a] > freqs[b] and got[a] > got[b]:
            raise CheckFailure(f"{what}\n  symbol {a} (frequency {freqs[a]}) got a longer code ({got[a]}) than "
                               f"symbol {b} (frequency {freqs[b]}, length {got[b]})")
    return got


def _lit(name: str, freqs: list[int], expected: list[int]) -> Check:
    """A hand-computed case with a unique optimal answer."""
    def run(fn, ref):
        what = f"huffman_code_lengths({freqs})"
        got = _lengths(call(fn, np.array(freqs), _ref=ref), len(freqs), what)
        assert_close(torch.as_tensor(got), torch.tensor(expected, dtype=torch.int64), what=what)
    return Check(name, "literal", run)


@prop("ties: four equal frequencies give four 2-bit codes")
def _uniform(fn, ref):
    got = _assert_optimal(fn, ref, [7, 7, 7, 7], 56, "huffman_code_lengths([7, 7, 7, 7])")  # 4 * 7 * 2
    assert_close(torch.as_tensor(got), torch.tensor([2, 2, 2, 2]), what="huffman_code_lengths([7, 7, 7, 7])")


@prop("ties: [1, 1, 2, 2] has two optimal answers, either is accepted (expected length 12)")
def _tied(fn, ref):
    _assert_optimal(fn, ref, [1, 1, 2, 2], 12, "huffman_code_lengths([1, 1, 2, 2])")  # [2,2,2,2] or [3,3,2,1]


@prop("a skewed source: optimal expected length, complete code, frequent symbols never longer")
def _skewed(fn, ref):
    # 50, 20, 15, 10, 5: merge 5+10=15, 15+15=30, 20+30=50, 50+50 -> lengths [1, 2, 3, 4, 4] (no ties that matter)
    _assert_optimal(fn, ref, [50, 20, 15, 10, 5], 50 + 40 + 45 + 40 + 20, "huffman_code_lengths([50, 20, 15, 10, 5])")


@prop("powers of two: frequencies 2^-l give exactly those lengths")
def _dyadic(fn, ref):
    # p = 1/2, 1/4, 1/8, 1/16, 1/16: the Huffman code is the Shannon code, lengths 1, 2, 3, 4, 4
    got = _assert_optimal(fn, ref, [8, 4, 2, 1, 1], 8 + 8 + 6 + 4 + 4, "huffman_code_lengths([8, 4, 2, 1, 1])")
    assert_close(torch.as_tensor(got), torch.tensor([1, 2, 3, 4, 4]), what="huffman_code_lengths([8, 4, 2, 1, 1])")


@_kind("reference")
@prop("agrees with the reference's optimal expected length on random alphabets (up to 40 symbols)")
def _random(fn, ref):
    rng = random.Random(0)
    for i in range(12):
        n = rng.randint(2, 40)
        freqs = [rng.choice([1, 2, 3, 10, 100, 1000, rng.randint(1, 5000)]) for _ in range(n)]
        cost = int(np.dot(np.array(freqs), ref(np.array(freqs))))
        _assert_optimal(fn, ref, freqs, cost, f"random case {i + 1}/12: huffman_code_lengths({freqs})")


Q19_1 = Exercise(
    id="q19_1", points=5, notebook=NOTEBOOK, reference="lessonlib.coding.huffman:huffman_code_lengths",
    statement="Return the Huffman code length of every symbol, given positive frequencies freqs (n,) with "
              "n >= 2, as an integer numpy array (n,) in the order of the input: repeatedly merge the two "
              "least frequent nodes into one whose frequency is their sum; a symbol's code length is the "
              "number of merges above it (its depth in the tree).",
    hints=("heapq keeps the nodes ordered by frequency: push (frequency, node id), pop the two smallest.",
           "Remember each node's parent; a symbol's length is the number of steps from its leaf to the root.",
           "Return lengths in the input order, not sorted by frequency."),
    checks=(_lit("the example of the docstring", [5, 2, 1, 1], [1, 2, 3, 3]),  # merges 1+1, 2+2, 4+5
            _lit("symbols out of frequency order", [1, 5, 1, 2], [3, 1, 3, 2]),  # same tree, permuted
            _lit("two symbols get one bit each", [1, 1000], [1, 1]),
            _lit("a very skewed source", [1, 2, 4, 8, 16, 32], [5, 5, 4, 3, 2, 1]),  # a chain: each merge adds 1
            _uniform, _tied, _skewed, _dyadic, _random),
)

EXERCISES = [Q19_1]
