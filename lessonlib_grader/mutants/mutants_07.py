"""Plausible wrong answers to notebook 07's exercises (Wanda mask, SparseGPT block); every one must be caught.

Not planted, because it is not wrong: squaring the whole Wanda score (W^2 * sum x^2) ranks every row exactly
as |W| * ||x|| does, and so does using means instead of sums of squares.
"""
from __future__ import annotations

import torch

from lessonlib.prune.masks import nm_mask, prune_lowest
from . import mutant


# ------------------------------------------------------------------ q07_1 wanda_mask
def _select(score, sparsity, keep_n, group_m, per_row=True):
    if keep_n:
        return nm_mask(score, keep_n, group_m)
    return prune_lowest(score, sparsity, per_row=per_row)


@mutant("q07_1", "plain magnitude: |W| without the activation norm")
def wanda_no_activation(weight, input_sq_norms, sparsity, keep_n=0, group_m=0):
    return _select(weight.abs(), sparsity, keep_n, group_m)


@mutant("q07_1", "one comparison group per layer (a single threshold for the matrix) instead of per row")
def wanda_per_layer(weight, input_sq_norms, sparsity, keep_n=0, group_m=0):
    score = weight.abs() * input_sq_norms.sqrt().unsqueeze(0)
    return _select(score, sparsity, keep_n, group_m, per_row=False)


@mutant("q07_1", "forgets the square root: |W| * sum x^2 instead of |W| * ||x||")
def wanda_no_sqrt(weight, input_sq_norms, sparsity, keep_n=0, group_m=0):
    return _select(weight.abs() * input_sq_norms.unsqueeze(0), sparsity, keep_n, group_m)


@mutant("q07_1", "scales the rows instead of the columns (norms broadcast along the wrong axis)")
def wanda_wrong_axis(weight, input_sq_norms, sparsity, keep_n=0, group_m=0):
    return _select(weight.abs() * input_sq_norms.sqrt().unsqueeze(1), sparsity, keep_n, group_m)


@mutant("q07_1", "signed weights: W * ||x|| prunes large negative weights first")
def wanda_signed(weight, input_sq_norms, sparsity, keep_n=0, group_m=0):
    return _select(weight * input_sq_norms.sqrt().unsqueeze(0), sparsity, keep_n, group_m)


# ------------------------------------------------------------------ q07_2 sparsegpt_block_step
def _step(W1, U1, mask1, keep_n=0, group_m=0, quant=None, *, update="row", err_scale="d",
          score_pow=2, nm_upfront=False, remask=True):
    """A configurable SparseGPT block: each mutant below switches one thing off the reference."""
    d = torch.diag(U1)
    Q1, Err1 = torch.zeros_like(W1), torch.zeros_like(W1)
    if keep_n and nm_upfront:
        for j in range(0, W1.shape[1], group_m):
            mask1[:, j:j + group_m] = nm_mask(W1[:, j:j + group_m] ** 2 / d[j:j + group_m] ** 2, keep_n, group_m)
    for i in range(W1.shape[1]):
        if keep_n and not nm_upfront and i % group_m == 0:
            score = W1[:, i:i + group_m] ** 2 / d[i:i + group_m] ** score_pow
            mask1[:, i:i + group_m] = nm_mask(score, keep_n, group_m)
        w = W1[:, i]
        q = w.masked_fill(~mask1[:, i], 0.0)
        if quant is not None:
            q = quant(q)
            if remask:
                q = q.masked_fill(~mask1[:, i], 0.0)
        err = {"d": (w - q) / d[i], "none": w - q, "d2": (w - q) / d[i] ** 2}[err_scale]
        if update == "row":
            W1[:, i:] -= err.unsqueeze(1) * U1[i, i:].unsqueeze(0)
        elif update == "column":
            W1[:, i:] -= err.unsqueeze(1) * U1[i:, i].unsqueeze(0)
        Q1[:, i], Err1[:, i] = q, err
    return Q1, Err1


@mutant("q07_2", "no error feedback: prunes the column but never updates the remaining ones")
def sgpt_no_feedback(W1, U1, mask1, keep_n=0, group_m=0, quant=None):
    return _step(W1, U1, mask1, keep_n, group_m, quant, update="none")


@mutant("q07_2", "wrong Cholesky factor: uses the column U1[i:, i] (the lower factor's row) for the update")
def sgpt_column_of_u(W1, U1, mask1, keep_n=0, group_m=0, quant=None):
    return _step(W1, U1, mask1, keep_n, group_m, quant, update="column")


@mutant("q07_2", "err = w - q, forgetting to divide by d_i")
def sgpt_err_not_scaled(W1, U1, mask1, keep_n=0, group_m=0, quant=None):
    return _step(W1, U1, mask1, keep_n, group_m, quant, err_scale="none")


@mutant("q07_2", "err = (w - q) / d_i^2, the saliency's denominator in the update")
def sgpt_err_d2(W1, U1, mask1, keep_n=0, group_m=0, quant=None):
    return _step(W1, U1, mask1, keep_n, group_m, quant, err_scale="d2")


@mutant("q07_2", "N:M saliency w^2 / d instead of w^2 / d^2")
def sgpt_saliency_d(W1, U1, mask1, keep_n=0, group_m=0, quant=None):
    return _step(W1, U1, mask1, keep_n, group_m, quant, score_pow=1)


@mutant("q07_2", "N:M masks of all groups chosen up front, before the updates of earlier columns")
def sgpt_nm_upfront(W1, U1, mask1, keep_n=0, group_m=0, quant=None):
    return _step(W1, U1, mask1, keep_n, group_m, quant, nm_upfront=True)


@mutant("q07_2", "quantizes after masking but does not mask again (a quantizer without 0 revives pruned weights)")
def sgpt_no_remask(W1, U1, mask1, keep_n=0, group_m=0, quant=None):
    return _step(W1, U1, mask1, keep_n, group_m, quant, remask=False)


@mutant("q07_3", "concept answer: the identity (that is magnitude pruning)")
def concept_q07_3_0():
    return "B"


@mutant("q07_3", "concept answer: the inverse")
def concept_q07_3_1():
    return "C"


@mutant("q07_3", "concept answer: a scaled identity")
def concept_q07_3_2():
    return "D"


# ------------------------------------------------------------------ q07_4 sparsegpt_block_mask
def _block_mask(W1, U1, sparsity, i1, *, power=2, count="cumulative", ties="first", per_row=False, lowest=True):
    from ...prune.masks import n_to_prune, prune_lowest_count
    out, B = W1.shape
    d = torch.diag(U1).unsqueeze(0)
    score = W1 ** 2 / d ** power if power is not None else W1 ** 2
    k = (n_to_prune(out * (i1 + B), sparsity) - n_to_prune(out * i1, sparsity) if count == "cumulative"
         else n_to_prune(out * B, sparsity))
    if not lowest:
        score = -score
    if per_row:
        return prune_lowest_count(score, min(B, -(-k // out)), per_row=True)
    if ties == "last":  # flip the row-major order so that the larger index is pruned first
        return prune_lowest_count(score.flatten().flip(0).unsqueeze(0), k).flatten().flip(0).view(out, B)
    return prune_lowest_count(score, k)


@mutant("q07_4", "magnitude only: w^2 without the division by d^2")
def mask_magnitude(W1, U1, sparsity, i1):
    return _block_mask(W1, U1, sparsity, i1, power=None)


@mutant("q07_4", "divides by d instead of d^2")
def mask_div_d(W1, U1, sparsity, i1):
    return _block_mask(W1, U1, sparsity, i1, power=1)


@mutant("q07_4", "multiplies by d^2 (the Hessian's diagonal, not its inverse's)")
def mask_mul_d2(W1, U1, sparsity, i1):
    return _block_mask(W1, U1, sparsity, i1, power=-2)


@mutant("q07_4", "rounds each block's count on its own (the layer total drifts)")
def mask_block_count(W1, U1, sparsity, i1):
    return _block_mask(W1, U1, sparsity, i1, count="block")


@mutant("q07_4", "ties broken towards the larger index")
def mask_ties_last(W1, U1, sparsity, i1):
    return _block_mask(W1, U1, sparsity, i1, ties="last")


@mutant("q07_4", "compares within each row instead of over the whole block")
def mask_per_row(W1, U1, sparsity, i1):
    return _block_mask(W1, U1, sparsity, i1, per_row=True)


@mutant("q07_4", "prunes the highest saliencies")
def mask_highest(W1, U1, sparsity, i1):
    return _block_mask(W1, U1, sparsity, i1, lowest=False)
