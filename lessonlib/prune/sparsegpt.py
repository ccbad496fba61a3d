"""SparseGPT (Frantar & Alistarh 2023, "SparseGPT: Massive Language Models Can Be Accurately Pruned in
One-Shot"), Algorithm 1, with optional joint quantization.

For one linear layer with weight W (out, in) and Hessian H = 2/N X X^T (in, in) of the layer-wise loss
||W X - W' X||^2, columns are processed left to right.  With U the *upper* Cholesky factor of H^-1
(U^T U = H^-1, d_j = U_jj) the OBS update for eliminating column j from the remaining problem is the row
``U[j, j:]`` scaled by ``err = (w_j - q_j) / d_j`` (their section 3.3 / Algorithm 1 line "E_{:,j-i} <- ...").
The mask is chosen adaptively, once per block of ``block_size`` columns from the scores ``w^2 / d^2``
(the OBS saliency); N:M masks are chosen per row for each group of ``group_m`` columns just before the
group is processed.  Updates inside a block are applied at once; those to later blocks lazily in one
matrix product per block (Algorithm 1, last line).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar

import torch
from torch import nn

from ..calib import HessianStats, ModuleNames, SequentialReport, run_sequential
from ..hessian import damped_inverse, prepare_layer
from ..models import get_weight, set_weight
from ..technique import FilterFn, LayerResult, TechniqueConfig, register
from .masks import (SparsityPattern, Unstructured, _check_matrix, as_pattern, check_mask, check_nm, n_to_prune,
                    nm_mask, prune_lowest_count, resolve_sparsity)
from ..atomic import atomic

__all__ = ["SparseGPTConfig", "sparsegpt_block_mask", "sparsegpt_block_step", "sparsegpt_prune", "sparsegpt_prune_model"]

Quantizer = Callable[[torch.Tensor], torch.Tensor]


def sparsegpt_block_step(W1: torch.Tensor, U1: torch.Tensor, mask1: torch.Tensor, keep_n: int = 0,
                         group_m: int = 0, quant: Quantizer | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One block of SparseGPT Algorithm 1: prune (and quantize) its columns one by one with error feedback.

    W1: (out, B) the block's weights, already carrying the updates from earlier blocks; changed in place.
    U1: (B, B) the block's diagonal block of the upper Cholesky factor of H^-1.
    mask1: (out, B) bool keep-mask; under N:M (``keep_n > 0``) it is filled in place, per row, for each
    group of ``group_m`` columns from ``w^2 / d^2`` just before the group is processed.
    quant: optional ``q_col = quant(w_col)`` on a (out,) column (joint sparsification + quantization).
    Returns ``(Q1, Err1)``: the final block weights (out, B) and the scaled errors (out, B) used for the
    lazy update of later columns, ``W[:, i2:] -= Err1 @ U[i1:i2, i2:]``.
    """
    d = torch.diag(U1)  # (B,)
    # BEGIN SOLUTION
    Wt = W1.t().contiguous()  # (B, out): column i of W1 is row i here, contiguous (about 2x faster on CPU)
    Q1 = torch.zeros_like(Wt)  # (B, out), transposed back on return
    Err1 = torch.zeros_like(Wt)  # (B, out)
    for i in range(Wt.shape[0]):
        if keep_n and i % group_m == 0:  # N:M: choose this group's mask from the current weights
            score = Wt[i:i + group_m].t() ** 2 / d[i:i + group_m] ** 2  # (out, m)
            mask1[:, i:i + group_m] = nm_mask(score, keep_n, group_m)
        w = Wt[i]  # (out,) column i of the block
        q = w.masked_fill(~mask1[:, i], 0.0)
        if quant is not None:
            q = quant(q).masked_fill(~mask1[:, i], 0.0)  # pruned weights stay exactly zero
        err = (w - q) / d[i]  # (out,)
        Wt[i:] -= U1[i, i:].unsqueeze(1) * err.unsqueeze(0)  # OBS update of the remaining columns
        Q1[i] = q
        Err1[i] = err
    W1.copy_(Wt.t())
    return Q1.t().contiguous(), Err1.t().contiguous()
    # END SOLUTION


def sparsegpt_block_mask(W1: torch.Tensor, U1: torch.Tensor, sparsity: float, i1: int) -> torch.Tensor:
    """SparseGPT's adaptive mask for one block (Frantar & Alistarh 2023, arXiv:2301.00774, section 3.3).

    ``W1`` (out, B): the block's weights *now*, carrying every update from the earlier blocks; ``U1`` (B, B):
    the block's diagonal block of the upper Cholesky factor of H^-1; ``i1``: the block's first column in the
    layer.  Scores are the OBS saliencies of the sequential scheme, compared over the whole block (all rows
    together).  The block prunes ``n_to_prune(out * (i1 + B), sparsity) - n_to_prune(out * i1, sparsity)``
    entries, so that the blocks of a layer add up to exactly ``n_to_prune(out * in, sparsity)``; ties go to the
    smaller row-major index.  Returns the keep-mask (out, B), True = keep.
    """
    _check_matrix(W1, "W1")
    if U1.shape != (W1.shape[1], W1.shape[1]):
        raise ValueError(f"U1 must be (B, B) = {(W1.shape[1], W1.shape[1])} for W1 {tuple(W1.shape)}; got {tuple(U1.shape)}")
    if isinstance(i1, bool) or not isinstance(i1, int) or i1 < 0:
        raise ValueError(f"i1={i1!r} must be an int >= 0 (the block's first column)")
    # BEGIN SOLUTION
    out, B = W1.shape
    score = W1 ** 2 / torch.diag(U1).unsqueeze(0) ** 2  # (out, B) OBS saliency
    k = n_to_prune(out * (i1 + B), sparsity) - n_to_prune(out * i1, sparsity)  # cumulative: exact layer total
    return prune_lowest_count(score, k)  # (out, B), ties to the smaller row-major index
    # END SOLUTION


def sparsegpt_prune(weight: torch.Tensor, hessian: torch.Tensor, sparsity: float | None, keep_n: int = 0,
                    group_m: int = 0, block_size: int = 128, percdamp: float = 0.01, quant: Quantizer | None = None,
                    mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """SparseGPT for one layer (Frantar & Alistarh 2023, Algorithm 1): ``(new weight, keep-mask)``.

    weight: (out, in); hessian: (in, in) = 2/N X X^T.  Unstructured: in each block of ``block_size``
    columns the lowest ``w^2 / d^2`` over all rows of the block are pruned; the per-block counts add up to
    exactly ``n_to_prune(out * in, sparsity)`` (block b prunes ``n_to_prune(out * i2, s) - n_to_prune(out *
    i1, s)``).  N:M (``keep_n`` of every ``group_m``, see ``lessonlib.prune.masks``): per row and group;
    ``block_size`` must be a multiple of ``group_m``.  ``mask`` fixes the keep-mask instead (then pass
    ``sparsity=None``).  ``quant`` quantizes each kept column jointly (GPTQ-style), ``q = quant(w_col)``.
    The returned weight has the input's dtype; pruned entries are exactly zero.
    """
    _check_matrix(weight)
    W, H, _ = prepare_layer(weight, hessian)
    out, n = W.shape
    if mask is not None:
        check_mask(mask, weight)
        if sparsity is not None or keep_n or group_m:
            raise ValueError("pass either a fixed mask (with sparsity=None and no N:M) or sparsity/N:M, not both")
    elif sparsity is None:
        raise ValueError("sparsity=None needs a fixed mask=...")
    else:
        sparsity = resolve_sparsity(sparsity, keep_n, group_m, n)
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size={block_size!r} must be a positive int")
    if check_nm(keep_n, group_m) and block_size % group_m:
        raise ValueError(f"block_size={block_size} must be a multiple of group_m={group_m} so N:M groups do not "
                         "straddle blocks")
    U, _ = damped_inverse(H, percdamp, upper_cholesky=True)  # (in, in), upper triangular
    keep = torch.ones_like(W, dtype=torch.bool) if mask is None else mask.to(W.device).clone()  # (out, in)
    for i1 in range(0, n, block_size):
        i2 = min(i1 + block_size, n)
        W1 = W[:, i1:i2].clone()  # (out, B)
        U1 = U[i1:i2, i1:i2]  # (B, B)
        mask1 = keep[:, i1:i2].clone()  # (out, B)
        if mask is None and not keep_n:
            mask1 = sparsegpt_block_mask(W1, U1, sparsity, i1)  # chosen now, on the updated weights
        Q1, Err1 = sparsegpt_block_step(W1, U1, mask1, keep_n, group_m, quant)
        W[:, i1:i2] = Q1
        keep[:, i1:i2] = mask1
        W[:, i2:] -= Err1 @ U[i1:i2, i2:]  # lazy batched update: (out, B) @ (B, in - i2)
    if not torch.isfinite(W).all():
        raise ValueError("SparseGPT produced non-finite weights; the Hessian is badly conditioned (raise percdamp)")
    return W.to(weight.dtype), keep


@atomic
def sparsegpt_prune_model(model: nn.Module, calib_batches: torch.Tensor, sparsity: float, keep_n: int = 0,
                          group_m: int = 0, block_size: int = 128, percdamp: float = 0.01,
                          quant_factory: Callable[[str, torch.Tensor], Quantizer] | None = None,
                          device: torch.device | str = "auto",
                          filter_fn: FilterFn | None = None) -> tuple[dict[str, torch.Tensor], SequentialReport]:
    """SparseGPT on every linear layer of the decoder blocks (or those ``filter_fn(module, fqn)`` selects),
    block by block (``run_sequential``, HessianStats).

    ``quant_factory(fqn, weight)`` (optional) returns the column quantizer for one layer, e.g. fake-quant
    with scales fitted to that weight.  Weights change in place.  Returns (fully qualified layer name ->
    keep-mask, timing report).
    """
    resolve_sparsity(sparsity, keep_n, group_m)
    masks: dict[str, torch.Tensor] = {}
    fqn = ModuleNames(model)

    def compress(i: int, block: nn.Module, stats: dict[str, HessianStats]) -> None:
        for name, st in stats.items():
            lin = block.get_submodule(name)
            w = get_weight(lin)  # (out, in)
            quant = quant_factory(fqn[id(lin)], w) if quant_factory is not None else None
            new, mask = sparsegpt_prune(w, st.hessian(), sparsity, keep_n, group_m, block_size, percdamp, quant)
            set_weight(lin, new)
            masks[fqn[id(lin)]] = mask.cpu()

    report = run_sequential(model, calib_batches, compress, stats=HessianStats, device=device, filter_fn=filter_fn)
    return masks, report


@dataclass(frozen=True)
class SparseGPTConfig(TechniqueConfig):
    """SparseGPT (Frantar & Alistarh 2023) for ``compress_``: ``pattern`` (``Unstructured(s)``, ``NM(n, m)`` or
    a bare sparsity), lazy-block size, dampening fraction ``damp``; with ``quant`` (a ``QuantScheme``) the
    kept weights are also rounded column by column onto a grid fitted on each layer's starting weight
    (joint sparsification and quantization, their section 3.5); that grid is the layer's ``packed``."""

    method: ClassVar[str] = "sparsegpt"
    needs_calib: ClassVar[bool] = True
    pattern: SparsityPattern | float = Unstructured(0.5)
    block_size: int = 128
    damp: float = 0.01
    quant: object = None  # QuantScheme | None (prune does not import quant's types)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pattern", as_pattern(self.pattern))
        if isinstance(self.block_size, bool) or not isinstance(self.block_size, int) or self.block_size < 1:
            raise ValueError(f"SparseGPTConfig(block_size={self.block_size!r}) must be a positive int")
        if isinstance(self.damp, bool) or not isinstance(self.damp, (int, float)) or not 0 <= self.damp < 1:
            raise ValueError(f"SparseGPTConfig(damp={self.damp!r}) must be a number in [0, 1)")
        from ..quant.affine import QuantScheme
        if self.quant is not None and not isinstance(self.quant, QuantScheme):
            raise TypeError(f"SparseGPTConfig(quant={self.quant!r}) must be a QuantScheme or None")


@register(SparseGPTConfig)
def _apply_sparsegpt(model: nn.Module, cfg: SparseGPTConfig, calib: torch.Tensor, filter_fn: FilterFn | None,
                     device: str) -> dict[str, LayerResult]:
    grids: dict[str, tuple] = {}
    factory = None
    if cfg.quant is not None:
        from ..quant.affine import column_group_quantizer, compute_qparams

        def factory(name: str, w: torch.Tensor):
            grids[name] = compute_qparams(w, cfg.quant)  # (rows, G) each, fitted on the weight SparseGPT starts from
            return column_group_quantizer(w, cfg.quant)
    masks, _ = sparsegpt_prune_model(model, calib, *cfg.pattern.args(), block_size=cfg.block_size,
                                     percdamp=cfg.damp, quant_factory=factory, device=device, filter_fn=filter_fn)
    mods = dict(model.named_modules())
    return {n: LayerResult(weight=get_weight(mods[n]) if n in mods else None, mask=m, packed=grids.get(n))
            for n, m in masks.items()}
