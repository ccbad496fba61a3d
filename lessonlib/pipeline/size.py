"""Honest size accounting for a model in the middle of a compression pipeline.

The pipeline keeps float weights whose *values* are those of the compressed format (fake quantization,
exact zeros) and tags each weight-holding module with its storage format.  This module turns that into
bytes a file would really need:

- float weights: ``numel * float_bytes`` (2 = fp16 storage, 4 = fp32 as loaded);
- quantized weights (``QuantScheme``): exactly the buffers a packed ``QuantLinear`` holds -- codes packed
  at ``bits`` per weight, scales (and zeros when asymmetric) per group in the float dtype, the bias
  (computed on the ``meta`` device, so nothing is allocated); AWQ adds its per-input-channel scale vector;
- k-means clustered weights: packed ``ceil(log2 k)``-bit indices plus a float32 codebook
  (``share.ClusteredWeight.storage_bytes``);
- sparse weights (after unstructured pruning): the cheaper of a bitmask (one bit per position) and CSR
  (2-byte column index per nonzero when rows are shorter than 65536, 4-byte row pointers) plus the
  nonzero values at their bit width; a float layer may also stay dense if that is smaller;
- entropy-coded weights: the length of the coded stream plus the side information (scales, zeros, bias);
- everything else (norms, biases of float layers, embeddings unless quantized): ``numel * float_bytes``.

Each tensor storage is counted once (tied embeddings / shared blocks).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ..quant import QuantScheme
from ..quant.qlinear import quant_layer_bytes
from ..storage import sparse_bytes
from ..share import index_bits

__all__ = ["WeightFormat", "FORMAT_ATTR", "SPARSE_ATTR", "quant_layer_bytes", "sparse_bytes", "SizeReport",
           "storage_report", "weight_of"]

FORMAT_ATTR = "_pipeline_format"  # a WeightFormat on a module whose weight has a number format
SPARSE_ATTR = "_pipeline_sparse"  # True on a module whose weight was pruned unstructured (exact zeros)


@dataclass
class WeightFormat:
    kind: str  # "quant" or "cluster"
    scheme: QuantScheme | None = None  # for "quant"
    k: int = 0  # codebook size for "cluster"
    awq_scale: torch.Tensor | None = None  # (in,) AWQ per-channel scale s (W_eff = Q(W s) / s)
    coded_bytes: int | None = None  # set by the entropy-code stage: bytes of the coded index/code stream
    qparams: tuple | None = None  # (scales, zeros, g_idx) of the grid the method chose, (rows, G) each


def weight_of(module: nn.Module) -> torch.Tensor | None:
    w = getattr(module, "weight", None)
    return w if isinstance(w, torch.Tensor) and w.dim() == 2 else None


@dataclass
class SizeReport:
    total: int  # bytes
    by_format: dict[str, int] = field(default_factory=dict)  # "float", "quant", "quant+bitmask", ...
    weights: int = 0  # number of parameters (weights) covered

    def as_dict(self) -> dict:
        return {"total": self.total, "by_format": dict(self.by_format), "weights": self.weights}


def _module_weight_bytes(m: nn.Module, w: torch.Tensor, float_bytes: int) -> tuple[int, str]:
    fmt: WeightFormat | None = getattr(m, FORMAT_ATTR, None)
    sparse = bool(getattr(m, SPARSE_ATTR, False))
    rows, cols = w.shape
    bias = getattr(m, "bias", None)
    has_bias = isinstance(bias, torch.Tensor)
    nnz = int(torch.count_nonzero(w)) if sparse else rows * cols
    if fmt is None:
        dense = rows * cols * float_bytes
        own_bias = bias.numel() * float_bytes if has_bias else 0
        if sparse:
            sb, kind = sparse_bytes(rows, cols, nnz, 8 * float_bytes)
            if sb < dense:
                return sb + own_bias, f"float+{kind}"
        return dense + own_bias, "float"
    if fmt.kind == "cluster":
        side = 4 * fmt.k + (bias.numel() * float_bytes if has_bias else 0)
        body = fmt.coded_bytes if fmt.coded_bytes is not None else math.ceil(rows * cols * index_bits(fmt.k) / 8)
        return body + side, "cluster" + ("+coded" if fmt.coded_bytes is not None else "")
    qb = quant_layer_bytes(rows, cols, fmt.scheme, has_bias, float_bytes)
    side = qb["side"] + (fmt.awq_scale.numel() * float_bytes if fmt.awq_scale is not None else 0)
    if fmt.coded_bytes is not None:
        return fmt.coded_bytes + side, "quant+coded"
    if sparse:
        sb, kind = sparse_bytes(rows, cols, nnz, fmt.scheme.bits)
        return sb + side, f"quant+{kind}"
    return qb["codes"] + side, "quant"


def storage_report(model: nn.Module, float_bytes: int = 2) -> SizeReport:
    """Real storage bytes of ``model`` as the pipeline holds it (see the module docstring).

    ``float_bytes``: 2 for an fp16 file, 4 for fp32.  Every tensor storage is counted once.
    """
    if float_bytes not in (2, 4):
        raise ValueError(f"float_bytes={float_bytes} must be 2 (fp16) or 4 (fp32)")
    seen: set[tuple] = set()
    by: dict[str, int] = {}
    n_weights = 0

    def key(t: torch.Tensor) -> tuple:
        return (t.untyped_storage().data_ptr(), t.storage_offset(), t.numel(), t.dtype)

    for m in model.modules():
        w = weight_of(m)
        done: set[int] = set()
        if w is not None and (getattr(m, FORMAT_ATTR, None) is not None or getattr(m, SPARSE_ATTR, False)):
            k = key(w)
            if k not in seen:
                seen.add(k)
                b, kind = _module_weight_bytes(m, w.detach(), float_bytes)
                by[kind] = by.get(kind, 0) + b
                n_weights += w.numel()
            done.add(id(w))
            bias = getattr(m, "bias", None)
            if isinstance(bias, torch.Tensor):
                seen.add(key(bias))
                done.add(id(bias))
        for t in list(m.parameters(recurse=False)) + list(m.buffers(recurse=False)):
            if t is None or id(t) in done or t.numel() == 0:
                continue
            k = key(t)
            if k in seen:
                continue
            seen.add(k)
            by["float"] = by.get("float", 0) + (t.numel() * float_bytes if t.is_floating_point()
                                                else t.numel() * t.element_size())
            n_weights += t.numel() if t.is_floating_point() else 0
    return SizeReport(sum(by.values()), by, n_weights)
