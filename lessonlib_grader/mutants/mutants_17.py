"""Wrong answers a student might hand in for notebook 17's exercise (each must score 0)."""
from __future__ import annotations

import torch

from . import mutant


def _svd(w):
    return torch.linalg.svd(w.double(), full_matrices=False)  # (out, k), (k,), (k, in)


@mutant("q17_1", "puts all of S into B (A = V_r^T, B = U_r S_r): right product, unbalanced factors")
def all_s_in_b(w, rank):
    U, S, Vh = _svd(w)
    return Vh[:rank].to(w.dtype), (U[:, :rank] * S[:rank]).to(w.dtype)


@mutant("q17_1", "scales both factors by S instead of sqrt(S) (the product carries S^2)")
def no_sqrt(w, rank):
    U, S, Vh = _svd(w)
    return (S[:rank, None] * Vh[:rank]).to(w.dtype), (U[:, :rank] * S[:rank]).to(w.dtype)


@mutant("q17_1", "keeps the r smallest singular values (takes the last r)")
def smallest(w, rank):
    U, S, Vh = _svd(w)
    root = S[-rank:].sqrt()
    return (root[:, None] * Vh[-rank:]).to(w.dtype), (U[:, -rank:] * root).to(w.dtype)


@mutant("q17_1", "slices the columns of Vh instead of its rows (Vh[:, :r].T instead of Vh[:r])")
def vh_columns(w, rank):
    U, S, Vh = _svd(w)
    root = S[:rank].sqrt()
    return (root[:, None] * Vh[:, :rank].T).to(w.dtype), (U[:, :rank] * root).to(w.dtype)


@mutant("q17_1", "returns float64 factors for a float32 weight (forgets to cast back)")
def no_cast(w, rank):
    U, S, Vh = _svd(w)
    root = S[:rank].sqrt()
    return root[:, None] * Vh[:rank], U[:, :rank] * root


@mutant("q17_1", "returns (B, A) instead of (A, B)")
def swapped(w, rank):
    U, S, Vh = _svd(w)
    root = S[:rank].sqrt()
    return (U[:, :rank] * root).to(w.dtype), (root[:, None] * Vh[:rank]).to(w.dtype)


@mutant('q17_2', 'rounds the break-even rank up')
def concept_q17_2_0():
    return 419


@mutant('q17_2', 'takes half the smaller width, as for a square matrix')
def concept_q17_2_1():
    return 288


@mutant('q17_2', 'takes the smaller width (full rank)')
def concept_q17_2_2():
    return 576
