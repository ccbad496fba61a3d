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

from .checks import Check, CheckFailure, assert_close, call, literal, prop
from .registry import Exercise
from .concept import answer_function_checks, number


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

# ---- q19_2 / q19_3: single-state rANS with renormalisation (lessonlib.coding.tiny_rans) ----
# The worked example, by hand: freqs [3, 1] (M = 4), L = 4, base 2, so the state lives in [4, 8);
# x_max(a) = (L/M) * 2 * 3 = 6, x_max(b) = 2.  Encoding [a, a, b, a] from the end, x = 4:
#   a: 4 < 6, x = (4 // 3) * 4 + 0 + 4 % 3 = 5
#   b: 5 >= 2 emit 1, x = 2; 2 >= 2 emit 0, x = 1; x = (1 // 1) * 4 + 3 + 0 = 7
#   a: 7 >= 6 emit 1, x = 3; x = (3 // 3) * 4 + 0 + 0 = 4
#   a: 4 < 6, x = 5                                     -> (5, [1, 0, 1])
_EX = ([0, 0, 1, 0], [3, 1], 4, 2)


def _rans_case(gen: torch.Generator, rng: random.Random):
    k = rng.randint(1, 5)
    freqs = [rng.randint(1, 9) for _ in range(k)]
    L = sum(freqs) * rng.choice([1, 2, 4, 16])
    msg = [rng.randrange(k) for _ in range(rng.randint(0, 30))]
    return (msg, freqs, L, rng.choice([2, 3, 10, 256])), {}


def _pair(got, what: str) -> tuple[int, list[int]]:
    if not (isinstance(got, tuple) and len(got) == 2):
        raise CheckFailure(f"{what}\n  expected a tuple (state, digits), got {type(got).__name__} {got!r}")
    x, d = got
    if isinstance(x, bool) or not isinstance(x, int) or not isinstance(d, list):
        raise CheckFailure(f"{what}\n  expected (int state, list of digits), got ({type(x).__name__}, {type(d).__name__})")
    return x, [int(v) for v in d]


def _enc_lit(name: str, args: tuple, expected: tuple[int, list[int]]) -> Check:
    def run(fn, ref):
        what = f"rans_tiny_encode{args}"
        got = _pair(call(fn, *args, _ref=ref), what)
        if got != expected:
            raise CheckFailure(f"{what}\n  expected: {expected}\n  got:      {got}")
    return Check(name, "literal", run)


@prop("the final state always lies in [L, base L) and the reference decoder gets the message back")
def _enc_roundtrip(fn, ref):
    from lessonlib.coding.tiny_rans import rans_tiny_decode
    rng = random.Random(7)
    for i in range(40):
        (msg, freqs, L, b), _ = _rans_case(None, rng)
        x, d = _pair(call(fn, msg, freqs, L, b, _ref=ref), f"rans_tiny_encode({msg}, {freqs}, {L}, {b})")
        if not L <= x < b * L:
            raise CheckFailure(f"rans_tiny_encode({msg}, {freqs}, {L}, {b})\n  state {x} is outside [L, base L) = "
                               f"[{L}, {b * L}): the renormalisation did not keep the state in its interval")
        try:
            back = rans_tiny_decode(x, d, len(msg), freqs, L, b)
        except ValueError as e:
            raise CheckFailure(f"rans_tiny_encode({msg}, {freqs}, {L}, {b}) = ({x}, {d})\n  does not decode: {e}")
        if back != msg:
            raise CheckFailure(f"rans_tiny_encode({msg}, {freqs}, {L}, {b}) = ({x}, {d})\n  decodes to {back}")


@_kind("reference")
@prop("agrees with the reference (state and digits) on random models and messages")
def _enc_ref(fn, ref):
    rng = random.Random(3)
    for i in range(30):
        args, _ = _rans_case(None, rng)
        got = _pair(call(fn, *args, _ref=ref), f"rans_tiny_encode{args}")
        if got != ref(*args):
            raise CheckFailure(f"rans_tiny_encode{args}\n  expected: {ref(*args)}\n  got:      {got}")


Q19_2 = Exercise(
    id="q19_2", points=5, notebook=NOTEBOOK, reference="lessonlib.coding.tiny_rans:rans_tiny_encode",
    statement="Encode a list of symbol indices with single-state rANS and return (state, digits). Frequencies "
              "freqs sum to M, cumulative c_s = f_0 + ... + f_{s-1}; the state starts at L and stays in "
              "[L, base L). Go over the symbols from the last to the first; before coding s, emit x mod base "
              "and divide x by base while x >= (L // M) * base * f_s; then x = (x // f_s) * M + c_s + x mod f_s. "
              "digits lists the emitted digits in the order emitted.",
    hints=("Reverse the message: the decoder pops symbols (and digits) in the opposite order.",
           "The renormalisation comes before the update, and it is a while loop, not an if.",
           "Check yourself on freqs [3, 1], L = 4, base 2: [0, 0, 1, 0] -> (5, [1, 0, 1])."),
    checks=(_enc_lit("the worked example (freqs [3, 1], L = 4, base 2)", _EX, (5, [1, 0, 1])),
            _enc_lit("an empty message leaves the initial state", ([], [3, 1], 4, 2), (4, [])),
            # one symbol b from x = 4: emit 0 (x = 2), emit 0 (x = 1), x = 1 * 4 + 3 + 0 = 7
            _enc_lit("one rare symbol", ([1], [3, 1], 4, 2), (7, [0, 0])),
            # base 10, freqs [1, 1] (M = 2), L = 2: [1, 0]: from x = 2, a: x_max = 10, x = 2*2+0 = 4; b: x = 4*2+1+0 = 9
            _enc_lit("base 10, two equal symbols", ([1, 0], [1, 1], 2, 10), (9, [])),
            _enc_roundtrip, _enc_ref),
)


def _dec_lit(name: str, args: tuple, expected: list[int]) -> Check:
    def run(fn, ref):
        what = f"rans_tiny_decode{args}"
        got = call(fn, *args, _ref=ref)
        if not isinstance(got, list) or [int(v) for v in got] != expected:
            raise CheckFailure(f"{what}\n  expected: {expected}\n  got:      {got!r}")
    return Check(name, "literal", run)


@prop("decodes what the reference encoder wrote, on random models and messages")
def _dec_roundtrip(fn, ref):
    from lessonlib.coding.tiny_rans import rans_tiny_encode
    rng = random.Random(11)
    for i in range(40):
        (msg, freqs, L, b), _ = _rans_case(None, rng)
        x, d = rans_tiny_encode(msg, freqs, L, b)
        args = (x, d, len(msg), freqs, L, b)
        got = call(fn, *args, _ref=ref)
        if not isinstance(got, list) or [int(v) for v in got] != msg:
            raise CheckFailure(f"rans_tiny_decode{args}\n  expected: {msg}\n  got:      {got!r}")


@prop("a stream with a digit left over is rejected with ValueError")
def _dec_leftover(fn, ref):
    # (5, [1, 0, 1]) decodes [a, a, b, a]; an extra leading digit is never read, so it must be reported
    try:
        got = call(fn, 5, [1, 1, 0, 1], 4, [3, 1], 4, 2, _ref=ref)
    except CheckFailure as e:
        if "ValueError" in str(e):
            return
        raise
    raise CheckFailure(f"rans_tiny_decode(5, [1, 1, 0, 1], 4, [3, 1], 4, 2)\n  returned {got!r}; one digit "
                       "is never read, which a correct decoder detects (digits left, or a final state other than L): "
                       "raise ValueError")


@_kind("reference")
@prop("agrees with the reference decoder on random streams")
def _dec_ref(fn, ref):
    from lessonlib.coding.tiny_rans import rans_tiny_encode
    rng = random.Random(5)
    for i in range(30):
        (msg, freqs, L, b), _ = _rans_case(None, rng)
        x, d = rans_tiny_encode(msg, freqs, L, b)
        args = (x, d, len(msg), freqs, L, b)
        got = call(fn, *args, _ref=ref)
        if not isinstance(got, list) or [int(v) for v in got] != ref(*args):
            raise CheckFailure(f"rans_tiny_decode{args}\n  expected: {ref(*args)}\n  got:      {got!r}")


Q19_3 = Exercise(
    id="q19_3", points=5, notebook=NOTEBOOK, reference="lessonlib.coding.tiny_rans:rans_tiny_decode",
    statement="Decode n symbol indices from (state, digits) written by rans_tiny_encode: slot = x mod M picks "
              "the symbol s with c_s <= slot < c_s + f_s; x = f_s * (x // M) + slot - c_s; then, while x < L, "
              "x = x * base + the last unread digit (digits are read from the end of the list). After n symbols "
              "the state must be back at L with every digit read; otherwise raise ValueError.",
    hints=("Build slot -> symbol once: symbol s owns the f_s slots starting at c_s.",
           "Pop digits from the end of a copy of the list (it is a stack).",
           "Renormalise with a while loop: one step may need several digits."),
    checks=(_dec_lit("the worked example", (5, [1, 0, 1], 4, [3, 1], 4, 2), [0, 0, 1, 0]),
            _dec_lit("one rare symbol", (7, [0, 0], 1, [3, 1], 4, 2), [1]),
            _dec_lit("base 10, two equal symbols", (9, [], 2, [1, 1], 2, 10), [1, 0]),
            _dec_lit("nothing to decode", (4, [], 0, [3, 1], 4, 2), []),
            _dec_roundtrip, _dec_leftover, _dec_ref),
)


# ---- q19_4: the sources' practice problem (concept question, a number) ----
Q19_4 = Exercise(
    id="q19_4", points=2, notebook=NOTEBOOK, reference="lessonlib.concepts:pruned_quantized_coded_mb",
    statement="Concept question. A 100M-parameter fp32 model is pruned to 10% of its weights, the survivors "
              "are quantized to 4 bits and entropy-coded at 1.5 bits each (positions not counted, as the "
              "problem says). Return its size in MB (10^6 bytes) as a number.",
    hints=("Survivors: 10^7. Each costs 1.5 bits after coding; the 4-bit step only tells you the coder's input.",
           "Bits to bytes: divide by 8."),
    checks=(number("the size in MB", 1.875), *answer_function_checks("number")),  # 1e7 * 1.5 / 8 / 1e6
)

EXERCISES = [Q19_1, Q19_2, Q19_3, Q19_4]
