"""Low-rank factorisation of linear layers by truncated SVD, plain and activation-aware.

* Plain truncated SVD (Eckart & Young 1936; Denton et al. 2014 for network layers): W (out, in) ~ B A with
  B = U_r sqrt(S_r) (out, r) and A = sqrt(S_r) V_r^T (r, in) is the best rank-r approximation in Frobenius
  norm.  One ``Linear(in, out)`` becomes ``Linear(in, r) -> Linear(r, out)``: r (in + out) parameters instead
  of in * out, smaller only when r < in * out / (in + out).
* Rank per layer: the smallest r keeping a fraction of the spectral energy sum S_i^2 (``rank_from_energy``),
  or the knee of the singular-value curve (``rank_from_knee``, the Kneedle idea of Satopaa et al. 2011: the
  point farthest below the chord of the normalised curve).
* Activation-aware (SVD-LLM, Wang et al. 2024, section 3.1 "truncation-aware data whitening"): the error that
  matters is on the layer's inputs X (N, in), ||(W - W') X^T||_F.  With the Cholesky factor L of X^T X
  (X^T X = L L^T), ||M X^T||_F = ||M L||_F, so truncating the SVD of W L and mapping back with L^{-1} is
  optimal for the data: W' = U_r S_r V_r^T L^{-1}.  ASVD (Yuan et al. 2023) uses the diagonal scaling
  S = diag(mean |x|)^alpha instead of L.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar

import torch
from torch import nn

from ..calib import ModuleNames
from ..models import block_linears, decoder_blocks, get_weight, replace_submodule
from ..atomic import atomic
from ..checks import finite, fraction, positive_int, short
from ..hessian import damped_cholesky
from ..technique import FilterFn, LayerResult, TechniqueConfig, register

__all__ = ["SVDConfig", "svd_split", "factorize_linear", "low_rank_linear", "rank_from_energy", "rank_from_knee",
           "whitened_svd_split", "asvd_split", "lowrank_params", "breakeven_rank", "lowrank_model",
           "cholesky_damped"]


def _check_rank(w: torch.Tensor, rank: int) -> None:
    if w.dim() != 2:
        raise ValueError(f"weight must be 2-D (out, in), got shape {tuple(w.shape)}")
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= min(w.shape):
        raise ValueError(f"rank={rank!r} is outside 1..{min(w.shape)} = min(out, in) for a weight {tuple(w.shape)}")
    if not torch.isfinite(w).all():
        raise ValueError("weight contains NaN or inf")


def svd_split(w: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Best rank-``rank`` factorisation W (out, in) ~ B @ A: ``(A (r, in), B (out, r))`` (Eckart-Young).

    The singular values are split evenly, A = sqrt(S_r) V_r^T and B = U_r sqrt(S_r), so both factors have
    the same scale.  Computed in float64, returned in ``w``'s dtype.
    """
    _check_rank(w, rank)
    # BEGIN SOLUTION
    U, S, Vh = torch.linalg.svd(w.double(), full_matrices=False)  # (out, k), (k,), (k, in)
    root = S[:rank].sqrt()  # (r,)
    A = root[:, None] * Vh[:rank]  # (r, in)
    B = U[:, :rank] * root[None, :]  # (out, r)
    # END SOLUTION
    return A.to(w.dtype), B.to(w.dtype)


def low_rank_linear(A: torch.Tensor, B: torch.Tensor, bias: torch.Tensor | None = None) -> nn.Sequential:
    """``Linear(in, r, bias=False) -> Linear(r, out)`` computing x A^T B^T + bias. A (r, in), B (out, r)."""
    if A.dim() != 2 or B.dim() != 2 or A.shape[0] != B.shape[1]:
        raise ValueError(f"A {tuple(A.shape)} and B {tuple(B.shape)} are not (r, in) and (out, r)")
    first = nn.Linear(A.shape[1], A.shape[0], bias=False, device=A.device, dtype=A.dtype)
    second = nn.Linear(B.shape[1], B.shape[0], bias=bias is not None, device=B.device, dtype=B.dtype)
    with torch.no_grad():
        first.weight.copy_(A)
        second.weight.copy_(B)
        if bias is not None:
            second.bias.copy_(bias)
    return nn.Sequential(first, second)


def factorize_linear(linear: nn.Module, rank: int, xtx: torch.Tensor | None = None) -> nn.Sequential:
    """Replace-ready two-layer version of ``linear`` (``nn.Linear`` or GPT-2 ``Conv1D``) at ``rank``.

    With ``xtx`` (in, in) (e.g. a calibration Hessian, any positive multiple of X^T X) the SVD-LLM whitened
    split is used, otherwise the plain one.
    """
    w = get_weight(linear)  # (out, in)
    A, B = svd_split(w, rank) if xtx is None else whitened_svd_split(w, xtx, rank)
    bias = getattr(linear, "bias", None)
    return low_rank_linear(A, B, None if bias is None else bias.detach())


def rank_from_energy(s: torch.Tensor, energy: float) -> int:
    """Smallest r with sum_{i<r} s_i^2 >= ``energy`` * sum s_i^2 (s sorted descending, as from SVD)."""
    fraction("energy", energy, lo_open=True, hi_open=False, where="rank_from_energy")
    if not isinstance(s, torch.Tensor):
        raise TypeError(f"singular values must be a tensor, got {short(s)}")
    if s.dim() == 1 and s.numel():
        finite("singular values", s, where="rank_from_energy")
    if s.dim() != 1 or s.numel() == 0 or (s < 0).any():
        raise ValueError("singular values must be a non-empty 1-D tensor of non-negative values")
    e = s.double() ** 2
    total = e.sum()
    if total == 0:
        return 1
    frac = torch.cumsum(e, 0) / total  # (k,)
    return int(min(s.numel(), int(torch.searchsorted(frac, torch.tensor(energy - 1e-12, dtype=frac.dtype))) + 1))


def rank_from_knee(s: torch.Tensor, log: bool = False) -> int:
    """Rank at the knee of the singular-value curve: the number of values before the point farthest below
    the chord from the first to the last normalised value (Kneedle).  ``log``: use log(s) (smooth decays).

    Example: ``[10, 9, 8, 1, 0.9, 0.8, 0.7] -> 3``.
    """
    if s.dim() != 1 or s.numel() == 0 or (s < 0).any():
        raise ValueError("singular values must be a non-empty 1-D tensor of non-negative values")
    if s.numel() < 3:
        return s.numel()
    y = s.double().clamp_min(1e-30).log() if log else s.double()
    span = y[0] - y[-1]
    if span <= 0:
        return s.numel()  # flat spectrum: no knee, keep everything
    x = torch.linspace(0, 1, s.numel(), dtype=torch.float64)
    yn = (y - y[-1]) / span  # 1 -> 0
    gap = (1 - x) - yn  # distance below the chord y = 1 - x
    return max(1, int(torch.argmax(gap)))


def cholesky_damped(xtx: torch.Tensor, damp: float = 1e-6, max_tries: int = 8) -> torch.Tensor:
    """Lower Cholesky factor (float64) of ``xtx + lambda I``, lambda = ``damp`` * mean(diag): the damped
    factorisation of ``lessonlib.hessian.damped_cholesky`` (raised x10 with a warning until it succeeds)."""
    if xtx.dim() != 2 or xtx.shape[0] != xtx.shape[1]:
        raise ValueError(f"xtx must be square (in, in), got {tuple(xtx.shape)}")
    if not torch.isfinite(xtx).all():
        raise ValueError("xtx contains NaN or inf")
    return damped_cholesky(xtx.double(), damp, max_tries, scale_floor=1e-12, what="X^T X")[0]


def whitened_svd_split(w: torch.Tensor, xtx: torch.Tensor, rank: int,
                       damp: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """SVD-LLM truncation-aware whitening: minimise ||(W - B A) X^T||_F given X^T X (in, in).

    SVD(W L) = U S V^T with X^T X = L L^T, then A = sqrt(S_r) V_r^T L^{-1} (r, in), B = U_r sqrt(S_r) (out, r).
    """
    _check_rank(w, rank)
    if xtx.shape != (w.shape[1], w.shape[1]):
        raise ValueError(f"xtx of shape {tuple(xtx.shape)} does not match in_features={w.shape[1]}")
    L = cholesky_damped(xtx, damp)  # (in, in) lower
    A_w, B = svd_split(w.double() @ L, rank)  # (r, in), (out, r): factors of W L
    A = torch.linalg.solve_triangular(L, A_w, upper=False, left=False)  # A_w L^{-1}, (r, in)
    return A.to(w.dtype), B.to(w.dtype)


def asvd_split(w: torch.Tensor, x_absmean: torch.Tensor, rank: int,
               alpha: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """ASVD: scale input channels by s = mean|x|^alpha before the SVD, undo it on A. x_absmean: (in,)."""
    _check_rank(w, rank)
    if x_absmean.shape != (w.shape[1],) or (x_absmean < 0).any():
        raise ValueError(f"x_absmean must be non-negative of shape ({w.shape[1]},), got {tuple(x_absmean.shape)}")
    s = x_absmean.double().clamp_min(1e-8) ** alpha  # (in,)
    A_s, B = svd_split(w.double() * s[None, :], rank)  # factors of W diag(s)
    return (A_s / s[None, :]).to(w.dtype), B.to(w.dtype)


def lowrank_params(out_features: int, in_features: int, rank: int, bias: bool = False) -> int:
    """Parameters of the factorised layer: r (in + out) (+ out for the bias)."""
    if min(out_features, in_features, rank) < 1:
        raise ValueError("out_features, in_features and rank must be >= 1")
    return rank * (in_features + out_features) + (out_features if bias else 0)


def breakeven_rank(out_features: int, in_features: int) -> int:
    """Largest rank whose factorisation has fewer weights than the dense layer: r (in + out) < in * out."""
    return max(0, (out_features * in_features - 1) // (out_features + in_features))


@atomic
def lowrank_model(model: nn.Module, energy: float | None = 0.9, rank_fn: Callable[[torch.Tensor], int] | None = None,
                  calib: torch.Tensor | None = None,
                  filter_fn: FilterFn | None = None) -> dict[str, dict[str, int]]:
    """Factorise every decoder-block linear layer whose chosen rank actually saves parameters.

    The rank comes from ``rank_fn(singular values)`` or else ``rank_from_energy(s, energy)``; with ``calib``
    (LongTensor (n, T) of token ids) the spectrum and split are the whitened ones (SVD-LLM), computed
    block by block on compressed-model inputs through ``lessonlib.calib.run_sequential``.  Returns per layer
    ``{"rank", "params_before", "params_after"}`` (after == before and rank == -1 when skipped as not smaller),
    by fully qualified layer name; ``filter_fn(module, fqn)`` selects layers (default: all of them).
    """
    if rank_fn is None and energy is None:
        raise ValueError("give energy= or rank_fn=")
    from ..layout import require
    require(model, "svd")  # encoders, MoE expert tensors: refused, never skipped silently
    pick = rank_fn or (lambda s: rank_from_energy(s, energy))
    report: dict[str, dict[str, int]] = {}
    fqn = ModuleNames(model)

    def compress(i: int, block: nn.Module, stats: dict) -> None:
        for name, lin in block_linears(block).items():
            full = fqn[id(lin)]
            if filter_fn is not None and not filter_fn(lin, full):
                continue
            w = get_weight(lin)  # (out, in)
            xtx = stats[name].hessian() if name in stats else None
            m = w.double() if xtx is None else w.double() @ cholesky_damped(xtx)
            r = int(pick(torch.linalg.svdvals(m)))
            out_f, in_f = w.shape
            has_bias = getattr(lin, "bias", None) is not None
            before = out_f * in_f + (out_f if has_bias else 0)
            if r > breakeven_rank(out_f, in_f):
                report[full] = {"rank": -1, "params_before": before, "params_after": before}
                continue
            replace_submodule(block, name, factorize_linear(lin, r, xtx))
            report[full] = {"rank": r, "params_before": before,
                                     "params_after": lowrank_params(out_f, in_f, r, has_bias)}

    if calib is None:
        with torch.no_grad():
            for i, block in enumerate(decoder_blocks(model)):
                compress(i, block, {})
    else:
        from ..calib import HessianStats, run_sequential

        run_sequential(model, calib, compress, stats=HessianStats, filter_fn=filter_fn)
    return report


@dataclass(frozen=True)
class SVDConfig(TechniqueConfig):
    """Truncated SVD of each layer for ``compress_``: the rank keeps the fraction ``energy`` of the spectral
    energy, or is the fixed ``rank`` (give one of them); ``whitened`` uses SVD-LLM's data whitening (needs
    calibration batches).  A layer whose rank would not save parameters is left as it is."""

    method: ClassVar[str] = "svd"
    energy: float | None = None
    rank: int | None = None
    whitened: bool = False

    def __post_init__(self) -> None:
        if (self.energy is None) == (self.rank is None):
            raise ValueError(f"SVDConfig needs exactly one of energy= or rank= (got energy={self.energy!r}, "
                             f"rank={self.rank!r})")
        if self.energy is not None:
            fraction("energy", self.energy, lo_open=True, hi_open=False)
        if self.rank is not None:
            positive_int("rank", self.rank)
        if not isinstance(self.whitened, bool):
            raise TypeError(f"SVDConfig(whitened={self.whitened!r}) must be a bool")

    def requires_calib(self) -> bool:
        return self.whitened


@register(SVDConfig)
def _apply_svd(model: nn.Module, cfg: SVDConfig, calib: torch.Tensor | None, filter_fn: FilterFn | None,
               device: str) -> dict[str, LayerResult]:
    rank_fn = None if cfg.rank is None else (lambda s: min(cfg.rank, s.numel()))
    rep = lowrank_model(model, energy=cfg.energy, rank_fn=rank_fn, calib=calib if cfg.whitened else None,
                        filter_fn=filter_fn)
    return {n: LayerResult(stats=dict(r)) for n, r in rep.items()}
