"""Model-level W8A8 post-training quantization with optional SmoothQuant migration.

The layer-level pieces live in ``smoothquant.py`` (observers, ``smooth_scales`` = SmoothQuant eq. 4,
``W8A8Linear``).  This driver (Xiao et al. 2023, section 5 "SmoothQuant-O3": static per-tensor
activation scales from calibration, per-channel INT8 weights) walks the decoder blocks with
``lessonlib.calib.run_sequential``; for each block it

1. records every linear layer's input activations with an observer (``MinMaxObserver`` per channel, or
   ``PercentileObserver``, a robust per-channel percentile of |x|),
2. computes the per-channel smoothing factors s_j = max|X_j|^alpha / max|W_:,j|^(1-alpha) when
   ``alpha`` is given, and
3. swaps each linear layer for a ``W8A8Linear`` (weights W diag(s) on the per-channel INT8 grid,
   activations X / s fake-quantized to INT8 with the calibrated static scale, or dynamically).

Block i+1 is calibrated on the outputs of the already quantized block i.  ``lm_head`` stays float.

``calibrate_activations`` + ``apply_w8a8`` are the one-shot alternative: forward hooks record every block
linear's input range in one pass of the float model, and the same ranges can then build several variants
(with and without migration, different alpha) cheaply.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..calib import run_sequential
from ..models import block_linears, decoder_blocks, get_weight
from ..models import replace_submodule
from .smoothquant import MinMaxObserver, PercentileObserver, W8A8Linear, smooth_scales
from ..atomic import atomic

__all__ = ["ObserverStats", "W8A8Report", "w8a8_quantize_model", "layer_w8a8", "calibrate_activations", "apply_w8a8"]

OBSERVERS = ("minmax", "percentile")


class ObserverStats:
    """Adapter: a per-channel activation observer with the ``add(x)`` interface of ``lessonlib.calib`` stats."""

    def __init__(self, n_in: int, device: torch.device | str = "cpu", observer: str = "minmax",
                 percentile: float = 99.9, max_values: int = 1 << 13):
        if observer not in OBSERVERS:
            raise ValueError(f"observer={observer!r} must be one of {OBSERVERS}")
        self.n_in = n_in
        self.obs = (MinMaxObserver(per_channel=True) if observer == "minmax"
                    else PercentileObserver(percentile, per_channel=True, max_values=max_values))

    def add(self, x: torch.Tensor) -> None:
        if x.shape[-1] != self.n_in:
            raise ValueError(f"input width {x.shape[-1]} does not match {self.n_in} channels")
        self.obs.observe(x)

    def absmax(self) -> torch.Tensor:
        return self.obs.absmax()  # (in,)


def layer_w8a8(linear: nn.Module, act_absmax: torch.Tensor, alpha: float | None = 0.5, static: bool = True,
               per_token: bool = False) -> W8A8Linear:
    """Layer level: a ``W8A8Linear`` for ``linear`` given its calibrated per-channel input range (in,).

    ``alpha=None`` disables migration; ``static=False`` quantizes activations dynamically (per tensor, or
    per token with ``per_token``) while still using ``act_absmax`` for the smoothing factors.
    """
    if static and per_token:
        raise ValueError("per_token applies to dynamic activation quantization; use static=False with it")
    w = get_weight(linear)  # (out, in)
    if static:
        return W8A8Linear.from_linear(linear, act_absmax, alpha, per_token=False).to(w.device)
    s = None if alpha is None else smooth_scales(act_absmax, w, alpha)  # (in,)
    return W8A8Linear(w, getattr(linear, "bias", None), s, None, per_token).to(w.device)


@dataclass
class W8A8Report:
    act_absmax: dict[str, torch.Tensor]  # calibrated per-channel input range of each layer, (in,)
    smooth: dict[str, torch.Tensor | None]  # the smoothing factors s, (in,), or None
    seconds: float


@torch.no_grad()
@atomic
def w8a8_quantize_model(model: nn.Module, calib: torch.Tensor, alpha: float | None = 0.5, observer: str = "minmax",
                        percentile: float = 99.9, static: bool = True, per_token: bool = False,
                        device: str = "auto") -> W8A8Report:
    """Replace every block linear of ``model`` by a ``W8A8Linear`` calibrated on ``calib`` (N, T), in place.

    ``alpha`` in [0, 1] is SmoothQuant's migration strength (None = no migration); ``observer`` is
    ``"minmax"`` or ``"percentile"`` (``percentile`` of |x| per channel).
    """
    if observer not in OBSERVERS:
        raise ValueError(f"observer={observer!r} must be one of {OBSERVERS}")
    if alpha is not None and not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha} is outside [0, 1] (or None for no migration)")
    fqn = {id(m): n for n, m in model.named_modules()}
    absmax: dict[str, torch.Tensor] = {}
    smooth: dict[str, torch.Tensor | None] = {}

    def make_stats(n_in: int, dev) -> ObserverStats:
        return ObserverStats(n_in, dev, observer, percentile)

    def convert(i: int, block: nn.Module, stats: dict[str, ObserverStats]) -> None:
        lins = block_linears(block)
        for local, st in stats.items():
            a = st.absmax().float()  # (in,)
            q = layer_w8a8(lins[local], a, alpha, static, per_token)
            name = fqn[id(lins[local])]
            absmax[name] = a.cpu()
            smooth[name] = None if alpha is None else (1.0 / q.inv_smooth.float()).cpu()
            replace_submodule(block, local, q)

    rep = run_sequential(model, calib, convert, stats=make_stats, device=device)
    if not absmax:
        raise ValueError("the model has no linear layer inside its decoder blocks")
    return W8A8Report(absmax, smooth, rep.seconds)


@torch.no_grad()
def calibrate_activations(model: nn.Module, calib: torch.Tensor, observer: str = "minmax", percentile: float = 99.9,
                          max_values: int = 1 << 11) -> dict[str, torch.Tensor]:
    """Per-channel input range (in,) of every block linear of the *float* model, from forward hooks over
    ``calib`` (N, T), one sequence at a time.  ``percentile`` keeps at most ``max_values`` sampled rows per layer."""
    fqn = {id(m): n for n, m in model.named_modules()}
    stats: dict[str, ObserverStats] = {}
    handles = []
    for b in decoder_blocks(model):
        for lin in block_linears(b).values():
            name = fqn[id(lin)]
            stats[name] = ObserverStats(get_weight(lin).shape[1], observer=observer, percentile=percentile,
                                        max_values=max_values)
            handles.append(lin.register_forward_hook(lambda _m, inp, _o, st=stats[name]: st.add(inp[0])))
    if not stats:
        raise ValueError("the model has no linear layer inside its decoder blocks")
    dev = next(model.parameters()).device
    try:
        for i in range(calib.shape[0]):
            model(calib[i: i + 1].to(dev), use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return {n: st.absmax().float().cpu() for n, st in stats.items()}


@atomic
def apply_w8a8(model: nn.Module, act_absmax: dict[str, torch.Tensor], alpha: float | None = 0.5, static: bool = True,
               per_token: bool = False) -> dict[str, torch.Tensor | None]:
    """Swap each layer named in ``act_absmax`` for a ``W8A8Linear`` (``layer_w8a8``), in place.
    Returns the smoothing factors s (in,) per layer (None without migration).

    This is the per-linear textbook form: each linear gets its own s and divides its input by s at run time.
    ``lessonlib.quant.smooth_fold.apply_w8a8_folded`` is the deployable form (one s per norm-fed group,
    folded into the model, no run-time division)."""
    if alpha is not None and not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha} is outside [0, 1] (or None for no migration)")
    smooth = {}
    for name, a in act_absmax.items():
        q = layer_w8a8(model.get_submodule(name), a, alpha, static, per_token)
        smooth[name] = None if alpha is None else (1.0 / q.inv_smooth.float()).cpu()
        replace_submodule(model, name, q)
    return smooth
