"""Plausible wrong answers to notebook 06's exercise (the N:M mask); every one must be caught."""
from __future__ import annotations

import torch

from . import mutant


def _groups(scores, prune_m):
    out, inp = scores.shape
    return scores.reshape(out, inp // prune_m, prune_m), out, inp


@mutant("q06_1", "reads N:M as N kept of M: prunes prune_m - prune_n per group (right for 2:4 only)")
def nm_keep_n(scores, prune_n, prune_m):
    g, out, inp = _groups(scores, prune_m)
    idx = torch.argsort(g, dim=-1, stable=True)[..., : prune_m - prune_n]
    mask = torch.ones_like(g, dtype=torch.bool).scatter_(-1, idx, False)
    return mask.reshape(out, inp)


@mutant("q06_1", "strided groups: columns j, j + in/m, j + 2 in/m, ... instead of m consecutive columns")
def nm_strided(scores, prune_n, prune_m):
    out, inp = scores.shape
    g = scores.reshape(out, prune_m, inp // prune_m)  # (out, m, in/m): the wrong axis holds the group
    idx = torch.argsort(g, dim=1, stable=True)[:, :prune_n, :]
    mask = torch.ones_like(g, dtype=torch.bool).scatter_(1, idx, False)
    return mask.reshape(out, inp)


@mutant("q06_1", "prunes the highest scores of each group instead of the lowest")
def nm_prunes_highest(scores, prune_n, prune_m):
    g, out, inp = _groups(scores, prune_m)
    idx = torch.argsort(g, dim=-1, descending=True, stable=True)[..., :prune_n]
    mask = torch.ones_like(g, dtype=torch.bool).scatter_(-1, idx, False)
    return mask.reshape(out, inp)


@mutant("q06_1", "per-row unstructured: the n/m lowest of the whole row, ignoring the groups")
def nm_per_row(scores, prune_n, prune_m):
    out, inp = scores.shape
    k = inp * prune_n // prune_m
    idx = torch.argsort(scores, dim=1, stable=True)[:, :k]
    return torch.ones_like(scores, dtype=torch.bool).scatter_(1, idx, False)


@mutant("q06_1", "ranks |scores| (the caller already passes magnitudes; negative scores then rank wrong)")
def nm_abs(scores, prune_n, prune_m):
    g, out, inp = _groups(scores.abs(), prune_m)
    idx = torch.argsort(g, dim=-1, stable=True)[..., :prune_n]
    mask = torch.ones_like(g, dtype=torch.bool).scatter_(-1, idx, False)
    return mask.reshape(out, inp)


@mutant("q06_1", "returns the pruned entries (True = pruned), the opposite convention")
def nm_inverted(scores, prune_n, prune_m):
    g, out, inp = _groups(scores, prune_m)
    idx = torch.argsort(g, dim=-1, stable=True)[..., :prune_n]
    mask = torch.zeros_like(g, dtype=torch.bool).scatter_(-1, idx, True)
    return mask.reshape(out, inp)


@mutant("q06_1", "returns a float 0/1 mask instead of a bool one")
def nm_float(scores, prune_n, prune_m):
    g, out, inp = _groups(scores, prune_m)
    idx = torch.argsort(g, dim=-1, stable=True)[..., :prune_n]
    mask = torch.ones_like(g).scatter_(-1, idx, 0.0)
    return mask.reshape(out, inp)
