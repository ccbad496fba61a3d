"""Wrong answers a student might hand in for notebook 08's exercise (each must score 0)."""
from __future__ import annotations

import torch

from lessonlib.prune.masks import is_nm_sparse
from . import mutant


def _groups(w):
    if w.shape[1] % 4 or not is_nm_sparse(w, 2, 4):
        raise ValueError("not 2:4")
    return w.reshape(w.shape[0], w.shape[1] // 4, 4)


def _slots(g):
    """The right slots (nonzeros first, then the leftmost zeros, increasing): only the packing goes wrong."""
    return torch.argsort((g == 0).to(torch.int8), dim=-1, stable=True)[..., :2].sort(-1).values


def _pack(g, pos):
    out = g.shape[0]
    return g.gather(-1, pos).reshape(out, -1), pos.reshape(out, -1)


@mutant("q08_1", "keeps the 2 largest |w| of each group, ordered by size (not by position)")
def by_size(weight):
    g = _groups(weight)
    pos = torch.argsort(g.abs(), dim=-1, descending=True, stable=True)[..., :2]
    return _pack(g, pos)


@mutant("q08_1", "pads groups with fewer than 2 nonzeros with the rightmost zeros")
def pad_right(weight):
    g = _groups(weight)
    slot = torch.arange(4).expand_as(g)
    key = torch.where(g != 0, slot, 10 - slot)  # nonzeros first by position, then zeros from the right
    pos = torch.argsort(key, dim=-1, stable=True)[..., :2].sort(-1).values
    return _pack(g, pos)


@mutant("q08_1", "stores column indices of the whole row instead of the slot inside the group")
def row_columns(weight):
    g = _groups(weight)
    pos = _slots(g)
    v, p = _pack(g, pos)
    base = torch.arange(g.shape[1]).repeat_interleave(2) * 4
    return v, p + base


@mutant("q08_1", "never checks the pattern: a group with 3 nonzeros silently loses one")
def no_check(weight):
    out, inp = weight.shape
    g = weight.reshape(out, inp // 4, 4)
    pos = _slots(g)
    return _pack(g, pos)


@mutant("q08_1", "returns float32 values whatever the weight's dtype")
def float_values(weight):
    g = _groups(weight)
    pos = _slots(g)
    v, p = _pack(g, pos)
    return v.float(), p


@mutant("q08_2", "concept answer: half")
def concept_q08_2_0():
    return 0.5


@mutant("q08_2", "concept answer: values only, indices forgotten")
def concept_q08_2_1():
    return 0.333


@mutant("q08_2", "concept answer: a guess at 'high sparsity'")
def concept_q08_2_2():
    return 0.9
