"""Optimal Brain Surgeon (Hassibi & Stork 1993) for one linear layer: the exact, slow reference.

The layer-wise loss ``||W X - W' X||^2`` splits into independent rows, each with the same Hessian H
(in, in).  For one row w, OBS removes one weight at a time:

* saliency (their Eq. 5): ``L_q = w_q^2 / (2 [H^-1]_qq)``; greedy OBS removes the q with the lowest,
* compensating update of all remaining weights (Eq. 5): ``delta = -(w_q / [H^-1]_qq) H^-1[:, q]``
  (which sets ``w_q`` to exactly zero),
* downdate of the inverse Hessian to the remaining weights (Gauss-Jordan elimination of q):
  ``H^-1 <- H^-1 - H^-1[:, q] H^-1[q, :] / [H^-1]_qq``.

This costs O(k in^2) per row, so it is only for small layers.  With a fixed set of pruned weights the
result does not depend on the removal order: it is the least-squares optimum for that mask.  SparseGPT is
the same update with weights that were *kept* frozen once passed; when every pruned weight of a row comes
before all its kept ones in SparseGPT's column order, the two agree exactly.
"""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from ..config import progress_disabled
from .masks import _check_matrix, check_mask, n_to_prune
from ..hessian import damped_inverse, prepare_layer

__all__ = ["obs_prune", "mask_to_order"]


def mask_to_order(mask: torch.Tensor) -> torch.Tensor:
    """Pruned column indices of each row, ascending, as an (out, k) removal order; every row must prune k."""
    counts = (~mask).sum(1)  # (out,)
    if mask.dim() != 2 or (counts != counts[0]).any():
        raise ValueError("mask_to_order needs a 2-D mask that prunes the same number of weights in every row")
    k = int(counts[0])
    return torch.argsort((~mask).to(torch.int8), dim=1, descending=True, stable=True)[:, :k]  # (out, k)


@torch.no_grad()
def obs_prune(weight: torch.Tensor, hessian: torch.Tensor, sparsity: float | None = None, *,
              order: torch.Tensor | None = None, percdamp: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-wise OBS: ``(new weight, keep-mask)``.

    weight: (out, in); hessian: (in, in), damped and with dead inputs handled exactly as in SparseGPT.
    ``sparsity``: greedy OBS, removing ``n_to_prune(in, sparsity)`` weights per row, each time the one with
    the lowest ``w_q^2 / [H^-1]_qq`` (ties: lowest index).  ``order`` (out, k) long: remove exactly these
    columns, in this order (give one of the two).  All rows are processed together as a batch.
    """
    _check_matrix(weight)
    W, H, _ = prepare_layer(weight, hessian)
    out, n = W.shape
    if (sparsity is None) == (order is None):
        raise ValueError("give exactly one of sparsity= (greedy OBS) or order= (fixed removal order)")
    if order is not None:
        if order.dim() != 2 or order.shape[0] != out or order.dtype != torch.long:
            raise ValueError(f"order must be a (out={out}, k) long tensor, got {tuple(order.shape)} {order.dtype}")
        if ((order < 0) | (order >= n)).any() or any(len(set(r.tolist())) != len(r) for r in order):
            raise ValueError(f"order must hold distinct column indices in 0..{n - 1} in every row")
        k = order.shape[1]
    else:
        k = n_to_prune(n, sparsity)
    Hinv = damped_inverse(H, percdamp)[0].expand(out, n, n).clone()  # (out, in, in): one copy per row
    removed = torch.zeros_like(W, dtype=torch.bool)  # (out, in)
    rows = torch.arange(out, device=W.device)
    for t in tqdm(range(k), desc="OBS", disable=progress_disabled(), leave=False):
        diag = torch.diagonal(Hinv, dim1=1, dim2=2)  # (out, in)
        if order is None:
            q = (W ** 2 / diag).masked_fill(removed, float("inf")).argmin(dim=1)  # (out,)
        else:
            q = order[:, t].to(W.device)
        hq = Hinv[rows, :, q]  # (out, in) column q of each row's H^-1
        hqq = hq[rows, q]  # (out,)
        W -= (W[rows, q] / hqq).unsqueeze(1) * hq  # compensating update; W[:, q] -> 0
        Hinv -= hq.unsqueeze(2) * hq.unsqueeze(1) / hqq.view(-1, 1, 1)  # eliminate q (H^-1 symmetric)
        removed[rows, q] = True
        Hinv[rows, q, :] = 0.0  # exact zeros where rounding left ~1e-17: removed weights never move again
        Hinv[rows, :, q] = 0.0
        W.masked_fill_(removed, 0.0)
    if not torch.isfinite(W).all():
        raise ValueError("OBS produced non-finite weights; raise percdamp")
    return W.to(weight.dtype), check_mask(~removed, weight)
