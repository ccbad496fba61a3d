"""Per-layer ranks from each layer's singular-value energy, for sweeps (notebook 17, claim C13).

``layer_factors`` computes every layer's full-rank balanced SVD factors once; ``truncate_by_energy`` then
gives any energy threshold in one pass (the rank-r split is the first r rows / columns of the factors), so a
sweep over thresholds costs one SVD per layer.  The rank rule is ``svd.rank_from_energy``; a layer whose rank
would not save parameters (above ``svd.breakeven_rank``) stays dense.
"""
from __future__ import annotations

import torch
from torch import nn

from ..models import block_linears, decoder_blocks, get_weight, set_weight
from .svd import breakeven_rank, lowrank_params, rank_from_energy, svd_split

__all__ = ["layer_factors", "truncate_by_energy"]


@torch.no_grad()
def layer_factors(model: nn.Module, block_stride: int = 1) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Full-rank balanced SVD factors ``(A (k, in), B (out, k))`` of the linears of every ``block_stride``-th
    decoder block, keyed ``"{block}.{name}"``; truncating them to r rows/columns is the rank-r split, and the
    singular values are the squared row norms of A (A A^T = diag(s))."""
    if block_stride < 1:
        raise ValueError(f"block_stride={block_stride} must be >= 1")
    out = {}
    for i, block in enumerate(decoder_blocks(model)):
        if i % block_stride:
            continue
        for name, lin in block_linears(block).items():
            w = get_weight(lin)  # (out, in)
            out[f"{i}.{name}"] = svd_split(w, min(w.shape))
    return out


@torch.no_grad()
def truncate_by_energy(model: nn.Module, factors: dict[str, tuple[torch.Tensor, torch.Tensor]],
                       energy: float) -> dict[str, int]:
    """Replace each factored layer's weight by its rank-r SVD with r = ``rank_from_energy(s, energy)``; layers
    whose r would not save parameters (r > breakeven) stay dense.  In place.

    Returns ``params_dense`` and ``params_kept`` over the factored layers (kept counts r (in + out) for a
    factorised layer, as stored as two thin matrices) and ``layers_factorised``.
    """
    blocks = decoder_blocks(model)
    dense = kept = n_fact = 0
    for key, (A, B) in factors.items():
        i, name = key.split(".", 1)
        lin = block_linears(blocks[int(i)])[name]
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
