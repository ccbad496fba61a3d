"""Graded exercise of notebook 10 (heads and neurons): physically shrink an FFN to the kept neurons.

Every expected value below is written out by hand from the small matrices beside it; none comes from
the reference.
"""
from __future__ import annotations

import random

import torch
import torch.nn.functional as F

from .checks import Check, CheckFailure, assert_close, call, describe, prop
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

EXERCISES = [Q10_1]
