"""Graded exercise of notebook 10 (heads and neurons): physically shrink an FFN to the kept neurons.

Every expected value below is written out by hand from the small matrices beside it; none comes from
the reference.
"""
from __future__ import annotations

import random

import torch
import torch.nn.functional as F

from .checks import Check, CheckFailure, agrees_with_reference, assert_close, call, describe, literal, prop
from .registry import Exercise

NOTEBOOK = "10_heads_and_neurons"

_GATE = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])  # (d_ff=3, d=2)
_UP = torch.tensor([[10.0, 20.0], [30.0, 40.0], [50.0, 60.0]])  # (3, 2)
_DOWN = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])  # (d=2, d_ff=3)
_SQ = torch.arange(9.0).view(3, 3)  # square: d = d_ff = 3, so a wrong axis keeps the shapes


def _assert_result(got, expected, what: str) -> None:
    """got must be (list of tensors, list of tensors-or-None, tensor) matching ``expected`` exactly."""
    if not isinstance(got, (tuple, list)) or len(got) != 3:
        raise CheckFailure(f"{what}\n  expected a tuple (w_in, b_in, w_out), got {type(got).__name__} {describe(got)}")
    (gw, gb, go), (ew, eb, eo) = got, expected
    for name, g, e in (("w_in", gw, ew), ("b_in", gb, eb)):
        if not isinstance(g, (list, tuple)) or len(g) != len(e):
            raise CheckFailure(f"{what}\n  expected {name} to be a list of {len(e)} entries, got {describe(g)}")
        for j, (gj, ej) in enumerate(zip(g, e)):
            if ej is None:
                if gj is not None:
                    raise CheckFailure(f"{what}\n  {name}[{j}] was None (no bias) and must stay None, got {describe(gj)}")
                continue
            assert_close(gj, ej, what=f"{what}: {name}[{j}]")
    assert_close(go, eo, what=f"{what}: w_out")


def _literal(name: str, args: tuple, expected: tuple) -> Check:
    """A hand-computed case whose result is a tuple (``checks.literal`` compares single values only)."""
    def run(fn, ref):
        got = call(fn, *args, _ref=ref)
        _assert_result(got, expected, f"shrink_ffn_tensors on the case '{name}'")
    return Check(name, "literal", run)


_L1 = _literal("gated FFN (gate, up, down), keep neurons 0 and 2",
               ([_GATE, _UP], [None, None], _DOWN, torch.tensor([0, 2])),
               ([torch.tensor([[1.0, 2.0], [5.0, 6.0]]), torch.tensor([[10.0, 20.0], [50.0, 60.0]])],
                [None, None], torch.tensor([[1.0, 3.0], [4.0, 6.0]])))  # rows 0, 2 of gate/up; columns 0, 2 of down
_L2 = _literal("BERT FFN with a bias, keep neuron 1",
               ([_GATE], [torch.tensor([0.1, 0.2, 0.3])], _DOWN, torch.tensor([1])),
               ([torch.tensor([[3.0, 4.0]])], [torch.tensor([0.2])], torch.tensor([[2.0], [5.0]])))
_L3 = _literal("square matrices (d = d_ff): rows of the inputs, columns of the output",
               ([_SQ], [torch.tensor([7.0, 8.0, 9.0])], _SQ + 100, torch.tensor([1, 2])),
               ([torch.tensor([[3.0, 4.0, 5.0], [6.0, 7.0, 8.0]])], [torch.tensor([8.0, 9.0])],
                torch.tensor([[101.0, 102.0], [104.0, 105.0], [107.0, 108.0]])))
_L4 = _literal("keep every neuron: nothing changes",
               ([_GATE, _UP], [None, torch.tensor([1.0, 2.0, 3.0])], _DOWN, torch.tensor([0, 1, 2])),
               ([_GATE, _UP], [None, torch.tensor([1.0, 2.0, 3.0])], _DOWN))


def _llama_ffn(x, gate, up, down):
    return (F.silu(x @ gate.T) * (x @ up.T)) @ down.T  # (N, d)


@prop("the shrunk gated FFN computes the same output as the full one whose removed neurons were silenced")
def _equivalent(fn, ref):
    g = torch.Generator().manual_seed(5)
    d, d_ff = 6, 10
    gate, up, down = torch.randn(d_ff, d, generator=g), torch.randn(d_ff, d, generator=g), torch.randn(d, d_ff, generator=g)
    keep = torch.tensor([0, 3, 4, 8])
    silenced = down.clone()
    silenced[:, [i for i in range(d_ff) if i not in keep.tolist()]] = 0  # neurons that contribute nothing
    x = torch.randn(5, d, generator=g)
    w_in, _b, w_out = call(fn, [gate, up], [None, None], down, keep, _ref=ref)
    if not isinstance(w_in, (list, tuple)) or len(w_in) != 2 or not isinstance(w_out, torch.Tensor):
        raise CheckFailure(f"expected ([gate', up'], b_in', down'), got {describe(w_in)}, {describe(w_out)}")
    try:
        got = _llama_ffn(x, w_in[0], w_in[1], w_out)
    except RuntimeError as e:
        raise CheckFailure(f"the shrunk matrices cannot be multiplied as an FFN (x @ gate'.T, ... @ down'.T): {e}") from None
    assert_close(got, _llama_ffn(x, gate, up, silenced), what="FFN output after shrinking to neurons [0, 3, 4, 8] "
                 "vs the full FFN with the other columns of down_proj set to zero", rtol=1e-4, atol=1e-5)


def _agrees_run(fn, ref):
    gen, rng = torch.Generator().manual_seed(0), random.Random(0)
    for i in range(8):
        d, d_ff, n_in = rng.randint(1, 7), rng.randint(2, 12), rng.choice([1, 2])
        w_in = [torch.randn(d_ff, d, generator=gen) for _ in range(n_in)]
        b_in = [torch.randn(d_ff, generator=gen) if rng.random() < 0.5 else None for _ in range(n_in)]
        w_out = torch.randn(d, d_ff, generator=gen)
        keep = torch.tensor(sorted(rng.sample(range(d_ff), rng.randint(1, d_ff))))
        want = ref(w_in, b_in, w_out, keep)
        got = call(fn, w_in, b_in, w_out, keep, _ref=ref)
        _assert_result(got, want, f"random case {i + 1}/8 (seed 0): d={d}, d_ff={d_ff}, {n_in} input "
                                  f"projection(s), keep={keep.tolist()}")


_agrees = Check("matches the reference on random FFN shapes, with and without biases", "reference", _agrees_run)


Q10_1 = Exercise(
    id="q10_1", points=5, notebook=NOTEBOOK, reference="lessonlib.arch.ffn:shrink_ffn_tensors",
    statement="Remove FFN neurons physically: keep only the neurons in `keep` (sorted indices). A neuron is "
              "one row of every input projection (gate and up in LLaMA, (d_ff, d)), the same entry of each "
              "input bias, and one column of the output projection (down, (d, d_ff)). Return the new "
              "(w_in list, b_in list, w_out); a bias that is None stays None.",
    hints=("Input projections are (d_ff, d): a neuron is a row, so index the first axis.",
           "The output projection is (d, d_ff): a neuron is a column, so index the second axis.",
           "Apply the same `keep` to every input projection and to its bias."),
    checks=(_L1, _L2, _L3, _L4, _equivalent, _agrees),
)

# ---- q10_2: gradient saliency of every head from one recorded (input, gradient) pair of W_O ----
# Two heads of width 2, one token: x = [1, 2, 3, 4], grad = [1, 1, -1, 0.5]
#   head 0: 1*1 + 2*1 = 3;  head 1: 3*(-1) + 4*0.5 = -1 -> |.| = [3, 1]
_X1, _G1 = torch.tensor([[1.0, 2.0, 3.0, 4.0]]), torch.tensor([[1.0, 1.0, -1.0, 0.5]])


@prop("returns a float32 (n_heads,) tensor")
def _sal_shape(fn, ref):
    got = call(fn, _X1, _G1, 2, _ref=ref)
    if not isinstance(got, torch.Tensor) or got.shape != (2,) or got.dtype != torch.float32:
        raise CheckFailure(f"head_saliency_from_grads(x, grad, 2)\n  expected a float32 tensor of shape (2,), got {describe(got)}")


@prop("tokens are summed BEFORE the absolute value (opposite contributions cancel)")
def _sal_cancel(fn, ref):
    # two tokens of one head: +2 and -2 cancel: |2 - 2| = 0 (a per-token |.| would give 4)
    x, g = torch.tensor([[1.0, 1.0], [1.0, 1.0]]), torch.tensor([[1.0, 1.0], [-1.0, -1.0]])
    assert_close(call(fn, x, g, 1, _ref=ref), torch.tensor([0.0]), what="head_saliency_from_grads(2 tokens that cancel)")


@prop("agrees with autograd: the gradient of a gate xi on each head's output")
def _sal_autograd(fn, ref):
    g = torch.Generator().manual_seed(0)
    for n_heads, d in ((3, 4), (2, 5), (4, 1)):
        x = torch.randn(2, 6, n_heads * d, generator=g)
        wo = torch.randn(7, n_heads * d, generator=g)
        xi = torch.ones(n_heads, requires_grad=True)
        xg = (x * xi.repeat_interleave(d)).requires_grad_(True)
        xg.retain_grad()
        loss = torch.tanh(xg @ wo.T).pow(2).sum()
        loss.backward()
        expected = xi.grad.abs()
        got = call(fn, x, xg.grad.detach(), n_heads, _ref=ref)
        assert_close(got, expected, what=f"head_saliency_from_grads on a random layer with {n_heads} heads of width {d}",
                     rtol=1e-4, atol=1e-5)


def _sal_case(gen, rng):
    n_heads, d = rng.randint(1, 5), rng.randint(1, 6)
    shape = rng.choice([(rng.randint(1, 5), n_heads * d), (2, rng.randint(1, 4), n_heads * d)])
    return (torch.randn(*shape, generator=gen), torch.randn(*shape, generator=gen), n_heads), {}


Q10_2 = Exercise(
    id="q10_2", points=5, notebook=NOTEBOOK, reference="lessonlib.arch.head_core:head_saliency_from_grads",
    statement="Return every head's gradient saliency |dL/dxi_h| (Michel et al. 2019) from x, the input of the "
              "attention output projection (..., n_heads * d), and grad, dL/dx of the same shape: derive dL/dxi_h "
              "for a gate that multiplies head h's channels by xi_h, evaluated at xi = 1. Return (n_heads,) float32.",
    hints=("The gate multiplies the d channels of head h; by the chain rule its gradient sums x * grad over them.",
           "Sum over every token as well, and take the absolute value at the end.",
           "reshape(-1, n_heads, d) puts each head's channels on one axis."),
    checks=(literal("one token, two heads of width 2", (_X1, _G1, 2), expected=torch.tensor([3.0, 1.0])),
            literal("a (1, 1, 4) batch gives the same", (_X1[None], _G1[None], 2), expected=torch.tensor([3.0, 1.0])),
            literal("one head of width 4", (_X1, _G1, 1), expected=torch.tensor([2.0])),  # |3 - 1|
            _sal_shape, _sal_cancel, _sal_autograd,
            agrees_with_reference("matches the reference on random inputs", _sal_case, n_cases=10, rtol=1e-4, atol=1e-5)),
)


# ---- q10_3: physical removal of query heads from W_Q (rows) and W_O (columns) ----
_WQ = torch.arange(12.0).view(6, 2)  # 3 heads of width 2, C = 2: head h = rows 2h, 2h+1
_BQ = torch.arange(6.0) * 10
_WO = torch.arange(12.0).view(2, 6) + 100  # (C = 2, 6): head h = columns 2h, 2h+1


def _drop_lit(name, args, expected):
    def run(fn, ref):
        got = call(fn, *args, _ref=ref)
        what = f"drop_query_heads on the case '{name}'"
        if not isinstance(got, (tuple, list)) or len(got) != 3:
            raise CheckFailure(f"{what}\n  expected a tuple (w_q, b_q, w_o), got {describe(got)}")
        assert_close(got[0], expected[0], what=what + ": w_q")
        if expected[1] is None:
            if got[1] is not None:
                raise CheckFailure(f"{what}\n  b_q was None and must stay None, got {describe(got[1])}")
        else:
            assert_close(got[1], expected[1], what=what + ": b_q")
        assert_close(got[2], expected[2], what=what + ": w_o")
    return Check(name, "literal", run)


@prop("the smaller layer computes the original output with the removed heads' outputs zeroed")
def _drop_function(fn, ref):
    g = torch.Generator().manual_seed(1)
    n_q, d, C = 4, 3, 5
    wq, bq, wo = torch.randn(n_q * d, C, generator=g), torch.randn(n_q * d, generator=g), torch.randn(C, n_q * d, generator=g)
    x = torch.randn(7, C, generator=g)
    remove = [1, 3]
    got = call(fn, wq, bq, wo, remove, d, _ref=ref)
    h = x @ wq.T + bq  # (7, n_q * d): stands in for each head's output channels
    mask = torch.ones(n_q * d)
    for r in remove:
        mask[r * d:(r + 1) * d] = 0
    expected = (h * mask) @ wo.T
    small = (x @ got[0].T + got[1]) @ got[2].T
    assert_close(small, expected, what="x -> W_Q' -> W_O' against the full layer with heads 1 and 3 zeroed",
                 rtol=1e-4, atol=1e-4)


def _drop_case(gen, rng):
    n_q, d, C = rng.randint(1, 5), rng.randint(1, 4), rng.randint(1, 6)
    remove = rng.sample(range(n_q), rng.randint(0, n_q))
    bias = torch.randn(n_q * d, generator=gen) if rng.random() < 0.5 else None
    return (torch.randn(n_q * d, C, generator=gen), bias, torch.randn(C, n_q * d, generator=gen), remove, d), {}


def _drop_ref_run(fn, ref):
    import random as _random
    rng, gen = _random.Random(2), torch.Generator().manual_seed(2)
    for i in range(10):
        args, _ = _drop_case(gen, rng)
        got, want = call(fn, *args, _ref=ref), ref(*args)
        what = f"random case {i + 1}/10: drop_query_heads with n_q * d = {args[0].shape[0]}, remove {args[3]}"
        if not isinstance(got, (tuple, list)) or len(got) != 3:
            raise CheckFailure(f"{what}\n  expected a tuple (w_q, b_q, w_o), got {describe(got)}")
        assert_close(got[0], want[0], what=what + ": w_q")
        if want[1] is None:
            if got[1] is not None:
                raise CheckFailure(f"{what}\n  b_q was None and must stay None")
        else:
            assert_close(got[1], want[1], what=what + ": b_q")
        assert_close(got[2], want[2], what=what + ": w_o")


_drop_ref = Check("matches the reference on random layers", "reference", _drop_ref_run)


Q10_3 = Exercise(
    id="q10_3", points=5, notebook=NOTEBOOK, reference="lessonlib.arch.head_core:drop_query_heads",
    statement="Physically remove the query heads in remove from one attention layer: W_Q (n_q * d, C) loses the "
              "d rows of each removed head, its bias (or None) the same entries, and W_O (C, n_q * d) the same "
              "columns. Return (w_q, b_q, w_o) with the kept heads in their original order.",
    hints=("Head h owns rows h*d .. (h+1)*d - 1 of W_Q and the same columns of W_O.",
           "Build the list of kept channel indices once and index both matrices with it.",
           "Keep None as None for a layer without bias."),
    checks=(_drop_lit("remove the middle head of three", (_WQ, _BQ, _WO, [1], 2),
                      (_WQ[[0, 1, 4, 5]], _BQ[[0, 1, 4, 5]], _WO[:, [0, 1, 4, 5]])),
            _drop_lit("remove heads 2 and 0, no bias", (_WQ, None, _WO, [2, 0], 2),
                      (_WQ[[2, 3]], None, _WO[:, [2, 3]])),
            _drop_lit("remove nothing", (_WQ, _BQ, _WO, [], 2), (_WQ, _BQ, _WO)),
            _drop_lit("width-3 heads", (_WQ, _BQ, _WO, [0], 3), (_WQ[3:], _BQ[3:], _WO[:, 3:])),
            _drop_function,
            _drop_ref),
)

from .concept import answer_function_checks, number  # noqa: E402  (concept questions)

Q10_4 = Exercise(
    id="q10_4", points=2, notebook=NOTEBOOK, reference="lessonlib.concepts:heads_removed_params",
    statement="Concept question (a number). SmolLM2 has 30 blocks, hidden size 576, 9 query heads of width 64 in 3 "
              "KV groups, and no attention biases. Section 2 removes the least salient query head of every KV group "
              "in every block. Predict how many parameters the model loses, from the shapes alone; then compare with "
              "the parameter counts the chapter printed.",
    hints=("Which matrices lose rows or columns when a query head goes, and which are shared by the whole group?",
           "Per removed head: 64 rows of W_Q and 64 columns of W_O, each of length 576."),
    checks=(number("the number of parameters removed", 6635520), *answer_function_checks("number")),  # 30 * 2 * 3 * 64 * 576
)

EXERCISES = [Q10_1, Q10_2, Q10_3, Q10_4]
