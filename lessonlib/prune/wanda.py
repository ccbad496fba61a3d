"""Wanda: pruning by Weights AND activations (Sun, Liu, Bair & Kolter 2023, "A Simple and Effective Pruning
Approach for Large Language Models").

Score (their Eq. 1): ``S_ij = |W_ij| * ||X_j||_2``, where ``X_j`` is input channel ``j`` over all calibration
tokens.  Weights are compared *within each output row* (per-output comparison group, their section 3) and
the lowest are set to zero; there is no weight update.  Because ranking within a row is unchanged by a
common factor, the mean of squares (``InputNormStats.sq_norms``) gives the same mask as the sum.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..calib import InputNormStats, ModuleNames, SequentialReport, run_sequential
from ..models import get_weight
from ..technique import FilterFn, LayerResult, TechniqueConfig, register
from .masks import NM, SparsityPattern, Unstructured, _check_matrix, apply_mask_, as_pattern, nm_mask, prune_lowest, \
    resolve_sparsity
from ..atomic import atomic

__all__ = ["WandaConfig", "wanda_mask", "wanda_prune_model"]


def _check_norms(weight: torch.Tensor, input_sq_norms: torch.Tensor) -> None:
    _check_matrix(weight)
    if not isinstance(input_sq_norms, torch.Tensor) or tuple(input_sq_norms.shape) != (weight.shape[1],):
        shape = tuple(input_sq_norms.shape) if isinstance(input_sq_norms, torch.Tensor) else type(input_sq_norms)
        raise ValueError(f"input_sq_norms must have shape ({weight.shape[1]},) = (in,), got {shape}")
    if not torch.isfinite(input_sq_norms).all() or (input_sq_norms < 0).any():
        raise ValueError("input_sq_norms must be finite and >= 0 (sums or means of squares)")


def wanda_mask(weight: torch.Tensor, input_sq_norms: torch.Tensor, sparsity: float, keep_n: int = 0,
               group_m: int = 0) -> torch.Tensor:
    """Wanda keep-mask for one linear layer (Sun et al. 2023, Eq. 1 and the per-output comparison group).

    weight: (out, in); input_sq_norms: (in,) per-input-channel sum or mean of x_j^2 over calibration tokens.
    Unstructured: in every output row prune exactly ``n_to_prune(in, sparsity)`` entries with the lowest
    ``|W_ij| * sqrt(input_sq_norms_j)`` (ties: lower column first).  N:M (``keep_n`` of every ``group_m``
    consecutive inputs, see ``lessonlib.prune.masks``): the highest ``keep_n`` scores of each group survive.
    Returns a bool mask (out, in), True = keep.
    """
    _check_norms(weight, input_sq_norms)
    resolve_sparsity(sparsity, keep_n, group_m, weight.shape[1])
    # BEGIN SOLUTION
    score = weight.abs() * input_sq_norms.to(weight.device, weight.dtype).sqrt().unsqueeze(0)  # (out, in)
    if keep_n:
        return nm_mask(score, keep_n, group_m)
    return prune_lowest(score, sparsity, per_row=True)
    # END SOLUTION


@atomic
def wanda_prune_model(model: nn.Module, calib_batches: torch.Tensor, sparsity: float, keep_n: int = 0,
                      group_m: int = 0, device: torch.device | str = "auto",
                      filter_fn: FilterFn | None = None) -> tuple[dict[str, torch.Tensor], SequentialReport]:
    """Wanda on every linear layer of the decoder blocks (or those ``filter_fn(module, fqn)`` selects), block by
    block (``lessonlib.calib.run_sequential``).

    As in the reference code each block is calibrated on the outputs of the already-pruned blocks before
    it.  Weights are changed in place.  Returns (fully qualified layer name -> keep-mask, timing report).
    """
    resolve_sparsity(sparsity, keep_n, group_m)
    masks: dict[str, torch.Tensor] = {}
    fqn = ModuleNames(model)

    def compress(i: int, block: nn.Module, stats: dict[str, InputNormStats]) -> None:
        for name, st in stats.items():
            lin = block.get_submodule(name)
            w = get_weight(lin)  # (out, in)
            mask = wanda_mask(w.float(), st.sq_norms(), sparsity, keep_n, group_m)
            apply_mask_(lin, mask)
            masks[fqn[id(lin)]] = mask.cpu()

    report = run_sequential(model, calib_batches, compress, stats=InputNormStats, device=device, filter_fn=filter_fn)
    return masks, report


@dataclass(frozen=True)
class WandaConfig(TechniqueConfig):
    """Wanda (Sun et al. 2023) for ``compress_``: ``pattern`` is ``Unstructured(s)``, ``NM(n, m)`` or a bare
    sparsity (unstructured); scores |W| ||X|| compared within each output row."""

    method: ClassVar[str] = "wanda"
    needs_calib: ClassVar[bool] = True
    pattern: SparsityPattern | float = Unstructured(0.5)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pattern", as_pattern(self.pattern))


@register(WandaConfig)
def _apply_wanda(model: nn.Module, cfg: WandaConfig, calib: torch.Tensor, filter_fn: FilterFn | None,
                 device: str) -> dict[str, LayerResult]:
    masks, _ = wanda_prune_model(model, calib, *cfg.pattern.args(), device=device, filter_fn=filter_fn)
    mods = dict(model.named_modules())
    return {n: LayerResult(weight=get_weight(mods[n]) if n in mods else None, mask=m) for n, m in masks.items()}
