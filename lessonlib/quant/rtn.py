"""Round-to-nearest (RTN) weight quantization: the baseline every calibrated method is compared with.

Each weight is rounded independently to the nearest point of its group's min-max grid (the "RTN"
baseline of GPTQ, Frantar et al. 2022, Table 1, and of AWQ, Lin et al. 2023, Table 4).  The layer-level
function is ``affine.quantize`` / ``affine.fake_quant``; this module only walks a model.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar

import torch
from torch import nn

from ..experts import unrolled_model_experts
from ..layout import check_coverage, check_no_experts
from ..models import get_weight, set_weight
from .affine import QuantScheme, QuantizedWeight, fake_quant, quantize
from ..models import is_linear_like
from .qlinear import WeightOnlyConfig, default_filter, quantize_
from ..atomic import atomic
from ..technique import FilterFn, LayerResult, TechniqueConfig, register

__all__ = ["RTNConfig", "rtn_quantize", "rtn_quantize_model"]


def rtn_quantize(weight: torch.Tensor, scheme: QuantScheme) -> QuantizedWeight:
    """Layer level: codes, scales and zeros of ``weight`` (out, in) rounded to nearest."""
    return quantize(weight, scheme)


@atomic
def rtn_quantize_model(model: nn.Module, scheme: QuantScheme, pack: bool = False,
                       filter_fn: Callable[[nn.Module, str], bool] | None = None,
                       scale_dtype: torch.dtype | None = None) -> dict[str, float]:
    """Quantize every selected linear layer of ``model`` in place (default: all but ``lm_head``).

    ``pack=False`` writes the fake-quantized weight back with ``set_weight`` (the model keeps float
    layers: for accuracy studies); ``pack=True`` swaps in ``QuantLinear`` layers holding packed codes.
    Returns each layer's relative weight error ||W - W_hat||_F / ||W||_F by fully qualified name.
    """
    check_coverage(model, "pack" if pack else "rtn")  # tensors no layer holds: refused, not skipped
    if pack:
        check_no_experts(model, "pack")
    keep = filter_fn or default_filter
    errors = {}
    with unrolled_model_experts(model):  # MoE: each expert's 3-D slice as an nn.Linear view, quantized too
        targets = {n: m for n, m in model.named_modules() if is_linear_like(m) and keep(m, n)}
        if not targets:
            raise ValueError("rtn_quantize_model selected no linear layer; check filter_fn")
        for n, m in targets.items():
            w = get_weight(m)  # (out, in)
            wq = fake_quant(w, scheme)
            errors[n] = float((w.float() - wq.float()).norm() / w.float().norm().clamp_min(1e-30))
            if not pack:
                set_weight(m, wq)
    if pack:
        quantize_(model, WeightOnlyConfig(scheme, scale_dtype), filter_fn=lambda m, n: n in targets)
    return errors


@dataclass(frozen=True)
class RTNConfig(TechniqueConfig):
    """Round-to-nearest on ``scheme``'s min-max grid, for ``compress_`` (no calibration data)."""

    method: ClassVar[str] = "rtn"
    scheme: QuantScheme = QuantScheme(4, 64)

    def __post_init__(self) -> None:
        if not isinstance(self.scheme, QuantScheme):
            raise TypeError(f"RTNConfig(scheme={self.scheme!r}) must be a QuantScheme")


@register(RTNConfig)
def _apply_rtn(model: nn.Module, cfg: RTNConfig, calib: torch.Tensor | None, filter_fn: FilterFn | None,
               device: str) -> dict[str, LayerResult]:
    errors = rtn_quantize_model(model, cfg.scheme, filter_fn=filter_fn)
    mods = dict(model.named_modules())
    return {n: LayerResult(weight=get_weight(mods[n]) if n in mods else None, stats={"rel_error": e})
            for n, e in errors.items()}
