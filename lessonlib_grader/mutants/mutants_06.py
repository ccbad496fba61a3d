"""Plausible wrong answers to notebook 06's exercise (the N:M mask); every one must be caught."""
from __future__ import annotations

import torch

from . import mutant


def _groups(scores, group_m):
    out, inp = scores.shape
    return scores.reshape(out, inp // group_m, group_m), out, inp


@mutant("q06_1", "reads N:M as N pruned of M (the Wanda/SparseGPT code's prune_n): prunes keep_n per group "
                 "(right for 2:4 only)")
def nm_prune_n(scores, keep_n, group_m):
    g, out, inp = _groups(scores, group_m)
    idx = torch.argsort(g, dim=-1, stable=True)[..., :keep_n]
    mask = torch.ones_like(g, dtype=torch.bool).scatter_(-1, idx, False)
    return mask.reshape(out, inp)


@mutant("q06_1", "strided groups: columns j, j + in/m, j + 2 in/m, ... instead of m consecutive columns")
def nm_strided(scores, keep_n, group_m):
    out, inp = scores.shape
    g = scores.reshape(out, group_m, inp // group_m)  # (out, m, in/m): the wrong axis holds the group
    idx = torch.argsort(g, dim=1, stable=True)[:, :group_m - keep_n, :]
    mask = torch.ones_like(g, dtype=torch.bool).scatter_(1, idx, False)
    return mask.reshape(out, inp)


@mutant("q06_1", "prunes the highest scores of each group instead of the lowest")
def nm_prunes_highest(scores, keep_n, group_m):
    g, out, inp = _groups(scores, group_m)
    idx = torch.argsort(g, dim=-1, descending=True, stable=True)[..., :group_m - keep_n]
    mask = torch.ones_like(g, dtype=torch.bool).scatter_(-1, idx, False)
    return mask.reshape(out, inp)


@mutant("q06_1", "per-row unstructured: the n/m lowest of the whole row, ignoring the groups")
def nm_per_row(scores, keep_n, group_m):
    out, inp = scores.shape
    k = inp * (group_m - keep_n) // group_m
    idx = torch.argsort(scores, dim=1, stable=True)[:, :k]
    return torch.ones_like(scores, dtype=torch.bool).scatter_(1, idx, False)


@mutant("q06_1", "ranks |scores| (the caller already passes magnitudes; negative scores then rank wrong)")
def nm_abs(scores, keep_n, group_m):
    g, out, inp = _groups(scores.abs(), group_m)
    idx = torch.argsort(g, dim=-1, stable=True)[..., :group_m - keep_n]
    mask = torch.ones_like(g, dtype=torch.bool).scatter_(-1, idx, False)
    return mask.reshape(out, inp)


@mutant("q06_1", "returns the pruned entries (True = pruned), the opposite convention")
def nm_inverted(scores, keep_n, group_m):
    g, out, inp = _groups(scores, group_m)
    idx = torch.argsort(g, dim=-1, stable=True)[..., :group_m - keep_n]
    mask = torch.zeros_like(g, dtype=torch.bool).scatter_(-1, idx, True)
    return mask.reshape(out, inp)


@mutant("q06_1", "returns a float 0/1 mask instead of a bool one")
def nm_float(scores, keep_n, group_m):
    g, out, inp = _groups(scores, group_m)
    idx = torch.argsort(g, dim=-1, stable=True)[..., :group_m - keep_n]
    mask = torch.ones_like(g).scatter_(-1, idx, 0.0)
    return mask.reshape(out, inp)


@mutant("q06_2", "concept answer: reads 3:4 as 3 pruned of 4")
def concept_q06_2_0():
    return 0.75


@mutant("q06_2", "concept answer: 2:4's sparsity")
def concept_q06_2_1():
    return 0.5


@mutant("q06_2", "concept answer: the ratio 3/1")
def concept_q06_2_2():
    return 3.0
