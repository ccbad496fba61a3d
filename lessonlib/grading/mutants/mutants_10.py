"""Wrong answers a student might hand in for notebook 10's exercise (each must score 0)."""
from __future__ import annotations

from . import mutant


@mutant("q10_1", "takes rows of the output projection instead of columns")
def out_rows(w_in, b_in, w_out, keep):
    return [w[keep] for w in w_in], [None if b is None else b[keep] for b in b_in], w_out[keep]


@mutant("q10_1", "takes columns of the input projections (treats them as (d, d_ff))")
def in_columns(w_in, b_in, w_out, keep):
    return [w[:, keep] for w in w_in], [None if b is None else b[keep] for b in b_in], w_out[:, keep]


@mutant("q10_1", "forgets to shrink the input biases")
def keeps_biases(w_in, b_in, w_out, keep):
    return [w[keep] for w in w_in], list(b_in), w_out[:, keep]


@mutant("q10_1", "shrinks only the first input projection (gate) and leaves up_proj whole")
def only_gate(w_in, b_in, w_out, keep):
    new_w = [w_in[0][keep]] + list(w_in[1:])
    new_b = [None if b_in[0] is None else b_in[0][keep]] + list(b_in[1:])
    return new_w, new_b, w_out[:, keep]


@mutant("q10_1", "removes the neurons in keep instead of keeping them")
def removes_keep(w_in, b_in, w_out, keep):
    import torch
    drop = torch.ones(w_out.shape[1], dtype=torch.bool)
    drop[keep] = False
    return [w[drop] for w in w_in], [None if b is None else b[drop] for b in b_in], w_out[:, drop]
