"""Wrong answers a student might hand in for notebook 20's exercise (each must score 0)."""
from __future__ import annotations

import torch

from . import mutant


def _finish(y, bias):
    return y if bias is None else y + bias


@mutant("q20_1", "computes the dense product: right numbers, but reads every row (no skipping)")
def dense(h, w_down_t, bias=None, threshold=0.0):
    live = h.abs() > threshold  # (tokens, d_ff)
    return _finish((h * live) @ w_down_t, bias)


@mutant("q20_1", "keeps a unit only if it is active for every token (all instead of any)")
def all_tokens(h, w_down_t, bias=None, threshold=0.0):
    live = h.abs() > threshold
    active = live.all(0).nonzero().squeeze(1)
    return _finish((h * live)[:, active] @ w_down_t[active], bias)


@mutant("q20_1", "skips idle units but forgets to zero small entries inside active units")
def no_zeroing(h, w_down_t, bias=None, threshold=0.0):
    active = (h.abs() > threshold).any(0).nonzero().squeeze(1)
    return _finish(h[:, active] @ w_down_t[active], bias)


@mutant("q20_1", "treats |h| == threshold as active (>= instead of >)")
def greater_equal(h, w_down_t, bias=None, threshold=0.0):
    live = h.abs() >= threshold if threshold > 0 else h != 0
    active = live.any(0).nonzero().squeeze(1)
    return _finish((h * live)[:, active] @ w_down_t[active], bias)


@mutant("q20_1", "forgets the bias")
def no_bias(h, w_down_t, bias=None, threshold=0.0):
    live = h.abs() > threshold
    active = live.any(0).nonzero().squeeze(1)
    return (h * live)[:, active] @ w_down_t[active]


@mutant("q20_1", "tests h > threshold instead of |h| > threshold (drops negative activations)")
def signed(h, w_down_t, bias=None, threshold=0.0):
    live = h > threshold
    active = live.any(0).nonzero().squeeze(1)
    return _finish((h * live)[:, active] @ w_down_t[active], bias)


@mutant("q20_1", "gathers columns of w_down_t instead of rows (treats it as W_down (d, d_ff))")
def columns(h, w_down_t, bias=None, threshold=0.0):
    live = h.abs() > threshold
    active = live.any(0).nonzero().squeeze(1)
    return _finish((h * live)[:, active] @ w_down_t[:, active].T, bias)


@mutant("q20_2", "keeps SiLU: no ReLU-fication, so (almost) no exact zeros")
def silu_gate(x, w_gate, w_up, w_down):
    h = torch.nn.functional.silu(x @ w_gate.T) * (x @ w_up.T)
    return h @ w_down.T, float((h == 0).float().mean())


@mutant("q20_2", "applies ReLU after the product (ReLU(gate * up)) instead of to the gate")
def relu_after_product(x, w_gate, w_up, w_down):
    h = torch.relu((x @ w_gate.T) * (x @ w_up.T))
    return h @ w_down.T, float((h == 0).float().mean())


@mutant("q20_2", "puts the ReLU on the up projection instead of the gate")
def relu_on_up(x, w_gate, w_up, w_down):
    h = (x @ w_gate.T) * torch.relu(x @ w_up.T)
    return h @ w_down.T, float((h == 0).float().mean())


@mutant("q20_2", "counts the zeros of the gate only, missing the zeros that come from the up projection")
def gate_zeros_only(x, w_gate, w_up, w_down):
    gate = torch.relu(x @ w_gate.T)
    h = gate * (x @ w_up.T)
    return h @ w_down.T, float((gate == 0).float().mean())


@mutant("q20_2", "returns the nonzero fraction instead of the zero fraction")
def nonzero_fraction(x, w_gate, w_up, w_down):
    h = torch.relu(x @ w_gate.T) * (x @ w_up.T)
    return h @ w_down.T, float((h != 0).float().mean())


@mutant('q20_3', 'answers A (zero for at least one token)')
def concept_q20_3_0():
    return 'A'


@mutant('q20_3', 'answers C (near-zero mean)')
def concept_q20_3_1():
    return 'C'


@mutant('q20_3', 'answers D (zero for the first token)')
def concept_q20_3_2():
    return 'D'
