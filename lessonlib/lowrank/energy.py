"""Per-layer ranks from each layer's singular-value energy, for sweeps (notebook 17, claim C13).

``layer_factors`` computes every layer's full-rank balanced SVD factors once; ``truncate_by_energy`` then
gives any energy threshold in one pass (the rank-r split is the first r rows / columns of the factors), so a
sweep over thresholds costs one SVD per layer.  The rank rule is ``svd.rank_from_energy``; a layer whose rank
would not save parameters (above ``svd.breakeven_rank``) stays dense.  Layers are keyed by their fully
qualified module name (``model.named_modules()``), as ``compress_``'s results are.
"""
from __future__ import annotations

import torch
from torch import nn

from ..calib import ModuleNames
from ..checks import positive_int, short
from ..models import block_linears, decoder_blocks, get_weight, linear_modules, set_weight
from ..technique import FilterFn
from .svd import breakeven_rank, lowrank_params, rank_from_energy, svd_split

__all__ = ["layer_factors", "truncate_by_energy"]


@torch.no_grad()
def layer_factors(model: nn.Module, block_stride: int = 1,
                  filter_fn: FilterFn | None = None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Full-rank balanced SVD factors ``(A (k, in), B (out, k))`` of the linears of every ``block_stride``-th
    decoder block (``filter_fn(module, fqn)`` selects further), keyed by full module name (e.g.
    ``"model.layers.0.mlp.up_proj"``); truncating them to r rows/columns is the rank-r split, and the
    singular values are the squared row norms of A (A A^T = diag(s))."""
    positive_int("block_stride", block_stride)
    if filter_fn is not None and not callable(filter_fn):
        raise TypeError(f"filter_fn={short(filter_fn)} must be callable as filter_fn(module, fqn) -> bool")
    fqn = ModuleNames(model)
    out = {}
    for i, block in enumerate(decoder_blocks(model)):
        if i % block_stride:
            continue
        for lin in block_linears(block).values():
            full = fqn[id(lin)]
            if filter_fn is not None and not filter_fn(lin, full):
                continue
            w = get_weight(lin)  # (out, in)
            out[full] = svd_split(w, min(w.shape))
    return out


@torch.no_grad()
def truncate_by_energy(model: nn.Module, factors: dict[str, tuple[torch.Tensor, torch.Tensor]],
                       energy: float) -> dict[str, int]:
    """Replace each factored layer's weight by its rank-r SVD with r = ``rank_from_energy(s, energy)``; layers
    whose r would not save parameters (r > breakeven) stay dense.  In place.  ``factors`` are keyed by full
    module name (as ``layer_factors`` returns them); a name that is not a linear layer of ``model``'s blocks
    is a ``ValueError``.

    Returns ``params_dense`` and ``params_kept`` over the factored layers (kept counts r (in + out) for a
    factorised layer, as stored as two thin matrices) and ``layers_factorised``.
    """
    lins = linear_modules(model)  # {fqn: linear} inside the blocks
    dense = kept = n_fact = 0
    for key, (A, B) in factors.items():
        if key not in lins:
            raise ValueError(f"factors key {short(key)} is not a linear layer in the model's blocks; keys are full "
                             f"module names such as {next(iter(lins), '(none)')!r}")
        lin = lins[key]
        out_f, in_f = get_weight(lin).shape
        if A.shape[1] != in_f or B.shape[0] != out_f:
            raise ValueError(f"factors of {key} ({tuple(B.shape)} x {tuple(A.shape)}) do not fit the layer "
                             f"({out_f}, {in_f})")
        s = (A.double() ** 2).sum(1)  # (k,) singular values
        r = rank_from_energy(s, energy)
        dense += out_f * in_f
        if r > breakeven_rank(out_f, in_f):
            kept += out_f * in_f
            continue
        set_weight(lin, B[:, :r] @ A[:r])  # (out, r) @ (r, in)
        kept += lowrank_params(out_f, in_f, r)
        n_fact += 1
    return {"params_dense": dense, "params_kept": kept, "layers_factorised": n_fact}
