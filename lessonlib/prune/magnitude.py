"""Magnitude pruning: per matrix, per row, global, and gradual with the cubic schedule.

* One-shot magnitude pruning (Han et al. 2015, "Learning both Weights and Connections"): score |W_ij|,
  prune the lowest.  The comparison group is the whole matrix (``magnitude_mask``), each output row
  (``magnitude_row_mask``) or every linear layer of the decoder blocks at once with a single threshold
  (``global_magnitude_masks``).
* Gradual magnitude pruning (Zhu & Gupta 2017, "To prune, or not to prune", Eq. 1):
  ``s_t = s_f + (s_i - s_f) (1 - (t - t0) / (n dt))^3`` for ``t in {t0, t0 + dt, ..., t0 + n dt}``,
  pruning a little at every step and fine-tuning in between (``gradual_magnitude_prune``).

Masks are bool, True = keep; N:M and sparsity conventions are those of ``lessonlib.prune.masks``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar

import torch
from torch import nn

from ..experts import unrolled_model_experts
from ..models import get_weight
from ..technique import FilterFn, LayerResult, TechniqueConfig, register
from .masks import (SparsityPattern, Unstructured, apply_mask_, as_pattern, check_sparsity, model_linears, n_to_prune,
                    nm_mask, prune_lowest, register_mask, resolve_sparsity)
from ..atomic import atomic

__all__ = ["MagnitudeConfig", "magnitude_mask", "magnitude_row_mask", "global_magnitude_masks", "magnitude_prune_model",
           "cubic_sparsity", "gradual_magnitude_prune"]

_SCOPES = ("layer", "row", "global")


def magnitude_mask(weight: torch.Tensor, sparsity: float, keep_n: int = 0, group_m: int = 0) -> torch.Tensor:
    """Keep-mask pruning exactly ``n_to_prune(numel, sparsity)`` smallest-|W| entries of one matrix.

    weight: (out, in).  With ``keep_n, group_m`` the largest ``keep_n`` of every ``group_m`` consecutive
    input weights of each row are kept instead (``sparsity`` must then equal ``1 - keep_n / group_m``).
    Ties are broken by position (lower row-major index pruned first).
    """
    resolve_sparsity(sparsity, keep_n, group_m, weight.shape[-1])
    if keep_n:
        return nm_mask(weight.abs(), keep_n, group_m)
    return prune_lowest(weight.abs(), sparsity)  # (out, in)


def magnitude_row_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep-mask pruning exactly ``n_to_prune(in, sparsity)`` smallest-|W| entries in every output row."""
    return prune_lowest(weight.abs(), sparsity, per_row=True)  # (out, in)


def global_magnitude_masks(weights: dict[str, torch.Tensor], sparsity: float,
                           pinned: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """One threshold over several matrices: prune exactly ``n_to_prune(total, sparsity)`` smallest |W|.

    weights: name -> (out, in).  Ties at the threshold go to earlier matrices (dict order), then to lower
    row-major index.  ``pinned`` (name -> keep-mask) forces already-pruned entries to stay pruned (they
    count towards the total).  Returns name -> bool keep-mask.
    """
    if not weights:
        raise ValueError("global_magnitude_masks() needs at least one weight")
    check_sparsity(sparsity)
    scores = []
    for name, w in weights.items():
        s = w.detach().abs().float().reshape(-1)  # (numel,)
        if pinned is not None and name in pinned:
            s = s.masked_fill(~pinned[name].reshape(-1).to(s.device), -1.0)  # below every |W|
        scores.append(s.cpu())
    flat = torch.cat(scores)  # (total,)
    k = n_to_prune(flat.numel(), sparsity)
    prune = torch.zeros_like(flat, dtype=torch.bool)
    if k > 0:
        thr = torch.kthvalue(flat, k).values
        prune = flat < thr
        ties = torch.nonzero(flat == thr).flatten()[: k - int(prune.sum())]  # earliest ties first
        prune[ties] = True
    masks, start = {}, 0
    for name, w in weights.items():
        masks[name] = ~prune[start:start + w.numel()].reshape(w.shape).to(w.device)
        start += w.numel()
    return masks


@atomic
def magnitude_prune_model(model: nn.Module, sparsity: float, keep_n: int = 0, group_m: int = 0,
                          scope: str = "layer", filter_fn: FilterFn | None = None) -> dict[str, torch.Tensor]:
    """Magnitude-prune every linear layer of the transformer blocks (or those ``filter_fn(module, fqn)``
    selects) in place; returns fully qualified layer name -> keep-mask.

    scope: ``"layer"`` (each matrix on its own), ``"row"`` (each output row) or ``"global"`` (one
    threshold over all of them).  N:M (``keep_n, group_m``) is only defined per layer.
    """
    if scope not in _SCOPES:
        raise ValueError(f"scope={scope!r}; choose one of {_SCOPES}")
    if keep_n and scope != "layer":
        raise ValueError(f"N:M pruning is per matrix; use scope='layer', not {scope!r}")
    with unrolled_model_experts(model):  # MoE: every expert's slice too
        layers = {n: m for n, m in model_linears(model).items() if filter_fn is None or filter_fn(m, n)}
        if not layers:
            raise ValueError("magnitude_prune_model selected no linear layer; check filter_fn")
        return _magnitude_prune(layers, sparsity, keep_n, group_m, scope)


def _magnitude_prune(layers: dict[str, nn.Module], sparsity: float, keep_n: int, group_m: int,
                     scope: str) -> dict[str, torch.Tensor]:
    if scope == "global":
        masks = global_magnitude_masks({n: get_weight(m) for n, m in layers.items()}, sparsity)
    elif scope == "row":
        masks = {n: magnitude_row_mask(get_weight(m), sparsity) for n, m in layers.items()}
    else:
        masks = {n: magnitude_mask(get_weight(m), sparsity, keep_n, group_m) for n, m in layers.items()}
    for n, m in layers.items():
        apply_mask_(m, masks[n])
    return masks


@dataclass(frozen=True)
class MagnitudeConfig(TechniqueConfig):
    """Magnitude pruning (Han et al. 2015) for ``compress_``: ``pattern`` (``Unstructured(s)``, ``NM(n, m)`` or a
    bare sparsity) within the comparison group ``scope`` ("layer", "row" or "global"); no data needed."""

    method: ClassVar[str] = "magnitude"
    pattern: SparsityPattern | float = Unstructured(0.5)
    scope: str = "layer"

    def __post_init__(self) -> None:
        object.__setattr__(self, "pattern", as_pattern(self.pattern))
        if self.scope not in _SCOPES:
            raise ValueError(f"MagnitudeConfig(scope={self.scope!r}); choose one of {_SCOPES}")


@register(MagnitudeConfig)
def _apply_magnitude(model: nn.Module, cfg: MagnitudeConfig, calib: torch.Tensor | None, filter_fn: FilterFn | None,
                     device: str) -> dict[str, LayerResult]:
    masks = magnitude_prune_model(model, *cfg.pattern.args(), scope=cfg.scope, filter_fn=filter_fn)
    mods = dict(model.named_modules())
    return {n: LayerResult(weight=get_weight(mods[n]) if n in mods else None, mask=m) for n, m in masks.items()}


def cubic_sparsity(step: int, final_sparsity: float, initial_sparsity: float = 0.0, start_step: int = 0,
                   n_steps: int = 10, interval: int = 1) -> float:
    """Zhu & Gupta (2017) Eq. 1: ``s_t = s_f + (s_i - s_f) (1 - (t - t0) / (n dt))^3``.

    Before ``start_step`` (t0) it returns ``initial_sparsity``; after ``t0 + n_steps * interval`` it returns
    ``final_sparsity``.  Between pruning steps (t not on the grid) the last reached value holds.
    """
    s_i, s_f = check_sparsity(initial_sparsity), check_sparsity(final_sparsity)
    if s_i > s_f:
        raise ValueError(f"initial_sparsity={s_i} exceeds final_sparsity={s_f}")
    if n_steps < 1 or interval < 1:
        raise ValueError(f"n_steps={n_steps} and interval={interval} must both be >= 1")
    if step <= start_step:
        return s_i
    k = min((step - start_step) // interval, n_steps)  # pruning steps taken so far
    return s_f + (s_i - s_f) * (1.0 - k / n_steps) ** 3


def gradual_magnitude_prune(layers: dict[str, nn.Module], final_sparsity: float, n_steps: int,
                            finetune: Callable[[int, float], None] | None,
                            initial_sparsity: float = 0.0, scope: str = "layer") -> dict[str, torch.Tensor]:
    """Gradual magnitude pruning (Zhu & Gupta 2017): prune to ``s_k`` (cubic schedule), fine-tune, repeat.

    layers: name -> linear layer.  For ``k = 0 .. n_steps`` the weights are magnitude-pruned to
    ``cubic_sparsity(k, final_sparsity, initial_sparsity, 0, n_steps)`` (``scope`` ``"layer"`` or
    ``"global"``; weights pruned earlier stay pruned), the masks are registered (``register_mask``) and
    ``finetune(k, s_k)`` is called, so the user's training loop keeps the pruned weights at zero.  The last
    call is the recovery fine-tune.  Masks are removed at the end (pruned weights exactly zero).
    Returns name -> final keep-mask.
    """
    if scope not in ("layer", "global"):
        raise ValueError(f"scope={scope!r}; choose 'layer' or 'global'")
    if not layers:
        raise ValueError("gradual_magnitude_prune() needs at least one layer")
    masks: dict[str, torch.Tensor] = {n: torch.ones_like(get_weight(m), dtype=torch.bool) for n, m in layers.items()}
    for k in range(n_steps + 1):
        s = cubic_sparsity(k, final_sparsity, initial_sparsity, 0, n_steps)
        weights = {n: get_weight(m) for n, m in layers.items()}
        if scope == "global":
            masks = global_magnitude_masks(weights, s, pinned=masks)
        else:
            masks = {n: prune_lowest(w.abs().masked_fill(~masks[n], -1.0), s) for n, w in weights.items()}
        handles = [register_mask(layers[n], masks[n]) for n in layers]
        try:
            if finetune is not None:
                finetune(k, s)
        finally:
            for h in handles:
                h.remove()
    return masks
