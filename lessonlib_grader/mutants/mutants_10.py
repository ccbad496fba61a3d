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


# ---- q10_2: head saliency ----
@mutant("q10_2", "takes |x * grad| per token before summing (no cancellation)")
def abs_first(x, grad, n_heads):
    d = x.shape[-1] // n_heads
    return (x.float() * grad.float()).abs().reshape(-1, n_heads, d).sum(dim=(0, 2))


@mutant("q10_2", "uses |grad| alone, forgetting the chain rule's factor x")
def grad_only(x, grad, n_heads):
    d = x.shape[-1] // n_heads
    return grad.float().reshape(-1, n_heads, d).sum(dim=(0, 2)).abs()


@mutant("q10_2", "groups channels strided (channel c to head c % n_heads) instead of in consecutive blocks")
def strided(x, grad, n_heads):
    d = x.shape[-1] // n_heads
    return (x.float() * grad.float()).reshape(-1, d, n_heads).sum(dim=(0, 1)).abs()


@mutant("q10_2", "averages over tokens instead of summing")
def mean_tokens(x, grad, n_heads):
    d = x.shape[-1] // n_heads
    return (x.float() * grad.float()).reshape(-1, n_heads, d).sum(2).mean(0).abs()


# ---- q10_3: physical head removal ----
def _keep_rows(n_q, d, remove):
    return [c for h in range(n_q) if h not in set(remove) for c in range(h * d, (h + 1) * d)]


@mutant("q10_3", "removes rows of W_O instead of columns")
def wo_rows(w_q, b_q, w_o, remove, head_dim):
    rows = _keep_rows(w_q.shape[0] // head_dim, head_dim, remove)
    keep_o = [r for r in rows if r < w_o.shape[0]]
    return w_q[rows], None if b_q is None else b_q[rows], w_o[keep_o]


@mutant("q10_3", "drops one row/column per head instead of the head's d channels")
def one_channel(w_q, b_q, w_o, remove, head_dim):
    rows = [r for r in range(w_q.shape[0]) if r not in set(remove)]
    return w_q[rows], None if b_q is None else b_q[rows], w_o[:, rows]


@mutant("q10_3", "forgets the bias (returns it unshrunk)")
def keeps_bias(w_q, b_q, w_o, remove, head_dim):
    rows = _keep_rows(w_q.shape[0] // head_dim, head_dim, remove)
    return w_q[rows], b_q, w_o[:, rows]


@mutant("q10_3", "keeps the listed heads instead of removing them")
def keeps_removed(w_q, b_q, w_o, remove, head_dim):
    rows = [c for h in sorted(remove) for c in range(h * head_dim, (h + 1) * head_dim)]
    return w_q[rows], None if b_q is None else b_q[rows], w_o[:, rows]


@mutant("q10_4", "also counts W_K and W_V as shrinking (they are shared by the group)")
def concept_q10_4_0():
    return 13271040


@mutant("q10_4", "counts only the rows of W_Q, forgetting the columns of W_O")
def concept_q10_4_1():
    return 3317760


@mutant("q10_4", "counts one block instead of all 30")
def concept_q10_4_2():
    return 221184
