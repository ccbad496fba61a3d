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
