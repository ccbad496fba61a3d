"""AWQ: activation-aware weight quantization by per-input-channel scaling and clipping.

Lin et al. 2023, "AWQ: Activation-aware Weight Quantization for LLM Compression and Acceleration".
Scaling input channel j of W up by s_j and its activation down by 1/s_j leaves W X unchanged but shrinks
the relative rounding error of salient weights (section 3.2, eq. 2-4).  The scale is
s = s_X^alpha with s_X = mean |x_j| over tokens (eq. 5), alpha found by a grid search on
||Q(W diag(s)) (diag(s)^-1 X) - W X|| (20 points, alpha = 0, 0.05, ..., 0.95, as in the reference code,
which also normalises s by sqrt(max s * min s)).  The reference then searches, per group, the clipping
range max|w| * (1 - i/20) for i < 10 that minimises that group's contribution to the output error.

Layer level only: the output error is measured on this layer's output (the reference measures the
enclosing module's output, e.g. the whole attention block for q/k/v).  ``AWQResult.weight`` is the
effective weight Q(W s) / s, a drop-in for the layer; to store the codes packed, 1/s must be folded into
the previous operation (norm or linear) and ``scaled_weight`` = Q(W s) kept: ``awq_fold.awq_fold_model``
does that for whole Llama blocks.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, ClassVar

import torch
from torch import nn

from ..calib import ModuleNames, InputSampleStats, run_sequential
from ..models import get_weight, set_weight
from .affine import QuantScheme, check_finite, fake_quant
from ..atomic import atomic
from ..technique import FilterFn, LayerResult, TechniqueConfig, register

__all__ = ["AWQConfig", "AWQResult", "awq_scales", "awq_search_clip", "awq_quantize", "awq_quantize_model"]


@dataclass
class AWQResult:
    """``weight`` Q(W s)/s (out, in) in the input dtype; ``scaled_weight`` Q(W s); ``scales`` s (in,);
    ``alpha``; ``clip`` (out, G) chosen max-value ratios or None; ``errors`` mean squared output errors
    on the sample for ``rtn``, ``scaled`` (after the alpha search) and ``final``."""

    weight: torch.Tensor
    scaled_weight: torch.Tensor
    scales: torch.Tensor
    alpha: float
    clip: torch.Tensor | None
    errors: dict[str, float] = field(default_factory=dict)


def awq_scales(act_mean_abs: torch.Tensor, alpha: float) -> torch.Tensor:
    """Per-input-channel scales s = s_X^alpha (AWQ eq. 5), clamped at 1e-4 and normalised so that
    max(s) * min(s) = 1.  ``act_mean_abs`` (in,) = mean |x_j| over calibration tokens."""
    if act_mean_abs.dim() != 1:
        raise ValueError(f"act_mean_abs must be 1-D (in,), got shape {tuple(act_mean_abs.shape)}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha} is outside [0, 1]")
    check_finite(act_mean_abs, "act_mean_abs")
    # BEGIN SOLUTION
    s = act_mean_abs.float().pow(alpha).clamp(min=1e-4)  # (in,)
    s = s / (s.max() * s.min()).sqrt()
    # END SOLUTION
    return s


def _output_error(w_hat: torch.Tensor, weight: torch.Tensor, x: torch.Tensor) -> float:
    return float(((x @ (w_hat - weight).T) ** 2).mean())  # (n, out) -> mean squared output error


def awq_search_clip(weight: torch.Tensor, x: torch.Tensor, scheme: QuantScheme, n_grid: int = 20,
                    max_shrink: float = 0.5) -> torch.Tensor:
    """Per-group clipping ratios (out, G) in {1, 1 - 1/n_grid, ...} (more than 1 - max_shrink) minimising
    each group's partial output error sum_n (sum_{k in g} (Q(w)_k - w_k) x_nk)^2."""
    if scheme.group_size <= 0:
        raise ValueError(f"the clip search works per group; got group_size={scheme.group_size}")
    out_f, n_in = weight.shape
    G, gs = scheme.n_groups(n_in), scheme.group_size
    xg = x.float().reshape(-1, G, gs)  # (n, G, g)
    wg = weight.float().reshape(out_f, G, gs)  # (out, G, g)
    ref = torch.einsum("ogk,ngk->ong", wg, xg)  # (out, n, G) partial outputs per group
    best_err = torch.full((out_f, G), float("inf"), device=weight.device)
    best = torch.ones(out_f, G, device=weight.device)
    for i in range(int(max_shrink * n_grid)):
        r = 1 - i / n_grid
        q = fake_quant(weight.float(), scheme, clip_ratio=r).reshape(out_f, G, gs)
        err = ((torch.einsum("ogk,ngk->ong", q, xg) - ref) ** 2).mean(dim=1)  # (out, G)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best = torch.where(better, torch.full_like(best, r), best)
    return best


def awq_quantize(weight: torch.Tensor, x: torch.Tensor | None = None, scheme: QuantScheme = QuantScheme(4, 64),
                 act_mean_abs: torch.Tensor | None = None, alpha: float | None = None, n_grid: int = 20,
                 clip: bool = True, max_shrink: float = 0.5, max_tokens: int = 4096,
                 clip_tokens: int = 512) -> AWQResult:
    """AWQ for one layer: ``weight`` (out, in), a sample of its inputs ``x`` (n, in).

    With only ``act_mean_abs`` (in,) and a fixed ``alpha`` no sample is needed (and no search, no clip).
    ``max_tokens`` evenly spaced rows of ``x`` are used for the alpha search, ``clip_tokens`` of those for
    the clip search (512 in the reference code).
    """
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-D (out, in), got shape {tuple(weight.shape)}")
    check_finite(weight)
    n_in = weight.shape[1]
    scheme.n_groups(n_in)  # raises early if the group size does not divide the row
    if x is None and (alpha is None or act_mean_abs is None):
        raise ValueError("give a sample x (n, in), or act_mean_abs (in,) together with a fixed alpha")
    if x is not None:
        x = x.reshape(-1, x.shape[-1]).float()
        if x.shape[1] != n_in or x.shape[0] == 0:
            raise ValueError(f"x of shape {tuple(x.shape)} does not fit a weight with {n_in} inputs")
        check_finite(x, "x")
        if x.shape[0] > max_tokens:
            x = x[torch.linspace(0, x.shape[0] - 1, max_tokens).long()]
    stat = act_mean_abs if act_mean_abs is not None else x.abs().mean(dim=0)  # (in,)
    if tuple(stat.shape) != (n_in,):
        raise ValueError(f"act_mean_abs must have shape ({n_in},), got {tuple(stat.shape)}")
    W = weight.float()  # (out, in)
    errors: dict[str, float] = {}
    if x is not None:
        errors["rtn"] = _output_error(fake_quant(W, scheme), W, x)
    if alpha is None:
        best = (float("inf"), 0.0)
        for i in range(n_grid):  # alpha = 0 gives s = 1, i.e. plain RTN, so AWQ never does worse on x
            a = i / n_grid
            s = awq_scales(stat, a)
            err = _output_error(fake_quant(W * s, scheme) / s, W, x)
            best = min(best, (err, a))
        errors["scaled"], alpha = best
    s = awq_scales(stat, alpha)  # (in,)
    ratios = None
    if clip and x is not None and scheme.group_size > 0:
        xc = x if x.shape[0] <= clip_tokens else x[torch.linspace(0, x.shape[0] - 1, clip_tokens).long()]
        ratios = awq_search_clip(W * s, xc / s, scheme, n_grid, max_shrink)  # (out, G)
    q_scaled = fake_quant(W * s, scheme, clip_ratio=1.0 if ratios is None else ratios)  # (out, in)
    w_eff = q_scaled / s
    if x is not None:
        errors["final"] = _output_error(w_eff, W, x)
    return AWQResult(w_eff.to(weight.dtype), q_scaled.to(weight.dtype), s, float(alpha), ratios, errors)


@atomic
def awq_quantize_model(model: nn.Module, calib_batches: torch.Tensor, scheme: QuantScheme = QuantScheme(4, 64),
                       n_grid: int = 20, clip: bool = True, max_tokens: int = 4096,
                       device: torch.device | str = "auto",
                       filter_fn: FilterFn | None = None) -> dict[str, AWQResult]:
    """AWQ on every decoder-block linear, block by block; writes the effective weights Q(W s)/s in place
    (fake quantization, one scale per layer; ``awq_fold.awq_fold_model`` shares and folds the scales so
    that the model can be packed).  ``filter_fn(module, fqn)`` selects layers (default: all of them)."""
    fqn = ModuleNames(model)  # also names MoE experts' per-expert views
    results: dict[str, AWQResult] = {}

    def compress(_i: int, block: nn.Module, stats: dict[str, InputSampleStats]) -> None:
        for name, st in stats.items():
            lin = block.get_submodule(name)
            r = awq_quantize(get_weight(lin), st.sample(), scheme, n_grid=n_grid, clip=clip, max_tokens=max_tokens)
            set_weight(lin, r.weight)
            results[fqn[id(lin)]] = r

    def sampler(n_in: int, dev: torch.device | str) -> InputSampleStats:
        return InputSampleStats(n_in, dev, max_rows=max_tokens)

    run_sequential(model, calib_batches, compress, stats=sampler, device=device, filter_fn=filter_fn)
    return results


@dataclass(frozen=True)
class AWQConfig(TechniqueConfig):
    """AWQ (Lin et al. 2023) for ``compress_``: grid ``scheme``, ``n_grid`` points of the alpha search,
    the per-group clipping search (``clip``), at most ``max_tokens`` input rows per layer."""

    method: ClassVar[str] = "awq"
    needs_calib: ClassVar[bool] = True
    scheme: QuantScheme = QuantScheme(4, 64)
    n_grid: int = 20
    clip: bool = True
    max_tokens: int = 4096

    def __post_init__(self) -> None:
        if not isinstance(self.scheme, QuantScheme):
            raise TypeError(f"AWQConfig(scheme={self.scheme!r}) must be a QuantScheme")
        for k in ("n_grid", "max_tokens"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"AWQConfig({k}={v!r}) must be a positive int")
        if not isinstance(self.clip, bool):
            raise TypeError(f"AWQConfig(clip={self.clip!r}) must be a bool")


@register(AWQConfig)
def _apply_awq(model: nn.Module, cfg: AWQConfig, calib: torch.Tensor, filter_fn: FilterFn | None,
               device: str) -> dict[str, LayerResult]:
    res = awq_quantize_model(model, calib, cfg.scheme, n_grid=cfg.n_grid, clip=cfg.clip, max_tokens=cfg.max_tokens,
                             device=device, filter_fn=filter_fn)
    return {n: LayerResult(weight=r.weight, packed=r) for n, r in res.items()}
