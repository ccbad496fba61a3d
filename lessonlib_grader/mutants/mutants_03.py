"""Plausible wrong answers to notebook 03's exercise (one GPTQ column update); every one must be caught, and
every one changes what ``gptq_quantize`` returns (``tests/test_quant_claims.py`` checks that).

Not planted, because they are not wrong: leaving column i itself un-updated (GPTQ has already stored q and
never reads W1[:, i] again), and updating every column with the whole row U1[i, :] (its entries left of the
diagonal are zero in an upper factor).
"""
from __future__ import annotations

import torch

from . import mutant


@mutant("q03_1", "wrong Cholesky factor: the column U1[i:, i] (a row of the lower factor) instead of the row")
def gptq_lower_factor(W1, U1, i, q):
    err = (W1[:, i] - q) / U1[i, i]
    W1[:, i:] -= err.unsqueeze(1) * U1[i:, i].unsqueeze(0)
    return err


@mutant("q03_1", "a factor of H instead of H^-1 (inverts U1 first)")
def gptq_factor_of_h(W1, U1, i, q):
    V = torch.linalg.inv(U1)  # V V^T = H: a factor of the Hessian, not of its inverse
    err = (W1[:, i] - q) / V[i, i]
    W1[:, i:] -= err.unsqueeze(1) * V[i, i:].unsqueeze(0)
    return err


@mutant("q03_1", "missing division by the diagonal U1[i, i]")
def gptq_no_diag(W1, U1, i, q):
    err = W1[:, i] - q
    W1[:, i:] -= err.unsqueeze(1) * U1[i, i:].unsqueeze(0)
    return err


@mutant("q03_1", "divides by the diagonal squared (the OBS saliency's denominator)")
def gptq_diag_squared(W1, U1, i, q):
    err = (W1[:, i] - q) / U1[i, i] ** 2
    W1[:, i:] -= err.unsqueeze(1) * U1[i, i:].unsqueeze(0)
    return err


@mutant("q03_1", "sign error: adds the correction (err = q - w)")
def gptq_sign(W1, U1, i, q):
    err = (q - W1[:, i]) / U1[i, i]
    W1[:, i:] -= err.unsqueeze(1) * U1[i, i:].unsqueeze(0)
    return err


@mutant("q03_1", "updates the block correctly but returns the undivided error w - q")
def gptq_returns_raw_error(W1, U1, i, q):
    raw = W1[:, i] - q
    W1[:, i:] -= (raw / U1[i, i]).unsqueeze(1) * U1[i, i:].unsqueeze(0)
    return raw


@mutant("q03_1", "works on a copy of W1, so the caller's later columns never see the error")
def gptq_on_copy(W1, U1, i, q):
    W1 = W1.clone()
    err = (W1[:, i] - q) / U1[i, i]
    W1[:, i:] -= err.unsqueeze(1) * U1[i, i:].unsqueeze(0)
    return err


@mutant("q03_1", "off by one: skips the next column (updates W1[:, i+2:] only)")
def gptq_skips_next(W1, U1, i, q):
    err = (W1[:, i] - q) / U1[i, i]
    W1[:, i + 2:] -= err.unsqueeze(1) * U1[i, i + 2:].unsqueeze(0)
    return err


@mutant("q03_2", "concept answer: row k of H^-1 (the unreduced inverse)")
def concept_q03_2_0():
    return "A"


@mutant("q03_2", "concept answer: a column of the Cholesky factor of H")
def concept_q03_2_1():
    return "C"


@mutant("q03_2", "concept answer: the diagonal of H")
def concept_q03_2_2():
    return "D"


# ------------------------------------------------------------------ q03_3: the lazy-batch loop with act-order
def _lazy_loop(W, H, quant, block_size, act_order, *, order="desc", tie_last=False, permute_h=True, factor="inv",
               deferred="scaled", unpermute=True, rtn=False):
    """GPTQ's loop with one planted mistake chosen by the keyword arguments (the defaults are correct)."""
    n = W.shape[1]
    if not act_order:
        perm = torch.arange(n)
    elif tie_last:  # equal H_jj: the later column first
        perm = (n - 1) - torch.argsort(torch.diagonal(H).flip(0), descending=True, stable=True)
    else:
        perm = torch.argsort(torch.diagonal(H), descending=(order == "desc"), stable=True)
    W = W[:, perm].clone()
    H = H[perm][:, perm] if permute_h else H
    U = torch.linalg.cholesky(torch.linalg.inv(H) if factor == "inv" else H, upper=True)
    Q = torch.zeros_like(W)
    for i1 in range(0, n, block_size):
        i2 = min(i1 + block_size, n)
        W1, U1 = W[:, i1:i2].clone(), U[i1:i2, i1:i2]
        Err1, Raw1 = torch.zeros_like(W1), torch.zeros_like(W1)
        for i in range(i2 - i1):
            q = quant(W[:, i1 + i] if rtn else W1[:, i])
            Q[:, i1 + i] = q
            Raw1[:, i] = W1[:, i] - q
            Err1[:, i] = Raw1[:, i] / U1[i, i]
            W1[:, i:] -= Err1[:, i:i + 1] * U1[i:i + 1, i:]
        if deferred == "scaled":
            W[:, i2:] -= Err1 @ U[i1:i2, i2:]
        elif deferred == "raw":
            W[:, i2:] -= Raw1 @ U[i1:i2, i2:]
    return Q[:, torch.argsort(perm)] if unpermute else Q


@mutant("q03_3", "forgets the deferred update: later blocks never see a block's errors")
def lazy_no_deferred(W, H, quant, block_size=128, act_order=False):
    return _lazy_loop(W, H, quant, block_size, act_order, deferred="none")


@mutant("q03_3", "deferred update with the raw errors w - q instead of (w - q) / U_ii")
def lazy_raw_deferred(W, H, quant, block_size=128, act_order=False):
    return _lazy_loop(W, H, quant, block_size, act_order, deferred="raw")


@mutant("q03_3", "act-order in increasing H_jj")
def lazy_ascending(W, H, quant, block_size=128, act_order=False):
    return _lazy_loop(W, H, quant, block_size, act_order, order="asc")


@mutant("q03_3", "returns the codes in the permuted (visiting) order")
def lazy_no_unpermute(W, H, quant, block_size=128, act_order=False):
    return _lazy_loop(W, H, quant, block_size, act_order, unpermute=False)


@mutant("q03_3", "permutes W but not H under act-order")
def lazy_h_unpermuted(W, H, quant, block_size=128, act_order=False):
    return _lazy_loop(W, H, quant, block_size, act_order, permute_h=False)


@mutant("q03_3", "the upper Cholesky factor of H instead of H^-1")
def lazy_factor_of_h(W, H, quant, block_size=128, act_order=False):
    return _lazy_loop(W, H, quant, block_size, act_order, factor="h")


@mutant("q03_3", "quantizes the original columns (round-to-nearest, the updates are computed but never read)")
def lazy_rtn(W, H, quant, block_size=128, act_order=False):
    return _lazy_loop(W, H, quant, block_size, act_order, rtn=True)


@mutant("q03_3", "ties in H_jj broken towards the later column (an unstable sort)")
def lazy_tie_last(W, H, quant, block_size=128, act_order=False):
    return _lazy_loop(W, H, quant, block_size, act_order, tie_last=True)
