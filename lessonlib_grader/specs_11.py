"""Graded exercise of notebook 11 (depth pruning): ShortGPT's Block Influence.

Every expected value below is computed by hand in the comment beside it; none comes from the reference.
"""
from __future__ import annotations

import random

import torch

from .checks import agrees_with_reference, assert_close, assert_python_float, call, literal, prop
from .registry import Exercise

NOTEBOOK = "11_depth_pruning"

_IN = torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # two tokens, C = 2
_OUT = torch.tensor([[1.0, 0.0], [2.0, 0.0]])  # token 0 unchanged in direction, token 1 turned by 90 degrees


@prop("returns a plain Python float")
def _type(fn, ref):
    assert_python_float(call(fn, _IN, _OUT, _ref=ref), what="block_influence(h_in, h_out)")


@prop("scaling any token's output by a positive number changes nothing (only directions count)")
def _scale(fn, ref):
    g = torch.Generator().manual_seed(3)
    h_in, h_out = torch.randn(2, 5, 8, generator=g), torch.randn(2, 5, 8, generator=g)
    a = call(fn, h_in, h_out, _ref=ref)
    scales = torch.rand(2, 5, 1, generator=g) * 20 + 0.05  # a different factor per token
    b = call(fn, h_in, h_out * scales, _ref=ref)
    assert_close(b, a, what="block_influence(h_in, h_out * per-token scales) vs block_influence(h_in, h_out)",
                 rtol=1e-5, atol=1e-6)


@prop("the order of the tokens does not matter")
def _perm(fn, ref):
    g = torch.Generator().manual_seed(4)
    h_in, h_out = torch.randn(12, 6, generator=g), torch.randn(12, 6, generator=g)
    a = call(fn, h_in, h_out, _ref=ref)
    p = torch.randperm(12, generator=g)
    assert_close(call(fn, h_in[p], h_out[p], _ref=ref), a, what="block_influence with the tokens shuffled "
                 "(the same shuffle for input and output)", rtol=1e-5, atol=1e-6)


@prop("a (B, T, C) batch gives the same value as its (B*T, C) tokens")
def _batch(fn, ref):
    g = torch.Generator().manual_seed(5)
    h_in, h_out = torch.randn(3, 4, 7, generator=g), torch.randn(3, 4, 7, generator=g)
    a = call(fn, h_in, h_out, _ref=ref)
    b = call(fn, h_in.reshape(12, 7), h_out.reshape(12, 7), _ref=ref)
    assert_close(a, b, what="block_influence on (3, 4, 7) vs on the same tokens as (12, 7)", rtol=1e-5, atol=1e-6)


def _case(gen: torch.Generator, rng: random.Random):
    shape = rng.choice([(rng.randint(1, 9), rng.randint(2, 16)), (2, rng.randint(1, 6), rng.randint(2, 16))])
    h_in = torch.randn(*shape, generator=gen)
    h_out = h_in + rng.choice([0.1, 1.0, 5.0]) * torch.randn(*shape, generator=gen)  # a residual update
    return (h_in, h_out), {}


Q11_1 = Exercise(
    id="q11_1", points=5, notebook=NOTEBOOK, reference="lessonlib.arch.depth:block_influence",
    statement="Return ShortGPT's Block Influence of one block as a Python float: one minus the mean, over "
              "every token, of the cosine similarity between the token's hidden state entering the block "
              "(h_in) and leaving it (h_out). Inputs are (..., C); a token whose input or output is the zero "
              "vector counts as cosine 0.",
    hints=("Flatten every leading dimension into one token axis: (-1, C).",
           "The cosine is taken per token along the channel axis, then averaged over tokens.",
           "Guard the division by the product of norms (clamp it) so a zero vector gives 0, not NaN."),
    checks=(
        literal("two tokens: one kept, one turned by 90 degrees", (_IN, _OUT), expected=0.5,
                result=assert_python_float),  # cos = [1, 0] -> 1 - 0.5
        literal("output equal to the input", (_IN, _IN), expected=0.0),  # cos = 1 everywhere
        literal("output opposite to the input", (_IN, -3 * _IN), expected=2.0),  # cos = -1
        literal("a (1, 2, 2) batch", (_IN[None], _OUT[None]), expected=0.5),
        literal("three tokens, 45 and 180 degrees", (torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]]),
                                                     torch.tensor([[1.0, 1.0], [0.0, -4.0], [3.0, 3.0]])),
                expected=1 - (2 ** -0.5 - 1 + 1) / 3),  # cos = [1/sqrt2, -1, 1] -> 1 - 0.2357
        literal("a zero token counts as cosine 0", (torch.tensor([[0.0, 0.0], [1.0, 0.0]]),
                                                    torch.tensor([[1.0, 0.0], [1.0, 0.0]])),
                expected=0.5),  # cos = [0, 1]
        _type, _scale, _perm, _batch,
        agrees_with_reference("matches the reference on random hidden states", _case, n_cases=10,
                              rtol=1e-5, atol=1e-6),
    ),
)

from .concept import answer_function_checks, choice  # noqa: E402  (concept questions)

Q11_2 = Exercise(
    id='q11_2', points=2, notebook=NOTEBOOK, reference="lessonlib.concepts:rescaling_block_choice",
    statement="Concept question (return one letter). In a pre-norm residual stack, block i only rescales the stream, h -> c h with c > 0. When does removing it leave the model's output exactly unchanged? A: always, because RMSNorm is scale-invariant; B: only when block i is the last block, because every later block adds its update to a stream c times larger; C: only when c < 1; D: never, the final norm cannot remove a scale.",
    hints=('Write the stream after block i+1 with and without the rescaling.',),
    checks=(choice("the letter of the right answer", 'B'), *answer_function_checks("letter")),
)

EXERCISES = [Q11_1, Q11_2]
